"""Attaching MoLE layers to a Hugging Face causal LM, and routing tokens through them.

>>> mole = attach_mole(model, MoleConfig(languages=("python", "rust")))
>>> routes = mole.route_ids(["nl", "nl", "python", "python"])      # labels from mole_lsp.lang.fence
>>> out = mole(input_ids=ids, route_ids=routes[None])               # same shape as input_ids

``MoleModel.forward`` forwards every other keyword (attention_mask, past_key_values, labels, ...) to the
wrapped model, so the KV cache works as usual; routes are given for the NEW tokens of each call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.init import init_expert_from_residual, init_lora, init_lora_pair, init_pissa
from mole_lsp.core.layer import MoleLinear
from mole_lsp.core.routing import ROUTE_NL, ROUTE_PAD, ROUTE_UNKNOWN, RoutingState
from mole_lsp.lang.fence import NL, UNKNOWN
from mole_lsp.lang.registry import Registry, load_registry

PAD = "pad"  # label for padding positions
NL_EXPERT = "nl"  # expert name used for NL tokens when config.nl_mode == "expert"


class MoleModel(nn.Module):
    """A causal LM whose target linears are :class:`MoleLinear` layers sharing one routing state and slot list."""

    def __init__(self, model: nn.Module, config: MoleConfig, registry: Registry | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.registry = registry or load_registry()
        self.state = RoutingState()
        self.slots: list[str] = []  # expert slot -> language id (shared with every layer)
        self.layers: dict[str, MoleLinear] = {}
        self.base_identity: dict | None = None  # set by whoever loaded the base (packs record it)
        self.core_manifest: dict | None = None  # manifest of the core pack loaded into it, if any
        self._replace_linears()
        if not self.layers:
            raise ValueError(
                f"no linear layer named {list(config.target_modules)} found in {type(model).__name__}; "
                "set MoleConfig.target_modules to the FFN projections of this architecture"
            )
        self.model.requires_grad_(False)
        for layer in self.layers.values():
            for name, p in layer.named_parameters():
                p.requires_grad_(not name.startswith("base."))

    def _replace_linears(self) -> None:
        targets = set(self.config.target_modules)
        for name, module in list(self.model.named_modules()):
            for child_name, child in list(module.named_children()):
                if child_name in targets and isinstance(child, nn.Linear):
                    full = f"{name}.{child_name}" if name else child_name
                    wrapped = MoleLinear(child, self.config, self.state, self.slots)
                    setattr(module, child_name, wrapped)
                    self.layers[full] = wrapped

    # -- languages ---------------------------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        """The languages with an expert slot (the NL expert excluded)."""
        return [s for s in self.slots if s != NL_EXPERT]

    def add_language(self, lang: str, init: str | None = None, generator: torch.Generator | None = None) -> None:
        """Give ``lang`` an expert slot. init: "pissa" (the expert components of the core's residual factors,
        exactly what the joint init gave every expert), "lora" (random A, zero B) or None (zeros, to be
        filled from a pack)."""
        if lang != NL_EXPERT and lang not in self.registry:
            raise KeyError(f"unknown language {lang!r}; known: {', '.join(self.registry.ids)}")
        if lang in self.slots:
            return
        self.slots.append(lang)
        for layer in self.layers.values():
            pair = layer.add_expert(lang)
            if pair is None or init is None:
                continue
            if init == "lora":
                init_lora_pair(pair, generator)
            else:
                init_expert_from_residual(layer, pair)

    def remove_language(self, lang: str) -> None:
        """Drop ``lang``'s expert from every layer; the remaining slots keep their order."""
        if lang not in self.slots:
            return
        # Slots are positional: rebuild the list in place so every layer sees the new order.
        remaining = [s for s in self.slots if s != lang]
        self.slots[:] = remaining
        for layer in self.layers.values():
            layer.remove_expert(lang)

    # -- routing -----------------------------------------------------------------------------------------
    def route_for(self, label: str) -> int:
        """Route id of a fence-parser label: NL, unknown, pad or a language (with registry fallbacks)."""
        if label == NL:
            return self.slots.index(NL_EXPERT) if self.config.nl_mode == "expert" and NL_EXPERT in self.slots else ROUTE_NL
        if label == PAD:
            return ROUTE_PAD
        if label == UNKNOWN or label not in self.registry:
            return ROUTE_UNKNOWN
        for lang in self.registry.fallback_chain(label):
            if lang in self.slots:
                return self.slots.index(lang)
        return ROUTE_UNKNOWN

    def expert_for(self, label: str) -> str | None:
        """Which expert a label would use (None = NL, or unknown code: shared + the generic expert)."""
        r = self.route_for(label)
        return self.slots[r] if r >= 0 else None

    def route_ids(self, labels: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Route id per fence-parser label (see :meth:`route_for`), as a long tensor on ``device``."""
        cache: dict[str, int] = {}
        ids = []
        for lb in labels:
            if lb not in cache:
                cache[lb] = self.route_for(lb)
            ids.append(cache[lb])
        return torch.tensor(ids, dtype=torch.long, device=device or self.device)

    @contextlib.contextmanager
    def routing(self, route_ids: torch.Tensor) -> Iterator[None]:
        """Inside the block, the wrapped layers route tokens by ``route_ids`` (for calling ``mole.model`` directly)."""
        self.state.set(route_ids, len(self.slots))
        yield

    @property
    def device(self) -> torch.device:
        return next(iter(self.layers.values())).base.weight.device

    def forward(self, *args, route_ids: torch.Tensor | None = None, **kwargs):
        if route_ids is None:
            raise ValueError("MoleModel needs route_ids (one per input token); see MoleModel.route_ids")
        self.state.set(route_ids, len(self.slots))
        return self.model(*args, **kwargs)

    # -- merged fast path ---------------------------------------------------------------------------------
    def merge(self, label: str) -> None:
        """Fold the adapters that ``label`` routes to into the weights (single-language completions).

        Tokens of any other route still work (the residual weight is kept), just without the fast path.
        """
        route = self.route_for(label)
        for layer in self.layers.values():
            layer.merge(route)

    def unmerge(self, free: bool = False) -> None:
        """Back to the grouped path; ``free=True`` also drops the merged weight buffers."""
        for layer in self.layers.values():
            layer.unmerge(free)

    # -- parameters by part -----------------------------------------------------------------------------
    def adapter_tensors(self, part: str) -> dict[str, torch.Tensor]:
        """Tensors of one part: "core" (residual factors + shared + NL) or a language id (its expert)."""
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            if part == "core":
                out[f"{name}.res_A"] = layer.res_A
                out[f"{name}.res_B"] = layer.res_B
                for kind in ("shared", "nl"):
                    pair = getattr(layer, kind)
                    if pair is not None:
                        out[f"{name}.{kind}.A"] = pair.A
                        out[f"{name}.{kind}.B"] = pair.B
            elif part in layer.experts:
                out[f"{name}.expert.A"] = layer.experts[part].A
                out[f"{name}.expert.B"] = layer.experts[part].B
        return {k: v.detach() for k, v in out.items()}

    def trainable_parameters(self, parts: Sequence[str] | None = None) -> list[nn.Parameter]:
        """Adapter parameters, optionally only some parts ("shared", "nl" or language ids)."""
        params: list[nn.Parameter] = []
        for layer in self.layers.values():
            for kind in ("shared", "nl"):
                pair = getattr(layer, kind)
                if pair is not None and (parts is None or kind in parts):
                    params += [pair.A, pair.B]
            for lang, pair in layer.experts.items():
                if parts is None or lang in parts:
                    params += [pair.A, pair.B]
        return params


def attach_mole(model: nn.Module, config: MoleConfig | None = None, registry: Registry | None = None,
                init: bool = True, seed: int = 0) -> MoleModel:
    """Wrap ``model``'s target linears with MoLE layers and (by default) initialise them.

    ``init=False`` leaves zero factors and the original weights, for :func:`mole_lsp.packs.format.load_packs`.
    """
    config = config or MoleConfig()
    mole = MoleModel(model, config, registry)
    experts = list(config.languages)
    if config.nl_mode == "expert":
        experts.append(NL_EXPERT)
    for lang in experts:
        mole.add_language(lang)
    if init:
        gen = torch.Generator().manual_seed(seed)
        for layer in mole.layers.values():
            if config.init == "lora":
                init_lora(layer, gen)
            else:
                init_pissa(layer, seed)
    return mole
