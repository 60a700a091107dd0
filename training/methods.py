"""The finetuning methods, all on the same modules (the FFN gate/up/down linears of every layer).

- ``mole``: MoLE (shared + one expert per language + NL adapter), rank split ``r_shared + r_expert``
  (64+0, 56+8, 48+16, 32+32), init pissa | standard | shared-last; ``nl_expert`` is the ablation where NL
  tokens are one more expert (shared + "nl" expert) instead of having their own adapter.
- ``alllang``: one LoRA of rank ``r_lora`` (64) trained on every language. Expressed with the MoLE layer
  as ``MoleConfig(r_shared=64, r_expert=0, nl_mode="expert", languages=())``: no experts, no NL adapter,
  every token (NL or code) goes through the shared adapter. Its core pack therefore loads in the server
  like any other core (NL tokens route to the empty "nl" slot = shared only; code = shared only).
- ``perlang``: one such r64 LoRA per language, each trained on that language's samples only (the
  finetune driver runs them one after another, each from the untouched base).
- ``full``: every weight of the base is trained (no adapters).
- add-a-language: a trained core is loaded frozen; one new expert (PiSSA-initialised from the core's
  residual factors, bit-identical to a joint expert's init, no new SVD) is the only trainable tensor set.

The same init choice applies to the LoRA baselines (PiSSA takes their top-64 components), so methods
differ only in how the rank is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mole_lsp.core.config import MoleConfig
from mole_lsp.core.model import MoleModel, attach_mole
from mole_lsp.core.routing import ROUTE_UNKNOWN
from mole_lsp.lang.registry import Registry
from mole_lsp.packs.format import load_core

INIT_NAMES = {"pissa": "pissa", "standard": "lora", "shared-last": "pissa-shared-last"}


@dataclass
class Prepared:
    """A model ready for training: what to run, what to optimise, how labels become routes."""

    model: nn.Module  # the Hugging Face causal LM (adapters inside when there are any)
    mole: MoleModel | None
    params: list[nn.Parameter]
    single_route: bool  # every non-pad token takes the shared adapter (alllang / perlang)

    def route_table(self, label_vocab: Sequence[str]) -> torch.Tensor:
        """Route id per label index of a dataset's label vocabulary."""
        if self.mole is None:
            return torch.zeros(len(label_vocab), dtype=torch.long)  # full finetune: routes are ignored
        if self.single_route:
            return torch.full((len(label_vocab),), ROUTE_UNKNOWN, dtype=torch.long)
        return torch.tensor([self.mole.route_for(lb) for lb in label_vocab], dtype=torch.long)

    def named_trainable(self) -> dict[str, nn.Parameter]:
        ids = {id(p) for p in self.params}
        return {n: p for n, p in self.model.named_parameters() if id(p) in ids}

    def set_routes(self, route_ids: torch.Tensor) -> None:
        if self.mole is not None:
            self.mole.state.set(route_ids, len(self.mole.slots))


def mole_config(cfg, languages: Sequence[str]) -> MoleConfig:
    """MoleConfig of a TrainConfig for ``mole`` (languages = experts) or the single-LoRA baselines."""
    common = dict(alpha_shared=cfg.alpha_shared, alpha_expert=cfg.alpha_expert, alpha_nl=cfg.alpha_nl,
                  scaling=cfg.scaling, dropout=cfg.dropout, init=INIT_NAMES[cfg.init], svd=cfg.svd)
    if cfg.method == "mole":
        return MoleConfig(r_shared=cfg.r_shared, r_expert=cfg.r_expert, languages=tuple(languages),
                          nl_mode="expert" if cfg.nl_expert else "adapter", **common)
    if cfg.method in ("alllang", "perlang"):
        return MoleConfig(r_shared=cfg.r_lora, r_expert=0, languages=(), nl_mode="expert", **common)
    raise ValueError(f"method {cfg.method!r} has no adapters")


def prepare(cfg, model: nn.Module, languages: Sequence[str], registry: Registry | None = None) -> Prepared:
    """Attach and initialise the method's trainable parts on ``model`` (an untouched base)."""
    if cfg.method == "full":
        model.requires_grad_(True)
        return Prepared(model, None, [p for p in model.parameters()], single_route=False)
    mole = attach_mole(model, mole_config(cfg, languages), registry=registry, seed=cfg.seed)
    params = mole.trainable_parameters()
    return Prepared(model, mole, params, single_route=cfg.method in ("alllang", "perlang"))


def prepare_add_language(model: nn.Module, core_dir, language: str, base=None,
                         registry: Registry | None = None) -> Prepared:
    """Frozen core from ``core_dir`` + one new trainable expert for ``language``, starting from the expert
    components in the core's residual factors (so every route still equals the base before training)."""
    mole = load_core(model, core_dir, base=base, registry=registry)
    if mole.config.r_expert == 0:
        raise ValueError(f"the core in {core_dir} has r_expert = 0: there is no expert to add")
    if mole.config.nl_mode == "expert":
        raise ValueError("adding a language to a core of the nl-expert ablation is not supported")
    init = "lora" if mole.config.init == "lora" else "pissa"
    gen = torch.Generator().manual_seed(0)
    mole.add_language(language, init=init, generator=gen)
    for p in mole.parameters():
        p.requires_grad_(False)
    params = mole.trainable_parameters([language])
    for p in params:
        p.requires_grad_(True)
    return Prepared(model, mole, params, single_route=False)
