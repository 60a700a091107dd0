"""The MoLE joint finetune (and its baselines): a plain PyTorch loop that ends in core + expert packs.

    python -m training.finetune --config FILE.toml [--preset paper|quick] [--field value ...]
    torchrun --nproc-per-node 4 -m training.finetune --preset paper --grad-accum 1 --out runs/paper
    python -m training.finetune --preset quick --add-language go --core runs/quick/packs --out runs/go

Engine facts:

- Loss: cross-entropy over answer tokens only, summed and divided by the number of answer tokens of the
  whole *global* batch (all micro-batches of all processes), so one process with accumulation and
  several processes give the same gradient. Logits are computed for answer positions only.
- AdamW (betas, eps, weight decay from the config; no clipping unless ``max_grad_norm``), learning rate
  set every step from a linear warm-up / linear decay (or constant) schedule: nothing but the step
  counter is needed to resume it.
- Several processes (torchrun; NCCL on CUDA, gloo on CPU): every process builds the same batch plan
  and takes its share of each step's micro-batches; gradients are summed with one all-reduce per
  optimizer step (adapters are small, and experts absent from a step stay without a gradient on every
  process, exactly as in a single process). Validation is sharded the same way.
- bf16 autocast on CUDA (``precision = "bf16"``), fp32 on CPU; SDPA attention by default; optional
  gradient checkpointing and ``torch.compile`` of the decoder layers.
- Checkpoints (``OUT/checkpoints/step-N``, safetensors + JSON, no pickle): trainable tensors, AdamW
  state, RNG state, step. ``--resume`` continues from the newest one with the same losses as an
  uninterrupted run (the data order is a pure function of seed, epoch and step).
- Metrics: ``OUT/metrics.jsonl`` lines ``{"step", "loss", "lr", "tokens_per_s", ...}`` and
  ``{"step", "val": {language: loss, "all": loss}}``.
- Output: ``OUT/packs`` (core + experts + index.json, mole_lsp.packs.format format); alllang: a core pack only;
  perlang: ``OUT/perlang/<lang>/packs`` per language; full: ``OUT/full-model`` (safetensors).
  ``--push-to-hub REPO`` uploads the pack folder (index.json merged with what the repo already lists).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mole_lsp.lang.registry import Registry, load_registry
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
    export_expert,
    export_packs,
    write_index,
)
from training import methods
from training.config import TrainConfig, load_config
from training.data import EncodedSet, build_data, collate, plan_epoch

Log = Callable[[str], None]
CKPT_DIR = "checkpoints"
METRICS = "metrics.jsonl"


# -- processes and devices --------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()


def setup_dist(cfg: TrainConfig) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(want)
    if device.type == "cuda":
        device = torch.device("cuda", local if world > 1 else (device.index or 0))
        torch.cuda.set_device(device)
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


# -- base model ------------------------------------------------------------------------------------------
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


# -- loss and evaluation ---------------------------------------------------------------------------------
def token_losses(prep: methods.Prepared, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of every answer token (fp32) and the batch row it belongs to."""
    prep.set_routes(batch["route_ids"])
    hidden = prep.model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      use_cache=False).last_hidden_state
    sel = batch["targets"] != -100
    logits = prep.model.get_output_embeddings()(hidden[sel]).float()
    ce = F.cross_entropy(logits, batch["targets"][sel], reduction="none")
    return ce, sel.nonzero()[:, 0]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(cfg: TrainConfig, prep: methods.Prepared, val: EncodedSet, languages: Sequence[str], pad_id: int,
             dist: Dist) -> dict[str, float]:
    """Mean answer-token loss per main language (and 'all'), over the whole validation set."""
    if not len(val):
        return {}
    was_training = prep.model.training
    prep.model.eval()
    table = prep.route_table(val.label_vocab)
    order = sorted(range(len(val)), key=lambda i: (len(val.examples[i]), i))
    bs = cfg.micro_batch
    batches = [order[i:i + bs] for i in range(0, len(order), bs)][dist.rank::dist.world]
    languages = list(languages) + sorted({e.language for e in val.examples} - set(languages))
    lang_ix = {lang: i for i, lang in enumerate(languages)}
    sums = torch.zeros(len(languages), 2, dtype=torch.float64)
    for b in batches:
        exs = [val.examples[i] for i in b]
        batch = _to(collate(exs, table, pad_id), dist.device)
        with autocast(cfg, dist.device):
            ce, rows = token_losses(prep, batch)
        per_row = torch.zeros(len(exs), dtype=torch.float64, device=ce.device).index_add_(0, rows, ce.double())
        cnt = torch.bincount(rows, minlength=len(exs))
        for j, e in enumerate(exs):
            k = lang_ix[e.language]
            sums[k, 0] += per_row[j].item()
            sums[k, 1] += cnt[j].item()
    if dist.enabled:
        sums = dist.all_reduce(sums.to(dist.device)).cpu()
    prep.model.train(was_training)
    out = {lang: sums[i, 0].item() / sums[i, 1].item() for i, lang in enumerate(languages) if sums[i, 1] > 0}
    if sums[:, 1].sum() > 0:
        out["all"] = sums[:, 0].sum().item() / sums[:, 1].sum().item()
    return out


# -- checkpoints -------------------------------------------------------------------------------------------
def _ckpt_root(out: Path) -> Path:
    return out / CKPT_DIR


def latest_checkpoint(out: Path) -> Path | None:
    root = _ckpt_root(out)
    steps = sorted(root.glob("step-*/state.json")) if root.is_dir() else []
    return steps[-1].parent if steps else None


def save_checkpoint(out: Path, step: int, prep: methods.Prepared, opt: torch.optim.Optimizer, cfg: TrainConfig,
                    extra: dict[str, Any]) -> Path:
    root = _ckpt_root(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".step-", dir=root))
    save_file({n: p.detach().cpu().contiguous() for n, p in prep.named_trainable().items()},
              str(tmp / "trainable.safetensors"))
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous()
               for i, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = {"step": step, "param_groups": sd["param_groups"], "config": cfg.to_dict(), **extra}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-max(1, cfg.keep_checkpoints)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, prep: methods.Prepared, opt: torch.optim.Optimizer) -> dict[str, Any]:
    state = json.loads((path / "state.json").read_text())
    named = prep.named_trainable()
    weights = load_file(str(path / "trainable.safetensors"))
    if set(weights) != set(named):
        raise ValueError(f"{path}: checkpoint holds other tensors than this run trains (another method?)")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(weights[n].to(p.device, p.dtype))
    tensors = load_file(str(path / "optimizer.safetensors"))
    per: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, i, k = key.split(".", 2)
            per.setdefault(int(i), {})[k] = v
    groups = state["param_groups"]
    for g in groups:
        g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": per, "param_groups": groups})
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["rng.cuda"]))
    for g in opt.param_groups:  # AdamW moves state to the param device; keep step counters on CPU
        for p in g["params"]:
            st = opt.state.get(p)
            if st and "step" in st and torch.is_tensor(st["step"]):
                st["step"] = st["step"].cpu()
    return state


# -- metrics ---------------------------------------------------------------------------------------------
class Metrics:
    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        elif path.exists():  # drop what an interrupted run logged after its last checkpoint
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= resume_step]
            path.write_text("".join(x + "\n" for x in keep))

    def write(self, **row: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


# -- the loop ------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    steps: int
    losses: list[float]  # training loss of every step run in this call
    val_history: list[tuple[int, dict[str, float]]]
    out: Path
    interrupted: bool = False

    @property
    def final_val(self) -> dict[str, float]:
        return self.val_history[-1][1] if self.val_history else {}


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    warm = math.ceil(cfg.warmup_ratio * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


def sync_grads(params: Sequence[torch.nn.Parameter], dist: Dist) -> None:
    """Sum gradients over processes; a parameter no process touched keeps grad None (AdamW skips it)."""
    if not dist.enabled:
        return
    dev = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if live:
        flat = torch.cat([p.grad.reshape(-1) for p in live])
        dist.all_reduce(flat)
        off = 0
        for p in live:
            n = p.numel()
            p.grad.copy_(flat[off:off + n].view_as(p))
            off += n


def train_loop(cfg: TrainConfig, prep: methods.Prepared, tok: Any, train: EncodedSet, val: EncodedSet,
               languages: Sequence[str], out: Path, dist: Dist, log: Log, max_steps: int | None = None) -> RunResult:
    out.mkdir(parents=True, exist_ok=True)
    model = prep.model.to(dist.device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.compile:
        for layer in model.get_decoder().layers:
            layer.compile(dynamic=True)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    table = prep.route_table(train.label_vocab)
    lengths = train.lengths()
    plans: dict[int, list[list[list[int]]]] = {}

    def plan(epoch: int) -> list[list[list[int]]]:
        if epoch not in plans:
            plans.clear()
            plans[epoch] = plan_epoch(lengths, cfg.micro_batch, cfg.grad_accum, dist.world, cfg.seed, epoch,
                                      cfg.bucket_chunk)
        return plans[epoch]

    per_epoch = len(plan(0))
    if per_epoch == 0:
        raise ValueError("no training samples (see the language table and bad-row counts above)")
    total = max_steps or cfg.max_steps or math.ceil(cfg.epochs * per_epoch)
    opt = torch.optim.AdamW(prep.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
    start = 0
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        start = load_checkpoint(ckpt, prep, opt)["step"]
        log(f"resumed from {ckpt} (step {start} of {total})")
    metrics = Metrics(out / METRICS, dist.main, start if ckpt is not None else None)
    result = RunResult(start, [], [], out)
    n_params = sum(p.numel() for p in prep.params)
    log(f"{cfg.method}: {n_params:,} trainable parameters, {len(train)} training samples, {total} steps "
        f"({per_epoch}/epoch), global batch {cfg.micro_batch * cfg.grad_accum * dist.world}, {dist.world} process(es)")

    def validate(step: int) -> None:
        v = evaluate(cfg, prep, val, languages, pad_id, dist)
        if v:
            result.val_history.append((step, v))
            metrics.write(step=step, val=v)
            log(f"step {step}: validation " + ", ".join(f"{k} {x:.4f}" for k, x in v.items()))

    if start == 0 and cfg.eval_at_start:
        validate(0)
    model.train()
    bar = None
    if cfg.progress and dist.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=cfg.method, dynamic_ncols=True, file=sys.stderr)
    t_last, tok_count = time.perf_counter(), 0.0
    step = start
    for step in range(start, total):
        epoch, k = divmod(step, per_epoch)
        slots = plan(epoch)[k]
        n_global = sum(train.examples[i].n_targets for mb in slots for i in mb)
        lr = lr_at(cfg, step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        stats = torch.zeros(2, dtype=torch.float64)  # loss sum, tokens seen
        for a in range(cfg.grad_accum):
            idx = slots[a * dist.world + dist.rank]
            if not idx:
                continue
            batch = _to(collate([train.examples[i] for i in idx], table, pad_id), dist.device)
            with autocast(cfg, dist.device):
                ce, _ = token_losses(prep, batch)
            loss = ce.sum()
            (loss / max(1, n_global)).backward()
            stats[0] += loss.item()
            stats[1] += batch["attention_mask"].sum().item()
        sync_grads(prep.params, dist)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(prep.params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dist.enabled:
            stats = dist.all_reduce(stats.to(dist.device)).cpu()
        train_loss = stats[0].item() / max(1, n_global)
        result.losses.append(train_loss)
        result.steps = step + 1
        tok_count += stats[1].item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr:.2e}")
        done = step + 1
        if done % max(1, cfg.log_every) == 0 or done == total:
            now = time.perf_counter()
            metrics.write(step=done, epoch=round(step / per_epoch, 4), loss=train_loss, lr=lr,
                          tokens_per_s=tok_count / max(1e-9, now - t_last))
            t_last, tok_count = now, 0.0
        if cfg.eval_every and done % cfg.eval_every == 0 and done != total:
            validate(done)
        interrupted = cfg.stop_after is not None and done >= cfg.stop_after and done != total
        if (cfg.save_every and done % cfg.save_every == 0) or done == total or interrupted:
            if dist.main:
                save_checkpoint(out, done, prep, opt, cfg, {"total_steps": total})
            dist.barrier()
        if interrupted:
            result.interrupted = True
            break
    if bar is not None:
        bar.close()
    if not result.interrupted and (not result.val_history or result.val_history[-1][0] != total):
        validate(total)
    return result


# -- packs -------------------------------------------------------------------------------------------
def provenance(cfg: TrainConfig, result: RunResult, n_train: int, extra: dict[str, Any] | None = None) -> dict:
    keep = ("method", "data", "languages", "lr", "beta1", "beta2", "weight_decay", "micro_batch", "grad_accum",
            "epochs", "max_steps", "warmup_ratio", "schedule", "max_length", "seed", "init", "precision",
            "min_code_fraction", "val_fraction", "split_seed")
    d = {k: getattr(cfg, k) for k in keep}
    d.update(steps=result.steps, train_samples=n_train, final_val=result.final_val, trainer="training.finetune")
    d.update(extra or {})
    return d


def export_run(prep: methods.Prepared, tok: Any, ident: BaseIdentity, dest: Path, languages: Sequence[str],
               prov: dict[str, Any]) -> Path:
    """Packs (adapter methods) or a safetensors model folder (full finetune)."""
    if prep.mole is None:
        target = dest / "full-model"
        prep.model.save_pretrained(target, safe_serialization=True)
        tok.save_pretrained(target)
        return target
    langs = list(languages) if prep.mole.config.r_expert else []
    if prep.mole.config.nl_mode == "expert" and prep.mole.config.r_expert:
        langs.append("nl")  # the ablation's NL expert is a pack of its own
    return export_packs(prep.mole, dest / "packs", ident, languages=langs if not prep.single_route else [],
                        provenance=prov)


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


def push_to_hub(folder: Path, repo_id: str, revision: str = "main", log: Log = print) -> str:
    """create_repo + upload_folder of a pack repository folder; index.json merged with the remote one."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    from mole_lsp.paths import hub_endpoint

    api = HfApi(endpoint=hub_endpoint())
    api.create_repo(repo_id, exist_ok=True)
    remote = None
    try:
        path = hf_hub_download(repo_id, INDEX, revision=revision, endpoint=hub_endpoint(), force_download=True)
        remote = json.loads(Path(path).read_text())
    except (EntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError):
        remote = None
    merged = merge_index(remote, json.loads((folder / INDEX).read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "repo"
        shutil.copytree(folder, stage)
        (stage / INDEX).write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        info = api.upload_folder(folder_path=str(stage), repo_id=repo_id, revision=revision,
                                 commit_message=f"mole packs: {', '.join(sorted(merged['experts'])) or 'core'}")
    log(f"pushed {folder} to {repo_id}@{revision}")
    return str(getattr(info, "oid", None) or info)


# -- drivers -------------------------------------------------------------------------------------------
def present_languages(cfg: TrainConfig, train: EncodedSet) -> list[str]:
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
            lang_out = out / "perlang" / lang
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
                            cfg.hub_revision, say)
    for name, path in packs.items():
        say(f"exported {name}: {path}")
    return {"results": results, "packs": packs, "models": models, "table": data.table, "identity": ident,
            "tokenizer": tok, "data": data}


def _add_language(cfg: TrainConfig, model, tok, ident: BaseIdentity, data, out: Path, dist: Dist, say: Log,
                  registry: Registry) -> tuple[RunResult, Path, methods.Prepared]:
    lang = cfg.add_language
    assert lang is not None and cfg.core is not None
    core = Path(cfg.core)
    if (core / CORE_DIR).is_dir():
        core = core / CORE_DIR
    prep = methods.prepare_add_language(model, core, lang, base=ident, registry=registry)
    res = train_loop(cfg, prep, tok, data.train, data.val, [lang], out, dist, say)
    dest = out / "packs"
    if dist.main and cfg.export and not res.interrupted:
        m = prep.mole.core_manifest
        export_expert(prep.mole, lang, dest / EXPERTS_DIR / lang, BaseIdentity.from_dict(m["base"]),  # type: ignore[arg-type]
                      core_sha256(m), provenance(cfg, res, len(data.train), {"added_to_core": core_sha256(m)}))
        write_index(dest)
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
