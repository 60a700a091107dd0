"""Every MoLE route as ONE standard LoRA on the untouched base weight (DESIGN §9).

For a code token of language L a wrapped linear computes ``W_res x + s_s B_s A_s x + s_e B_L A_L x`` with
``W_res = W - res_B res_A``, so on the ORIGINAL weight W the route is the LoRA

    A = [res_A; s_s A_s; s_e A_L]     B = [-res_B, B_s, B_L]     (rank r_res + r_s + r_e)

and the NL route ``A = [res_A; s_nl A_nl]``, ``B = [-res_B, B_nl]`` (rank r_res + r_nl); code of a language
without an expert adds the generic expert (the residual's expert rows, see ``mole_lsp.core.layer``) in place
of ``expert_L``. Scales are folded
into A, so the LoRA is applied with scaling 1. Every module of one route gets the same rank (a module
whose residual rank is smaller is padded with zero rows, which add nothing): PEFT and llama.cpp then need
a single ``r`` and ``alpha = r``.

Routes are read from verified packs; no base model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from mole_lsp.core.config import MoleConfig
from mole_lsp.packs.format import ADAPTERS, PackError, core_sha256, verify_pack

NL_ROUTE = "nl"  # the natural-language route's name (an export folder)
SHARED_ROUTE = "code"  # code of a language without an expert: residual + shared adapter + generic expert
NL_EXPERT = "nl"  # the NL expert's pack name when nl_mode == "expert"

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module -> (A [r, in], B [out, r])


@dataclass
class RouteSet:
    """Route name -> one LoRA per wrapped module, plus what the packs say about their base and layout."""

    base: dict[str, Any]  # the core manifest's base (repo_id, revision, weights_sha256, model_type, ...)
    layout: dict[str, Any]
    routes: dict[str, Factors] = field(default_factory=dict)
    describe: dict[str, str] = field(default_factory=dict)  # route -> which computation it reproduces

    def rank(self, route: str) -> int:
        return next(iter(self.routes[route].values()))[0].shape[0]


def _tensors(pack_dir: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(pack_dir / ADAPTERS))
    except (SafetensorError, OSError) as e:
        raise PackError(f"{pack_dir}: unreadable adapters file ({e})") from e


def _concat(parts: list[tuple[torch.Tensor, torch.Tensor]], rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.cat([p[0] for p in parts])
    b = torch.cat([p[1] for p in parts], dim=1)
    pad = rank - a.shape[0]
    if pad:
        a = torch.cat([a, a.new_zeros(pad, a.shape[1])])
        b = torch.cat([b, b.new_zeros(b.shape[0], pad)], dim=1)
    return a.contiguous(), b.contiguous()


def _route(modules: list[str], parts_of) -> Factors | None:
    """One LoRA per module from ``parts_of(module)`` (a list of (A, B) with scales folded), padded to a
    common rank; None when the route has no adapter at all (the base alone reproduces it)."""
    parts = {m: [p for p in parts_of(m) if p[0].shape[0]] for m in modules}
    rank = max((sum(p[0].shape[0] for p in ps) for ps in parts.values()), default=0)
    return {m: _concat(ps, rank) for m, ps in parts.items()} if rank else None


def route_factors(core_dir: Path, experts: Mapping[str, Path]) -> RouteSet:
    """The routes of a core pack and expert packs (language -> folder): one per language, NL, and the
    code route of languages without an expert. Packs are verified (hashes, kinds, core match) first."""
    core = verify_pack(core_dir, kind="core")
    layout = core["layout"]
    out = RouteSet(base=dict(core["base"]), layout=dict(layout))
    ct = {k: v.float() for k, v in _tensors(core_dir).items()}
    modules = list(core["modules"])
    s_s, s_e, s_nl = layout["scale_shared"], layout["scale_expert"], layout["scale_nl"]

    def residual(m: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(ct[f"{m}.res_A"], -ct[f"{m}.res_B"])]

    def pair(
        t: Mapping[str, torch.Tensor], key: str, scale: float
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(t[f"{key}.A"] * scale, t[f"{key}.B"])] if f"{key}.A" in t and scale else []

    def shared(m: str):
        return pair(ct, f"{m}.shared", s_s)

    config = MoleConfig.from_dict({**core["mole_config"], "languages": ()})

    def generic(m: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sl = config.expert_components(ct[f"{m}.res_A"].shape[0])
        return [] if sl is None else [(ct[f"{m}.res_A"][sl], ct[f"{m}.res_B"][:, sl])]

    expert_tensors: dict[str, dict[str, torch.Tensor]] = {}
    for lang, d in experts.items():
        m = verify_pack(d, kind="expert", language=lang, layout=layout, core_sha256=core_sha256(core))
        if sorted(m["modules"]) != sorted(modules):
            raise PackError(f"{d}: made for other modules than the core pack")
        expert_tensors[lang] = {k: v.float() for k, v in _tensors(d).items()}

    def add(name: str, parts_of, describe: str) -> None:
        factors = _route(modules, parts_of)
        if factors is not None:
            out.routes[name], out.describe[name] = factors, describe

    for lang, et in expert_tensors.items():
        if lang == NL_EXPERT and layout["nl_mode"] == "expert":
            continue
        add(
            lang,
            lambda m, et=et: residual(m) + shared(m) + pair(et, f"{m}.expert", s_e),
            f"code tokens of {lang}: W_res + shared adapter + the {lang} expert",
        )
    if layout["nl_mode"] == "adapter":
        add(
            NL_ROUTE,
            lambda m: residual(m) + pair(ct, f"{m}.nl", s_nl),
            "natural-language tokens (prose, chat, explanations): W_res + the NL adapter",
        )
    elif NL_EXPERT in expert_tensors:
        et = expert_tensors[NL_EXPERT]
        add(
            NL_ROUTE,
            lambda m: residual(m) + shared(m) + pair(et, f"{m}.expert", s_e),
            "natural-language tokens: W_res + shared adapter + the NL expert (nl_mode=expert)",
        )
    add(
        SHARED_ROUTE,
        lambda m: residual(m) + shared(m) + generic(m),
        "code of a language with no expert of its own: W_res + the shared adapter + the generic expert "
        "(the expert components of the core's residual, what every expert started from)",
    )
    return out
