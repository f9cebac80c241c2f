"""Confidence intervals of benchmark metrics: Wilson for proportions, a seeded percentile bootstrap otherwise."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

# Resampled indices are drawn in chunks of about this many entries, so large test sets stay in memory.
_CHUNK_ENTRIES = 2_000_000


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (successes out of n), at confidence ``level``.

    With p = successes / n and z the normal quantile of (1 + level) / 2:
    centre = (p + z^2 / 2n) / (1 + z^2 / n), half-width = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2 / n).
    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at p = 0 or 1, where
    small models and small demo limits put most accuracies.
    """
    if n < 1:
        raise ValueError(f"wilson_interval: n={n}; expected at least one item")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: {successes} successes out of {n}; expected 0 <= successes <= n")
    if not 0 < level < 1:
        raise ValueError(f"wilson_interval: level={level}; expected a value in (0, 1)")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At p = 0 or 1 one bound is exactly 0 or 1; rounding must not move it past the estimate.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def bootstrap_interval(n_items: int, statistic: Callable[[np.ndarray], float] | None = None, *,
                       values: Sequence[float] | np.ndarray | None = None, level: float = 0.95,
                       resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval over items: draw ``n_items`` items with replacement ``resamples``
    times, compute the statistic on each draw, and take the (1 - level)/2 and (1 + level)/2 quantiles.

    Pass ``values`` (one number per item) for the mean, computed for all draws at once, or
    ``statistic`` (item indices -> value) for anything else, e.g. corpus BLEU. ``seed`` makes the
    interval reproducible.
    """
    if n_items < 1:
        raise ValueError(f"bootstrap_interval: n_items={n_items}; expected at least one item")
    if (values is None) == (statistic is None):
        raise ValueError("bootstrap_interval: pass exactly one of values= (for the mean) and statistic=")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap_interval: resamples={resamples}, level={level}; expected >= 1 and in (0, 1)")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ENTRIES // n_items)
    draws = []
    if values is not None:
        array = np.asarray(values, dtype=float)
        if array.shape != (n_items,):
            raise ValueError(f"bootstrap_interval: {array.size} values for {n_items} items")
        for start in range(0, resamples, chunk):
            indices = rng.integers(0, n_items, size=(min(chunk, resamples - start), n_items))
            draws.append(array[indices].mean(axis=1))
        estimates = np.concatenate(draws)
    else:
        estimates = np.array([statistic(rng.integers(0, n_items, size=n_items)) for _ in range(resamples)])
    tail = (1 - level) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)
