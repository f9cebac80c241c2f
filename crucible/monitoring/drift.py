"""Drift detectors comparing a feature's current distribution with a baseline; each verdict explains itself.

Numeric features get KS and PSI, categorical ones chi-squared and Jensen-Shannon, rates a two-proportion
z-test, embeddings an RBF-kernel MMD with a permutation p-value. A numeric sample is prepared once
(:class:`NumericSample`: sorted, or counts per value for integers) and reused by KS, the PSI bins and
the plots, so the detectors together cost about one sort per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DETECTORS = ("ks", "psi", "chi2", "js", "two_proportion", "mmd")
FEATURE_KINDS = ("numeric", "categorical", "rate", "embedding")
# Above this sample size scipy's ks_2samp switches from the exact p-value to Smirnov's asymptotic one.
KS_EXACT_MAX_N = 10_000
# Integer samples whose value range is at most this many times their size are counted, not sorted.
COUNTS_RANGE_FACTOR = 4


@dataclass(frozen=True)
class DriftResult:
    """One detector's verdict on one feature: statistic, p-value where the test has one, threshold, and
    why (``explanation``, one sentence a reader of the report can act on)."""

    detector: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    feature: str = ""
    explanation: str = ""
    num_baseline: int = 0
    num_current: int = 0


@dataclass(frozen=True)
class DriftThresholds:
    """When each detector calls drift. PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant;
    Jensen-Shannon distance (base 2) lies in [0, 1]; the rest are p-value thresholds."""

    ks_p_value: float = 0.001
    psi: float = 0.25
    psi_bins: int = 5
    chi2_p_value: float = 0.001
    js_distance: float = 0.1
    proportion_p_value: float = 0.001
    mmd_p_value: float = 0.01
    mmd_permutations: int = 200
    embedding_sample: int = 256
    seed: int = 0


@dataclass(frozen=True)
class Feature:
    """A feature's observations. ``values`` by kind: numeric, a 1-d array; categorical, counts per
    category; rate, ``(successes, trials)``; embedding, texts (embedded later) or an (n, dim) array."""

    kind: str
    values: Any
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind {self.kind!r} is not one of {', '.join(FEATURE_KINDS)}")

    @property
    def size(self) -> int:
        if self.kind == "categorical":
            return int(sum(self.values.values()))
        if self.kind == "rate":
            return int(self.values[1])
        return len(self.values)


class NumericSample:
    """A numeric sample prepared once for every detector: integers over a small range as counts per
    value (O(n), no sort), anything else sorted."""

    def __init__(self, values: Sequence[float] | np.ndarray, name: str = "sample") -> None:
        array = np.asarray(values)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name}: need a non-empty 1-d sample, got shape {array.shape}")
        self.n = int(array.size)
        self.counts: np.ndarray | None = None
        self.sorted: np.ndarray | None = None
        if array.dtype.kind in "iub":
            array = array.astype(np.int64, copy=False)
            self.lo, hi = int(array.min()), int(array.max())
            if hi - self.lo <= COUNTS_RANGE_FACTOR * self.n + 1024:
                self.counts = np.bincount(array - self.lo, minlength=hi - self.lo + 1)
                self._cumulative = np.cumsum(self.counts)
                return
        floats = array.astype(np.float64, copy=False)
        if np.isnan(floats).any():
            raise ValueError(f"{name}: {int(np.isnan(floats).sum())} NaN values; drop or fill them first")
        self.sorted = np.sort(floats)

    def values(self) -> np.ndarray:
        """All values, sorted (expanded from the counts when the sample is counted)."""
        if self.sorted is None:
            self.sorted = np.repeat(np.arange(self.lo, self.lo + self.counts.size, dtype=np.float64), self.counts)
        return self.sorted

    def count_below(self, edges: np.ndarray) -> np.ndarray:
        """How many values are strictly below each edge."""
        edges = np.asarray(edges, dtype=np.float64)
        if self.counts is None:
            return np.searchsorted(self.sorted, edges, side="left")
        # x < e for an integer x means x - lo < ceil(e) - lo.
        positions = np.clip(np.ceil(edges) - self.lo, 0, self.counts.size).astype(np.int64)
        return np.concatenate([[0], self._cumulative])[positions]

    def quantiles(self, qs: np.ndarray) -> np.ndarray:
        """Quantiles with numpy's default (linear) interpolation between order statistics."""
        h = (self.n - 1) * np.asarray(qs, dtype=np.float64)
        below = np.floor(h).astype(np.int64)
        above = np.minimum(below + 1, self.n - 1)
        a, b = self._order_statistics(below), self._order_statistics(above)
        return a + (h - below) * (b - a)

    def _order_statistics(self, ranks: np.ndarray) -> np.ndarray:
        if self.counts is None:
            return self.sorted[ranks]
        return (self.lo + np.searchsorted(self._cumulative, ranks, side="right")).astype(np.float64)

    def median(self) -> float:
        return float(self.quantiles(np.array([0.5]))[0])


def _as_sample(values: Sequence[float] | np.ndarray | NumericSample, name: str) -> NumericSample:
    return values if isinstance(values, NumericSample) else NumericSample(values, name)


def ks_statistic(baseline: NumericSample, current: NumericSample) -> float:
    """The largest gap between the two empirical CDFs."""
    if baseline.counts is not None and current.counts is not None:
        lo = min(baseline.lo, current.lo)
        size = max(baseline.lo + baseline.counts.size, current.lo + current.counts.size) - lo

        def cdf(sample: NumericSample) -> np.ndarray:
            full = np.zeros(size)
            full[sample.lo - lo:sample.lo - lo + sample.counts.size] = sample.counts
            return np.cumsum(full) / sample.n

        return float(np.max(np.abs(cdf(baseline) - cdf(current))))
    a, b = baseline.values(), current.values()
    # Merge the two sorted samples (a stable sort of two sorted runs is a linear merge), walk the merged
    # order with integer steps (+len(b) for a value of a, -len(a) for one of b: the CDF gap times
    # len(a) * len(b), exact), and read the gap after the last of each run of equal values.
    merged = np.concatenate([a, b])
    order = np.argsort(merged, kind="stable")
    gap = np.cumsum(np.where(order < a.size, b.size, -a.size))
    values = merged[order]
    last_of_value = np.empty(values.size, dtype=bool)
    np.not_equal(values[1:], values[:-1], out=last_of_value[:-1])
    last_of_value[-1] = True
    return float(np.max(np.abs(gap[last_of_value])) / (a.size * b.size))


def ks_p_value(statistic: float, n_baseline: int, n_current: int) -> float:
    """Smirnov's asymptotic two-sided p-value, as scipy's ks_2samp computes it for large samples."""
    from scipy.stats import kstwo

    m, n = sorted([float(n_baseline), float(n_current)], reverse=True)
    return float(np.clip(kstwo.sf(statistic, np.round(m * n / (m + n))), 0, 1))


def kolmogorov_smirnov(baseline: Sequence[float] | NumericSample, current: Sequence[float] | NumericSample,
                       p_threshold: float = 0.01, feature: str = "") -> DriftResult:
    """Two-sample KS test; drift when the p-value falls below ``p_threshold``. Exact p-values (scipy's
    ks_2samp) up to 10,000 values per sample, Smirnov's asymptotic formula above, as scipy does."""
    base, cur = _as_sample(baseline, "KS baseline"), _as_sample(current, "KS current")
    if max(base.n, cur.n) <= KS_EXACT_MAX_N:
        from scipy.stats import ks_2samp

        result = ks_2samp(base.values(), cur.values())
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        statistic = ks_statistic(base, cur)
        p_value = ks_p_value(statistic, base.n, cur.n)
    drifted = p_value < p_threshold
    explanation = (f"CDFs differ by up to {statistic:.1%} (p={p_value:.2g} {'<' if drifted else '>='} "
                   f"{p_threshold:g}); median {cur.median():.4g} vs baseline {base.median():.4g}")
    return DriftResult("ks", statistic, p_value, p_threshold, drifted, feature, explanation, base.n, cur.n)


def psi_shares(baseline: NumericSample, current: NumericSample, bins: int = 10,
               smoothing: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin edges (baseline quantiles, outer edges infinite) and the smoothed baseline and current shares."""
    edges = np.unique(baseline.quantiles(np.linspace(0, 1, bins + 1)))
    if edges.size < 3:
        edges = np.array([-np.inf, float(edges[0]), np.inf])
    edges[0], edges[-1] = -np.inf, np.inf
    k = edges.size - 1

    def shares(sample: NumericSample) -> np.ndarray:
        below = sample.count_below(edges[1:-1])
        counts = np.diff(np.concatenate([[0], below, [sample.n]]))
        return (counts + smoothing) / (sample.n + smoothing * k)

    return edges, shares(baseline), shares(current)


def population_stability_index(baseline: Sequence[float] | NumericSample, current: Sequence[float] | NumericSample,
                               bins: int = 10, smoothing: float = 0.5) -> float:
    """PSI = sum_i (c_i - b_i) * ln(c_i / b_i) over quantile bins of the baseline.

    Bin edges are the baseline's quantiles (each baseline bin holds ~1/bins of the mass). Shares
    are additively smoothed, ``(count + smoothing) / (n + smoothing * bins)``, so that an empty
    bin in a small daily sample adds a bounded term instead of an ``ln(epsilon)`` blow-up.
    """
    _, b, c = psi_shares(_as_sample(baseline, "PSI baseline"), _as_sample(current, "PSI current"), bins, smoothing)
    return float(np.sum((c - b) * np.log(c / b)))


def psi_drift(baseline: Sequence[float] | NumericSample, current: Sequence[float] | NumericSample,
              threshold: float = 0.25, bins: int = 10, feature: str = "") -> DriftResult:
    """PSI drift: by the usual reading, < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant."""
    base, cur = _as_sample(baseline, "PSI baseline"), _as_sample(current, "PSI current")
    _, b, c = psi_shares(base, cur, bins)
    terms = (c - b) * np.log(c / b)
    psi = float(np.sum(terms))
    worst = int(np.argmax(terms))
    reading = "significant" if psi > threshold else "moderate" if psi > 0.1 else "stable"
    explanation = (f"PSI {psi:.3f} ({reading}, threshold {threshold:g}); the largest change is baseline "
                   f"quantile bin {worst + 1} of {b.size}: {b[worst]:.0%} of the baseline, {c[worst]:.0%} now")
    return DriftResult("psi", psi, None, threshold, psi > threshold, feature, explanation, base.n, cur.n)


def category_counts(values: Sequence[Any] | np.ndarray | Any) -> dict[str, int]:
    """Counts per category (as strings), largest first; missing values are not a category.

    ``values`` may be a sequence, a numpy or Arrow array, or a pandas Series or Categorical (whose unused
    categories count 0). Plain values are counted by Arrow's hash kernel in C++: hashing a million
    Python strings in pandas costs more than all the drift tests together.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype):
        counts = pd.Series(values).value_counts(sort=True)
        return {str(k): int(v) for k, v in counts.items()}
    try:
        array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: pandas counts Python objects
        counts = pd.Series(values).value_counts(sort=True)
        return {str(k): int(v) for k, v in counts.items()}
    # value_counts lists values in order of first appearance; a stable sort keeps that order for ties,
    # as pandas does.
    pairs = [(row["values"], row["counts"]) for row in pc.value_counts(array).to_pylist()
             if row["values"] is not None]
    return {str(k): int(v) for k, v in sorted(pairs, key=lambda pair: -pair[1])}


def _aligned_counts(baseline: Mapping[str, int], current: Mapping[str, int]) -> tuple[list[str], np.ndarray]:
    categories = sorted(set(baseline) | set(current))
    table = np.array([[baseline.get(c, 0) for c in categories], [current.get(c, 0) for c in categories]],
                     dtype=np.float64)
    keep = table.sum(axis=0) > 0
    return [c for c, k in zip(categories, keep, strict=True) if k], table[:, keep]


def _biggest_share_change(categories: list[str], table: np.ndarray) -> str:
    shares = table / table.sum(axis=1, keepdims=True)
    change = shares[1] - shares[0]
    i = int(np.argmax(np.abs(change)))
    return f"{categories[i]!r} {shares[0, i]:.0%} -> {shares[1, i]:.0%}"


def chi_squared(baseline: Mapping[str, int], current: Mapping[str, int], p_threshold: float = 0.001,
                feature: str = "") -> DriftResult:
    """Chi-squared test of homogeneity on the 2 x K table of category counts."""
    from scipy.stats import chi2_contingency

    categories, table = _aligned_counts(baseline, current)
    n_base, n_cur = int(table[0].sum()), int(table[1].sum())
    if n_base == 0 or n_cur == 0:
        raise ValueError(f"chi-squared on {feature or 'a feature'}: empty sample (baseline {n_base}, "
                         f"current {n_cur})")
    if len(categories) < 2:
        return DriftResult("chi2", 0.0, 1.0, p_threshold, False, feature,
                           f"one category only ({categories[0]!r}) on both sides", n_base, n_cur)
    result = chi2_contingency(table, correction=False)
    statistic, p_value = float(result.statistic), float(result.pvalue)
    drifted = p_value < p_threshold
    explanation = (f"chi2 {statistic:.3g} on {len(categories) - 1} dof (p={p_value:.2g} "
                   f"{'<' if drifted else '>='} {p_threshold:g}); largest change {_biggest_share_change(categories, table)}")
    return DriftResult("chi2", statistic, p_value, p_threshold, drifted, feature, explanation, n_base, n_cur)


def jensen_shannon(baseline: Mapping[str, int], current: Mapping[str, int], threshold: float = 0.1,
                   feature: str = "") -> DriftResult:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the category shares."""
    categories, table = _aligned_counts(baseline, current)
    n_base, n_cur = int(table[0].sum()), int(table[1].sum())
    if n_base == 0 or n_cur == 0:
        raise ValueError(f"Jensen-Shannon on {feature or 'a feature'}: empty sample (baseline {n_base}, "
                         f"current {n_cur})")
    p, q = table[0] / n_base, table[1] / n_cur
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    distance = math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))
    drifted = distance > threshold
    explanation = (f"JS distance {distance:.3f} {'>' if drifted else '<='} {threshold:g}; largest change "
                   f"{_biggest_share_change(categories, table)}")
    return DriftResult("js", distance, None, threshold, drifted, feature, explanation, n_base, n_cur)


def two_proportion(baseline: tuple[int, int], current: tuple[int, int], p_threshold: float = 0.001,
                   feature: str = "") -> DriftResult:
    """Pooled two-proportion z-test (two-sided); the statistic is |z|."""
    from scipy.stats import norm

    (x1, n1), (x2, n2) = (tuple(int(v) for v in baseline), tuple(int(v) for v in current))
    for side, (x, n) in (("baseline", (x1, n1)), ("current", (x2, n2))):
        if n <= 0 or not 0 <= x <= n:
            raise ValueError(f"two-proportion test on {feature or 'a rate'}: {side} has {x} successes of {n} trials")
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = 0.0 if se == 0 else (p2 - p1) / se
    p_value = float(2 * norm.sf(abs(z)))
    drifted = p_value < p_threshold
    explanation = (f"rate {p2:.1%} ({x2}/{n2}) vs baseline {p1:.1%} ({x1}/{n1}), {100 * (p2 - p1):+.1f} pts, "
                   f"z={z:+.2f} (p={p_value:.2g} {'<' if drifted else '>='} {p_threshold:g})")
    return DriftResult("two_proportion", abs(z), p_value, p_threshold, drifted, feature, explanation, n1, n2)


def _subsample(rows: np.ndarray | Sequence, size: int, seed: int) -> np.ndarray | list:
    if len(rows) <= size:
        return rows
    picked = np.sort(np.random.default_rng(seed).choice(len(rows), size, replace=False))
    return rows[picked] if isinstance(rows, np.ndarray) else [rows[i] for i in picked]


def maximum_mean_discrepancy(baseline: np.ndarray, current: np.ndarray, p_threshold: float = 0.01,
                             permutations: int = 200, sample_size: int = 256, seed: int = 0,
                             feature: str = "") -> DriftResult:
    """MMD^2 (biased V-statistic) with the RBF kernel k(x, y) = exp(-|x - y|^2 / median pairwise |x - y|^2),
    and a permutation p-value ``(1 + #{permuted >= observed}) / (1 + permutations)``.

    Both samples are first cut to ``sample_size`` rows (seeded), so the cost is fixed whatever the traffic.
    With ``s`` the +1/n, -1/m label weights, MMD^2 = s^T K s: every permutation is one column of a matrix,
    so all of them cost one matrix product.
    """
    base = np.asarray(_subsample(np.asarray(baseline, dtype=np.float64), sample_size, seed))
    cur = np.asarray(_subsample(np.asarray(current, dtype=np.float64), sample_size, seed + 1))
    if base.ndim != 2 or cur.ndim != 2 or base.shape[1] != cur.shape[1] or len(base) < 2 or len(cur) < 2:
        raise ValueError(f"MMD on {feature or 'embeddings'}: need two (n, dim) arrays of the same dim with at "
                         f"least 2 rows each, got {base.shape} and {cur.shape}")
    pooled = np.vstack([base, cur])
    norms = np.sum(pooled ** 2, axis=1)
    distances = np.maximum(norms[:, None] + norms[None, :] - 2 * pooled @ pooled.T, 0)
    off_diagonal = distances[~np.eye(len(pooled), dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-distances / bandwidth)
    n, m = len(base), len(cur)
    labels = np.concatenate([np.full(n, 1 / n), np.full(m, -1 / m)])
    observed = float(labels @ kernel @ labels)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(labels) for _ in range(permutations)], axis=1)
    permuted = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)
    p_value = float((1 + np.sum(permuted >= observed - 1e-12)) / (1 + permutations))
    drifted = p_value < p_threshold
    explanation = (f"MMD^2 {observed:.4f} vs {np.median(permuted):.4f} median under shuffling (p={p_value:.2g} "
                   f"{'<' if drifted else '>='} {p_threshold:g}; {n} baseline, {m} current rows, "
                   f"{permutations} permutations)")
    return DriftResult("mmd", max(observed, 0.0), p_value, p_threshold, drifted, feature, explanation, n, m)


@dataclass
class PreparedFeature:
    """A feature ready for the detectors (numeric: a :class:`NumericSample`; embedding: vectors)."""

    kind: str
    data: Any
    size: int


def prepare(feature: Feature, name: str, embed: Callable[[list[str]], np.ndarray] | None = None,
            sample_size: int = 256, seed: int = 0) -> PreparedFeature:
    """Sort or count a numeric feature once; embed an embedding feature's texts (a fixed-size subsample)."""
    if feature.kind == "numeric":
        sample = NumericSample(feature.values, name)
        return PreparedFeature("numeric", sample, sample.n)
    if feature.kind == "embedding":
        values = feature.values
        if not isinstance(values, np.ndarray):
            if embed is None:
                raise ValueError(f"feature {name}: texts need an embed function to become vectors")
            values = embed(list(_subsample(list(values), sample_size, seed)))
        return PreparedFeature("embedding", np.asarray(values), len(values))
    return PreparedFeature(feature.kind, feature.values, feature.size)


def detect(name: str, baseline: PreparedFeature, current: PreparedFeature,
           thresholds: DriftThresholds = DriftThresholds()) -> list[DriftResult]:
    """Every detector that applies to the feature's kind, baseline against current."""
    if baseline.kind != current.kind:
        raise ValueError(f"feature {name}: baseline is {baseline.kind}, current is {current.kind}")
    t = thresholds
    if baseline.kind == "numeric":
        return [kolmogorov_smirnov(baseline.data, current.data, t.ks_p_value, name),
                psi_drift(baseline.data, current.data, t.psi, t.psi_bins, name)]
    if baseline.kind == "categorical":
        return [chi_squared(baseline.data, current.data, t.chi2_p_value, name),
                jensen_shannon(baseline.data, current.data, t.js_distance, name)]
    if baseline.kind == "rate":
        return [two_proportion(baseline.data, current.data, t.proportion_p_value, name)]
    return [maximum_mean_discrepancy(baseline.data, current.data, t.mmd_p_value, t.mmd_permutations,
                                     t.embedding_sample, t.seed, name)]


@dataclass(frozen=True)
class Detection:
    """What :func:`detect_all` found: the verdicts, the features skipped (with why), and each compared
    feature's prepared baseline and current samples (for plots)."""

    results: list[DriftResult]
    skipped: list[str]
    prepared: dict[str, tuple[PreparedFeature, PreparedFeature]]


def detect_all(baseline: Mapping[str, Feature], current: Mapping[str, Feature],
               thresholds: DriftThresholds = DriftThresholds(),
               embed: Callable[[list[str]], np.ndarray] | None = None) -> Detection:
    """Detectors on every feature present on both sides (an empty current sample counts as absent);
    embedding features are skipped when there is no ``embed`` function."""
    results: list[DriftResult] = []
    skipped: list[str] = []
    prepared: dict[str, tuple[PreparedFeature, PreparedFeature]] = {}
    for name in sorted(set(baseline) | set(current)):
        if name not in baseline:
            skipped.append(f"{name}: no baseline")
        elif name not in current or current[name].size == 0:
            skipped.append(f"{name}: no data today")
        elif baseline[name].kind == "embedding" and embed is None and not isinstance(current[name].values, np.ndarray):
            skipped.append(f"{name}: embedding drift is off")
        else:
            pair = (prepare(baseline[name], f"{name} baseline", embed, thresholds.embedding_sample, thresholds.seed),
                    prepare(current[name], f"{name} current", embed, thresholds.embedding_sample, thresholds.seed + 1))
            prepared[name] = pair
            results.extend(detect(name, *pair, thresholds))
    return Detection(results, skipped, prepared)


def drift_rows(day: Any, results: Sequence[DriftResult], baseline_id: str | Callable[[str], str]) -> list[dict]:
    """DRIFT_REPORTS rows, one per (detector, feature)."""
    return [{"day": day, "detector": r.detector, "feature": r.feature, "statistic": r.statistic,
             "p_value": r.p_value, "threshold": r.threshold, "drifted": r.drifted,
             "baseline_id": baseline_id(r.feature) if callable(baseline_id) else baseline_id,
             "num_current": r.num_current, "num_baseline": r.num_baseline, "explanation": r.explanation}
            for r in results]


def verdict_table(results: Sequence[DriftResult]) -> str:
    """A markdown table: one line per detector and feature, with its verdict and why."""
    lines = ["| feature | detector | statistic | p-value | threshold | verdict | why |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        p_value = "—" if r.p_value is None else f"{r.p_value:.2g}"
        verdict = "**DRIFT**" if r.drifted else "ok"
        lines.append(f"| {r.feature} | {r.detector} | {r.statistic:.4g} | {p_value} | {r.threshold:g} | {verdict} "
                     f"| {r.explanation.replace('|', '/')} |")
    return "\n".join(lines)
