"""What a finished run leaves behind: packs (or a full model folder) with provenance, and Hub uploads.

- Adapter methods: ``OUT/packs`` (core + experts + index.json, :mod:`mole_lsp.packs.format`); alllang: a
  core pack only; perlang: ``OUT/perlang/<lang>/packs`` per language. Full finetune: ``OUT/full-model``.
- ``--add-language L --core PACKS``: ``OUT/packs`` is the pack set of that core with L added (the core and
  the experts already made for it are copied unchanged), so ``mole-lsp install-pack --from`` takes it as is.
- ``--push-to-hub REPO`` uploads a pack folder; index.json is merged with what the repository already
  lists, so a language added later joins the jointly trained ones. ``python -m training.publish FOLDER REPO``
  uploads a pack folder made earlier the same way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mole_lsp.core.model import NL_EXPERT
from mole_lsp.io import read_json_object
from mole_lsp.packs.format import (
    ADAPTERS,
    CORE_DIR,
    EXPERTS_DIR,
    FORMAT,
    FORMAT_VERSION,
    INDEX,
    BaseIdentity,
    PackError,
    core_sha256,
    export_packs,
    verify_pack,
    write_index,
)
from training.config import TrainConfig
from training.loop import Log, RunResult
from training.methods import Prepared

PACKS_DIR = "packs"
FULL_MODEL_DIR = "full-model"
PROVENANCE_FIELDS = ("method", "data", "languages", "lr", "beta1", "beta2", "weight_decay", "micro_batch",
                     "grad_accum", "epochs", "max_steps", "warmup_ratio", "schedule", "max_length", "seed", "init",
                     "precision", "min_code_fraction", "val_fraction", "split_seed")


def provenance(cfg: TrainConfig, result: RunResult, n_train: int, extra: dict[str, Any] | None = None) -> dict:
    """The training facts a pack manifest records (recipe, steps, samples, final validation loss)."""
    d = {k: getattr(cfg, k) for k in PROVENANCE_FIELDS}
    d.update(steps=result.steps, train_samples=n_train, final_val=result.final_val, trainer="training.finetune")
    d.update(extra or {})
    return d


def export_run(prep: Prepared, tok: Any, ident: BaseIdentity, dest: Path, languages: Sequence[str],
               prov: dict[str, Any]) -> Path:
    """Packs (adapter methods) or a safetensors model folder (full finetune)."""
    if prep.mole is None:
        target = dest / FULL_MODEL_DIR
        prep.model.save_pretrained(target, safe_serialization=True)
        tok.save_pretrained(target)
        return target
    langs = list(languages) if prep.mole.config.r_expert else []
    if prep.mole.config.nl_mode == "expert" and prep.mole.config.r_expert:
        langs.append(NL_EXPERT)  # the ablation's NL expert is a pack of its own
    return export_packs(prep.mole, dest / PACKS_DIR, ident, languages=langs if not prep.single_route else [],
                        provenance=prov)


def add_to_pack_set(dest: Path, language: str, core: Path, log: Log = print) -> Path:
    """Complete the pack repository ``dest`` (holding the new ``language`` expert) with the ``core`` pack
    folder the expert was trained against and the other experts of that core's repository, each verified
    against it, so that ``dest`` is a pack set of its own (install-pack --from, push_to_hub)."""
    sha = core_sha256(verify_pack(core, kind="core"))
    if dest.resolve() == core.parent.resolve():  # the new expert went into the core's own repository
        write_index(dest)
        return dest
    if (dest / CORE_DIR).exists():
        shutil.rmtree(dest / CORE_DIR)
    shutil.copytree(core, dest / CORE_DIR)
    siblings = core.parent / EXPERTS_DIR
    for d in sorted(p for p in siblings.iterdir() if p.is_dir()) if siblings.is_dir() else []:
        target = dest / EXPERTS_DIR / d.name
        if d.name == language:
            continue  # the newly trained expert replaces the old one
        if target.exists():
            shutil.rmtree(target)  # left by an earlier run into the same folder
        try:
            verify_pack(d, kind="expert", core_sha256=sha)
        except PackError as e:
            log(f"not copied into {dest}: {e}")
            continue
        shutil.copytree(d, target)
    write_index(dest)
    return dest


def merge_index(remote: dict[str, Any] | None, local: dict[str, Any]) -> dict[str, Any]:
    """What the repository lists after uploading ``local`` on top of ``remote``."""
    merged = dict(remote or {"format": FORMAT, "format_version": FORMAT_VERSION, "core": None, "experts": {}})
    merged["experts"] = dict(merged.get("experts") or {})
    if local.get("core"):
        old = merged.get("core")
        merged["core"] = local["core"]
        if old and old["files"][ADAPTERS]["sha256"] != local["core"]["files"][ADAPTERS]["sha256"]:
            # Experts of the replaced core cannot load with the new one: stop listing them.
            new_sha = local["core"]["files"][ADAPTERS]["sha256"]
            merged["experts"] = {k: v for k, v in merged["experts"].items() if v.get("core_sha256") == new_sha}
    merged["experts"].update(local.get("experts") or {})
    core = merged.get("core")
    for lang, entry in (local.get("experts") or {}).items():
        if core is None or entry.get("core_sha256") != core["files"][ADAPTERS]["sha256"]:
            raise PackError(f"expert {lang!r} was trained with another core than the one the repository lists")
    return merged


def push_to_hub(folder: Path, repo_id: str, revision: str = "main", log: Log = print, *,
                keep_core: bool = False) -> str:
    """create_repo + upload_folder of a pack repository folder; index.json merged with the remote one.
    ``keep_core`` (an added language): refuse when the repository lists another core, whose experts the
    upload would drop."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    from mole_lsp.paths import hub_endpoint

    api = HfApi(endpoint=hub_endpoint())
    api.create_repo(repo_id, exist_ok=True)
    remote = None
    try:
        path = hf_hub_download(repo_id, INDEX, revision=revision, endpoint=hub_endpoint(), force_download=True)
        # Not read_json_object: an unreadable remote index must stop the push, not be replaced by ours.
        remote = json.loads(Path(path).read_text(encoding="utf-8"))
    except (EntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError):
        remote = None
    local = read_json_object(folder / INDEX)
    if local is None:
        raise PackError(f"{folder}: no readable {INDEX} (not a pack repository folder)")
    old_core, new_core = ((x or {}).get("core") or {} for x in (remote, local))
    if keep_core and old_core and new_core and old_core["files"][ADAPTERS]["sha256"] != new_core["files"][ADAPTERS]["sha256"]:
        raise PackError(f"{repo_id}@{revision} lists another core than the one {folder} was trained with: its "
                        "experts would be dropped (push the core's joint run, or train against the listed core)")
    merged = merge_index(remote, local)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "repo"
        shutil.copytree(folder, stage)
        (stage / INDEX).write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")  # a throw-away copy
        info = api.upload_folder(folder_path=str(stage), repo_id=repo_id, revision=revision,
                                 commit_message=f"mole packs: {', '.join(sorted(merged['experts'])) or 'core'}")
    log(f"pushed {folder} to {repo_id}@{revision}")
    return str(getattr(info, "oid", None) or info)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.publish FOLDER REPO``: push a pack repository folder (``OUT/packs``) to the Hub."""
    p = argparse.ArgumentParser(prog="python -m training.publish", description="Upload a pack repository folder "
                                "(core/, experts/, index.json) to a Hub repository, merging index.json with its own.")
    p.add_argument("folder", type=Path, help="a pack repository folder, e.g. OUT/packs of a training run")
    p.add_argument("repo_id", help="the Hub repository (the server's default: mole-lsp doctor names it)")
    p.add_argument("--revision", default="main", help="branch to push to")
    p.add_argument("--keep-core", action="store_true", help="refuse when the repository lists another core")
    args = p.parse_args(argv)
    commit = push_to_hub(args.folder, args.repo_id, args.revision, keep_core=args.keep_core)
    print(f"{args.repo_id}@{args.revision}: {commit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
