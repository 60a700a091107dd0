"""``mole-lsp export``: every route of a pack set written as standard LoRA adapters, one folder per route,
with a README saying what each reproduces and how to serve it (vLLM, llama-server, Ollama)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from mole_lsp.export.gguf_lora import write_gguf_lora
from mole_lsp.export.peft_lora import write_peft_lora
from mole_lsp.export.routes import NL_ROUTE, SHARED_ROUTE, RouteSet, route_factors

Format = Literal["peft", "gguf"]
FORMATS: tuple[str, ...] = ("peft", "gguf")
README = "README.md"
GGUF_ARCH = {"mistral": "llama"}  # HF model_type -> llama.cpp architecture, where the names differ


def gguf_file_name(route: str) -> str:
    return f"mole-{route}-lora.gguf"


def export_packs_as_lora(
    core_dir: Path, experts: Mapping[str, Path], out: Path, fmt: Format, *, half: bool = False
) -> RouteSet:
    """Write every route of the core + expert packs under ``out/<route>/`` in ``fmt``, and ``out/README.md``.

    ``half``: float16 factors (half the size; exact up to fp16 rounding of A and B) instead of float32."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (expected one of {', '.join(FORMATS)})")
    routes = route_factors(core_dir, experts)
    base = routes.base
    out.mkdir(parents=True, exist_ok=True)
    for name, factors in routes.routes.items():
        folder = out / name
        if fmt == "peft":
            write_peft_lora(
                folder, factors, base_model=base.get("repo_id") or "", revision=base.get("revision"),
                target_modules=routes.layout["target_modules"], dtype=torch.float16 if half else torch.float32,
            )  # fmt: skip
        else:
            folder.mkdir(parents=True, exist_ok=True)
            model_type = base.get("model_type") or "llama"
            r = routes.rank(name)
            write_gguf_lora(
                folder / gguf_file_name(name), factors, alpha=float(r), arch=GGUF_ARCH.get(model_type, model_type),
                name=f"mole-lsp {name} route", dtype="f16" if half else "f32",
            )  # fmt: skip
    (out / "routes.json").write_text(
        json.dumps({"format": fmt, "base": base, "routes": {k: {"rank": routes.rank(k), "reproduces": v}
                    for k, v in routes.describe.items()}}, indent=2) + "\n", encoding="utf-8")  # fmt: skip
    (out / README).write_text(readme(routes, fmt), encoding="utf-8")
    return routes


def readme(routes: RouteSet, fmt: Format) -> str:
    base = routes.base
    base_name = base.get("repo_id") or "?"
    rev = f" (revision {base['revision']})" if base.get("revision") else ""
    rmax = max(routes.rank(k) for k in routes.routes)
    langs = [k for k in routes.routes if k not in (NL_ROUTE, SHARED_ROUTE)]
    rows = "\n".join(f"| `{k}/` | {routes.rank(k)} | {v} |" for k, v in routes.describe.items())
    lines = [
        f"# mole-lsp routes as standard LoRA adapters ({fmt})",
        "",
        f"Base model: `{base_name}`{rev}, the UNTOUCHED original weights (not a mole-lsp residual). Each "
        "adapter below is the exact computation mole-lsp runs for one kind of token (mole-lsp's "
        "layer computes `W_res x + shared x + expert x` with `W_res = W - res_B res_A`, which is `W` plus one "
        "LoRA `[-res; shared; expert]`; scales are folded in, so each adapter applies with scaling 1).",
        "",
        "| adapter | rank | reproduces |",
        "|---|---|---|",
        rows,
        "",
        "One adapter applies to a whole request, so use the adapter of the request's language: code "
        "completion in Rust -> `rust`, explanations and chat -> `nl`. (mole-lsp itself switches adapter "
        "token by token inside a mixed prompt; a served adapter uses one for all positions.)",
        "",
    ]
    example = (langs or [NL_ROUTE])[0]
    if fmt == "peft":
        mods = " ".join(f"{k}=./{k}" for k in routes.routes)
        lines += [
            "## Serve with vLLM",
            "",
            "```sh",
            f"vllm serve {base_name} --enable-lora --max-lora-rank {_vllm_rank(rmax)} "
            f"--max-loras {len(routes.routes)} --lora-modules {mods}",
            "```",
            "",
            f'Then ask for an adapter by name: `"model": "{example}"` in an OpenAI-style '
            f'`/v1/completions` request. With `peft`: `PeftModel.from_pretrained(base, "./{example}")`.',
            "",
        ]
    else:
        loras = " ".join(f"--lora ./{k}/{gguf_file_name(k)}" for k in routes.routes)
        lines += [
            "## Serve with llama.cpp",
            "",
            "Convert the same base checkpoint to GGUF (llama.cpp's `convert_hf_to_gguf.py`; F16/F32 keeps the "
            "routes closest, a quantized base adds its own rounding), then:",
            "",
            "```sh",
            f"llama-server -m base.gguf {loras} --lora-init-without-apply",
            "```",
            "",
            "Adapters get ids in the order given ("
            + ", ".join(f"{i} = {k}" for i, k in enumerate(routes.routes))
            + '); each request picks one with `"lora": [{"id": 0, "scale": 1.0}]` (unlisted adapters get '
            "scale 0; llama-server does not batch requests whose adapters differ). Ollama: a Modelfile with "
            "`FROM base.gguf` and `ADAPTER ./<route>/mole-<route>-lora.gguf`.",
            "",
        ]
    return "\n".join(lines)


def _vllm_rank(r: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds rank ``r``."""
    return next((x for x in (8, 16, 32, 64, 128, 256, 320, 512) if x >= r), r)
