"""Batch plans: independent of the process count, every sample once, length-bucketed."""

from __future__ import annotations

from training.batching import plan_epoch


def test_batch_plan_is_independent_of_world_size():
    lengths = [5 + (i * 7) % 23 for i in range(37)]
    one = plan_epoch(lengths, micro=2, accum=4, world=1, seed=1, epoch=0)
    two = plan_epoch(lengths, micro=2, accum=2, world=2, seed=1, epoch=0)
    assert one == two
    flat = sorted(i for step in one for mb in step for i in mb)
    assert flat == list(range(37))
    # Length bucketing: within a micro-batch lengths are close.
    spread = [max(lengths[i] for i in mb) - min(lengths[i] for i in mb) for step in one for mb in step if mb]
    assert sum(spread) / len(spread) < 6
