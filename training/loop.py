"""The training loop: answer-only loss, AdamW with a step-only schedule, validation, metrics, checkpoints.

- Loss: cross-entropy over answer tokens only, summed and divided by the number of answer tokens of the
  whole *global* batch (all micro-batches of all processes), so one process with accumulation and
  several processes give the same gradient. Logits are computed for answer positions only.
- AdamW (betas, eps, weight decay from the config; no clipping unless ``max_grad_norm``), learning rate
  set every step from a linear warm-up / linear decay (or constant) schedule: nothing but the step
  counter is needed to resume it.
- Validation is sharded over processes like training; optional gradient checkpointing and
  ``torch.compile`` of the decoder layers.
- Metrics: ``OUT/metrics.jsonl`` lines ``{"step", "loss", "lr", "tokens_per_s", ...}`` and
  ``{"step", "val": {language: loss, "all": loss}}``; when the validation set mixes sample kinds, also
  ``"LANG/KIND"`` and ``"all/KIND"`` (kind: chat, completion, fim) -- the completion kind is the
  held-out loss of the editor's own prompt.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.batching import collate, plan_epoch
from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.dist import Dist, autocast, sync_grads
from training.encode import EncodedSet
from training.methods import Prepared

Log = Callable[[str], None]
METRICS = "metrics.jsonl"


def token_losses(prep: Prepared, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
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
def evaluate(cfg: TrainConfig, prep: Prepared, val: EncodedSet, languages: Sequence[str], pad_id: int,
             dist: Dist) -> dict[str, float]:
    """Mean answer-token loss per main language (and 'all'), over the whole validation set; per
    language and kind too when there are several kinds."""
    if not len(val):
        return {}
    was_training = prep.model.training
    prep.model.eval()
    table = prep.route_table(val.label_vocab)
    order = sorted(range(len(val)), key=lambda i: (len(val.examples[i]), i))
    bs = cfg.micro_batch
    batches = [order[i:i + bs] for i in range(0, len(order), bs)][dist.rank::dist.world]
    languages = list(languages) + sorted({e.language for e in val.examples} - set(languages))
    kinds = sorted({e.kind for e in val.examples})
    groups = languages + ([f"{g}/{k}" for g in [*languages, "all"] for k in kinds] if len(kinds) > 1 else [])
    lang_ix = {lang: i for i, lang in enumerate(groups)}
    sums = torch.zeros(len(groups), 2, dtype=torch.float64)
    for b in batches:
        exs = [val.examples[i] for i in b]
        batch = _to(collate(exs, table, pad_id), dist.device)
        with autocast(cfg, dist.device):
            ce, rows = token_losses(prep, batch)
        per_row = torch.zeros(len(exs), dtype=torch.float64, device=ce.device).index_add_(0, rows, ce.double())
        cnt = torch.bincount(rows, minlength=len(exs))
        for j, e in enumerate(exs):
            for key in (e.language, f"{e.language}/{e.kind}", f"all/{e.kind}"):
                if key in lang_ix:
                    sums[lang_ix[key], 0] += per_row[j].item()
                    sums[lang_ix[key], 1] += cnt[j].item()
    if dist.enabled:
        sums = dist.all_reduce(sums.to(dist.device)).cpu()
    prep.model.train(was_training)
    out = {g: sums[i, 0].item() / sums[i, 1].item() for i, g in enumerate(groups) if sums[i, 1] > 0}
    n = len(languages)
    if sums[:n, 1].sum() > 0:
        out["all"] = sums[:n, 0].sum().item() / sums[:n, 1].sum().item()
    return out


class Metrics:
    """``metrics.jsonl`` of the main process; a resumed run drops what was logged after its checkpoint."""

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
    """Learning rate of ``step``: linear warm-up, then linear decay to 0 (or constant)."""
    warm = math.ceil(cfg.warmup_ratio * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, (total - step) / max(1, total - warm))


def train_loop(cfg: TrainConfig, prep: Prepared, tok: Any, train: EncodedSet, val: EncodedSet,
               languages: Sequence[str], out: Path, dist: Dist, log: Log, max_steps: int | None = None) -> RunResult:
    """Train ``prep`` on ``train`` into ``out`` (metrics, checkpoints), validating on ``val``."""
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
