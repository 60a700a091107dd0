"""Batches: a seeded, length-bucketed plan of every optimizer step, and padding examples into tensors."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from mole_lsp.core.routing import ROUTE_PAD
from training.encode import Example


def plan_epoch(lengths: Sequence[int], micro: int, accum: int, world: int, seed: int, epoch: int,
               bucket_chunk: int = 64) -> list[list[list[int]]]:
    """Optimizer steps of one epoch; each is ``accum * world`` micro-batches of sample indices.

    Length bucketing: a seeded shuffle, then samples are sorted by length inside chunks of
    ``bucket_chunk`` global batches and cut into global batches, whose order is shuffled again. A global
    batch is cut into consecutive micro-batches (similar lengths, little padding); micro-batch ``k`` of a
    step belongs to rank ``k % world`` at accumulation index ``k // world``. The plan depends only on the
    global batch, never on how it is spread over processes.
    """
    g = micro * accum * world
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches: list[list[int]] = []
    span = g * max(1, bucket_chunk)
    for c in range(0, len(idx), span):
        part = sorted(idx[c:c + span], key=lambda i: (lengths[i], i))
        batches += [part[b:b + g] for b in range(0, len(part), g)]
    rng.shuffle(batches)
    steps = []
    for b in batches:
        per = math.ceil(len(b) / (accum * world)) if len(b) < g else micro  # a short last batch is spread out
        steps.append([b[k * per:(k + 1) * per] for k in range(accum * world)])
    return steps


def collate(examples: Sequence[Example], route_table: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask, route_ids, targets (-100 = no loss)."""
    t = max(len(e) for e in examples)
    n = len(examples)
    ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    routes = torch.full((n, t), ROUTE_PAD, dtype=torch.long)
    targets = torch.full((n, t), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e)
        ids[i, :k] = e.input_ids.long()
        mask[i, :k] = 1
        routes[i, :k] = route_table[e.labels.long()]
        start = max(1, e.answer_start)
        targets[i, start:k] = ids[i, start:k]
    # targets[t] is predicted at position t-1: shift so that targets line up with logits.
    shifted = torch.full_like(targets, -100)
    shifted[:, :-1] = targets[:, 1:]
    return {"input_ids": ids, "attention_mask": mask, "route_ids": routes, "targets": shifted}
