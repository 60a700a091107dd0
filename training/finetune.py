"""The MoLE joint finetune (and its baselines): the command line and the driver that ends in packs.

    python -m training.finetune --config FILE.toml [--preset paper|quick] [--field value ...]
    torchrun --nproc-per-node 4 -m training.finetune --preset paper --grad-accum 1 --out runs/paper
    python -m training.finetune --preset quick --add-language go --core runs/quick/packs --out runs/go

A run: :mod:`training.config` (settings) -> :mod:`training.dist` (processes, device) -> the base model ->
:mod:`training.data` (rows to encoded train/val sets) -> :mod:`training.methods` (trainable parts) ->
:mod:`training.loop` (training, validation, metrics, :mod:`training.checkpoint`) ->
:mod:`training.publish` (packs or a full model, optional Hub upload).

- mole / alllang / full: one run into ``OUT``; perlang: one run per language into ``OUT/perlang/<lang>``,
  each from the untouched base with its share of ``max_steps``; ``--add-language L --core PACKS``: only a
  new expert for L against a frozen core, exported as ``OUT/packs/experts/L`` next to a copy of that core and
  its other experts, so ``OUT/packs`` is a complete pack set (``mole-lsp install-pack --from OUT/packs``).
- ``--resume`` continues from the newest checkpoint in ``OUT/checkpoints`` with the same losses as an
  uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from mole_lsp.lang.registry import Registry, load_registry
from mole_lsp.packs.format import (
    CORE_DIR,
    EXPERTS_DIR,
    INDEX,
    BaseIdentity,
    core_sha256,
    export_expert,
)
from training import methods
from training.config import TrainConfig, load_config
from training.data import DataBundle, build_data
from training.dist import Dist, seed_everything, setup_dist
from training.encode import EncodedSet
from training.loop import Log, RunResult, train_loop
from training.publish import PACKS_DIR, add_to_pack_set, export_run, provenance, push_to_hub

PERLANG_DIR = "perlang"


def load_base(cfg: TrainConfig, log: Log = print):
    """(model, tokenizer, BaseIdentity) through mole_lsp.engine.base_model; 'quickstart' = its default base."""
    from mole_lsp.engine.base_model import load_base_model, resolve_base_model

    spec = None if cfg.base in ("", "quickstart") else cfg.base
    info = resolve_base_model(spec, cache_dir=cfg.base_cache_dir, offline=cfg.offline or None, progress=log)
    model, tok = load_base_model(info, dtype=getattr(torch, cfg.base_dtype), device="cpu")
    if cfg.attn_implementation and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(cfg.attn_implementation)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, info.identity()


def present_languages(cfg: TrainConfig, train: EncodedSet) -> list[str]:
    """The configured languages that have training samples, in configuration order."""
    have = {e.language for e in train.examples}
    return [lang for lang in cfg.languages if lang in have]


def run(cfg: TrainConfig, log: Log | None = None) -> dict[str, Any]:
    """Everything the CLI does. Returns results, packs and trained models by run name (the method, a
    perlang language or the added language), the language table, the base identity and the data."""
    dist = setup_dist(cfg)

    def say(msg: str) -> None:
        if dist.main:
            (log or (lambda m: print(m, file=sys.stderr, flush=True)))(msg)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.add_language:
        cfg = dataclasses.replace(cfg, languages=[cfg.add_language])
    seed_everything(cfg.seed)
    registry = load_registry()
    model, tok, ident = load_base(cfg, say)
    data = build_data(cfg, tok, registry, log=say)
    out = Path(cfg.out)
    results: dict[str, RunResult] = {}
    packs: dict[str, Path] = {}
    models: dict[str, methods.Prepared] = {}
    langs = present_languages(cfg, data.train)

    if cfg.add_language:
        lang = cfg.add_language
        results[lang], packs[lang], models[lang] = _add_language(cfg, model, tok, ident, data, out, dist, say,
                                                                 registry)
    elif cfg.method == "perlang":
        n_total = len(data.train)
        for i, lang in enumerate(langs):
            seed_everything(cfg.seed)
            m = model if i == 0 else load_base(cfg, say)[0]
            sub = data.train.subset([lang])
            steps = max(1, round(cfg.max_steps * len(sub) / n_total)) if cfg.max_steps else None
            prep = methods.prepare(cfg, m, [], registry)
            lang_out = out / PERLANG_DIR / lang
            res = train_loop(cfg, prep, tok, sub, data.val.subset([lang]), [lang], lang_out, dist, say, steps)
            results[lang] = res
            if cfg.export and dist.main and not res.interrupted:
                packs[lang] = export_run(prep, tok, ident, lang_out, [], provenance(cfg, res, len(sub), {"language": lang}))
            del prep, m
    else:
        prep = methods.prepare(cfg, model, langs, registry)
        res = train_loop(cfg, prep, tok, data.train, data.val, langs, out, dist, say)
        results[cfg.method] = res
        models[cfg.method] = prep
        if cfg.export and dist.main and not res.interrupted:
            packs[cfg.method] = export_run(prep, tok, ident, out, langs, provenance(cfg, res, len(data.train)))
    dist.barrier()
    if cfg.push_to_hub and dist.main:
        for name, folder in packs.items():
            if (folder / INDEX).exists():
                push_to_hub(folder, cfg.push_to_hub if len(packs) == 1 else f"{cfg.push_to_hub}-{name}",
                            cfg.hub_revision, say, keep_core=bool(cfg.add_language))
    for name, path in packs.items():
        say(f"exported {name}: {path}")
    return {"results": results, "packs": packs, "models": models, "table": data.table, "identity": ident,
            "tokenizer": tok, "data": data}


def _add_language(cfg: TrainConfig, model: Any, tok: Any, ident: BaseIdentity, data: DataBundle, out: Path,
                  dist: Dist, say: Log, registry: Registry) -> tuple[RunResult, Path, methods.Prepared]:
    lang = cfg.add_language
    assert lang is not None and cfg.core is not None
    core = Path(cfg.core)
    if (core / CORE_DIR).is_dir():
        core = core / CORE_DIR
    prep = methods.prepare_add_language(model, core, lang, base=ident, registry=registry)
    res = train_loop(cfg, prep, tok, data.train, data.val, [lang], out, dist, say)
    dest = out / PACKS_DIR
    if dist.main and cfg.export and not res.interrupted:
        m = prep.mole.core_manifest
        export_expert(prep.mole, lang, dest / EXPERTS_DIR / lang, BaseIdentity.from_dict(m["base"]),  # type: ignore[arg-type]
                      core_sha256(m), provenance(cfg, res, len(data.train), {"added_to_core": core_sha256(m)}))
        add_to_pack_set(dest, lang, core, say)
    return res, dest, prep


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(argv)
    try:
        run(cfg)
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
