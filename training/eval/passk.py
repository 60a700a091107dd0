"""pass@k: the probability that at least one of k samples drawn (without replacement) from n generated
samples, c of which are correct, is correct — the unbiased estimator of Chen et al. (2021).

    pass@k = 1 - C(n - c, k) / C(n, k)

The binomial coefficients overflow floats long before realistic n, so the ratio is evaluated as the
product  prod_{i = n-c+1}^{n} (1 - k / i),  which only multiplies numbers in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["pass_at_k", "mean_pass_at_k", "pass_at_k_table"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` passed."""
    if not (0 <= c <= n):
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    miss = 1.0  # C(n-c, k) / C(n, k)
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given as ``(n, c)`` pairs (each problem needs n >= k)."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("no problems")
    return sum(values) / len(values)


def pass_at_k_table(outcomes: Mapping[str, Sequence[bool]], ks: Iterable[int] = (1, 10, 100)) -> dict[int, float]:
    """pass@k for each k that every problem has enough samples for; ``outcomes`` maps a problem id
    to the pass/fail outcome of each of its samples."""
    if not outcomes:
        return {}
    n_min = min(len(v) for v in outcomes.values())
    counts = [(len(v), sum(bool(x) for x in v)) for v in outcomes.values()]
    return {k: mean_pass_at_k(counts, k) for k in ks if 1 <= k <= n_min}
