"""Paired statistical comparison of two model versions on the same benchmark items."""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

ScoreKind = Literal["binary", "continuous"]
ContinuousTest = Literal["paired_t", "wilcoxon"]

REQUIRED_COLUMNS = ("model_version", "benchmark", "example_id", "sample")
# Below this many discordant pairs the chi-square approximation to McNemar is poor (a common rule of thumb).
MCNEMAR_EXACT_BELOW = 25
# Human-readable names of the tests, for reports and gate reasons.
TEST_LABELS = {"mcnemar_exact": "McNemar exact", "mcnemar_chi2_cc": "McNemar chi2 (cc)",
               "paired_t": "paired t", "wilcoxon": "Wilcoxon signed-rank"}
# Bound the bootstrap's index matrix to ~4M entries per chunk so large benchmarks stay within memory.
_BOOTSTRAP_CHUNK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class SignificanceTest:
    """One hypothesis test of "no difference": its name, statistic, two-sided p-value and any caveat."""

    name: str  # mcnemar_exact | mcnemar_chi2_cc | paired_t | wilcoxon
    statistic: float
    p_value: float
    note: str = ""


@dataclass(frozen=True)
class BenchmarkComparison:
    """Candidate versus baseline on one benchmark, over the items both versions were scored on.

    ``difference`` is candidate mean minus baseline mean; ``test`` is the test whose p-value enters
    the Holm correction, ``secondary_test`` the other paired test for continuous scores.
    For binary scores ``n_baseline_only`` counts items the baseline got right and the candidate wrong,
    ``n_candidate_only`` the reverse (the discordant pairs McNemar uses).
    """

    benchmark: str
    kind: ScoreKind
    n_paired: int
    n_unpaired_baseline: int
    n_unpaired_candidate: int
    baseline_mean: float
    candidate_mean: float
    difference: float
    ci_low: float
    ci_high: float
    test: SignificanceTest
    secondary_test: SignificanceTest | None
    cohens_dz: float
    adjusted_p: float
    reject: bool
    n_baseline_only: int | None = None
    n_candidate_only: int | None = None
    odds_ratio: float | None = None
    risk_difference: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        """``better``/``worse`` when the Holm-adjusted test rejects, else ``no significant difference``."""
        if not self.reject or self.difference == 0:
            return "no significant difference"
        return "better" if self.difference > 0 else "worse"


@dataclass(frozen=True)
class ComparisonResult:
    """All benchmarks of one candidate-versus-baseline comparison, Holm-corrected together."""

    baseline_version: str
    candidate_version: str
    benchmarks: tuple[BenchmarkComparison, ...]
    alpha: float
    ci_level: float
    n_resamples: int
    seed: int
    correction: str = "holm"

    def get(self, benchmark: str) -> BenchmarkComparison:
        for comparison in self.benchmarks:
            if comparison.benchmark == benchmark:
                return comparison
        raise KeyError(f"no comparison for benchmark {benchmark!r}; compared: "
                       f"{[c.benchmark for c in self.benchmarks]}")


def compare_versions(baseline_rows: pd.DataFrame, candidate_rows: pd.DataFrame,
                     kinds: Mapping[str, ScoreKind], *, score_column: str = "score", alpha: float = 0.05,
                     ci_level: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                     continuous_test: ContinuousTest = "paired_t",
                     mcnemar_exact_below: int = MCNEMAR_EXACT_BELOW) -> ComparisonResult:
    """Compare a candidate with a baseline on every benchmark in ``kinds`` (benchmark -> score kind).

    Each frame holds the per-example rows of one model version. Samples are averaged per example
    (pass@1 over n samples is such a mean), then items are paired on (benchmark, example_id); items
    scored by only one version are counted and left out. Rows of benchmarks not in ``kinds`` are ignored.
    Binary benchmarks use McNemar (exact binomial below ``mcnemar_exact_below`` discordant pairs,
    chi-square with continuity correction otherwise); a binary benchmark with several samples per
    item averages to fractions and falls back to the continuous tests, which the result notes.
    P-values are Holm-corrected across the benchmarks compared; ``reject`` means adjusted p <= alpha.
    """
    if not kinds:
        raise ValueError("compare_versions: no benchmarks to compare; pass kinds={benchmark: 'binary'|'continuous'}")
    for benchmark, kind in kinds.items():
        if kind not in ("binary", "continuous"):
            raise ValueError(f"benchmark {benchmark!r}: kind {kind!r} is not 'binary' or 'continuous'")
    if continuous_test not in ("paired_t", "wilcoxon"):
        raise ValueError(f"continuous_test {continuous_test!r} is not 'paired_t' or 'wilcoxon'")
    if not 0 < ci_level < 1 or not 0 < alpha < 1:
        raise ValueError(f"ci_level ({ci_level}) and alpha ({alpha}) must lie strictly between 0 and 1")
    baseline_version = _single_version(baseline_rows, "baseline", score_column)
    candidate_version = _single_version(candidate_rows, "candidate", score_column)
    base_items = _per_item_scores(baseline_rows, kinds, score_column, baseline_version)
    cand_items = _per_item_scores(candidate_rows, kinds, score_column, candidate_version)

    unadjusted = []
    for benchmark, kind in kinds.items():
        base = base_items.get(benchmark, pd.Series(dtype=float))
        cand = cand_items.get(benchmark, pd.Series(dtype=float))
        paired = pd.concat({"baseline": base, "candidate": cand}, axis=1, join="inner").sort_index()
        if paired.empty:
            raise ValueError(
                f"benchmark {benchmark!r}: no example scored by both {baseline_version!r} ({len(base)} items) "
                f"and {candidate_version!r} ({len(cand)} items); evaluate both versions on the same examples")
        rng = np.random.default_rng([seed, zlib.crc32(benchmark.encode())])
        unadjusted.append(_compare_benchmark(
            benchmark, kind, paired["baseline"].to_numpy(float), paired["candidate"].to_numpy(float),
            n_unpaired_baseline=len(base) - len(paired), n_unpaired_candidate=len(cand) - len(paired),
            rng=rng, n_resamples=n_resamples, ci_level=ci_level, continuous_test=continuous_test,
            mcnemar_exact_below=mcnemar_exact_below))

    adjusted, reject = holm_adjust([c["test"].p_value for c in unadjusted], alpha)
    comparisons = tuple(BenchmarkComparison(**fields, adjusted_p=float(p), reject=bool(r))
                        for fields, p, r in zip(unadjusted, adjusted, reject, strict=True))
    return ComparisonResult(baseline_version=baseline_version, candidate_version=candidate_version,
                            benchmarks=comparisons, alpha=alpha, ci_level=ci_level, n_resamples=n_resamples,
                            seed=seed)


def holm_adjust(p_values: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down adjusted p-values (in input order) and reject flags (adjusted p <= alpha)."""
    p = np.asarray(p_values, dtype=float)
    if np.isnan(p).any():
        raise ValueError(f"holm_adjust: p-values contain NaN: {p.tolist()}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(scaled))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted, adjusted <= alpha


def paired_bootstrap_ci(differences: np.ndarray, rng: np.random.Generator, n_resamples: int = 2000,
                        ci_level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean paired difference: resample items (pairs) with replacement."""
    d = np.asarray(differences, dtype=float)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if d.size == 0:
        raise ValueError("paired_bootstrap_ci: no paired differences")
    means = np.empty(n_resamples)
    chunk = max(1, _BOOTSTRAP_CHUNK_ENTRIES // d.size)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        means[start:stop] = d[rng.integers(0, d.size, size=(stop - start, d.size))].mean(axis=1)
    tail = 100 * (1 - ci_level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_test(n_baseline_only: int, n_candidate_only: int,
                 exact_below: int = MCNEMAR_EXACT_BELOW) -> SignificanceTest:
    """McNemar's test on the discordant pairs: exact binomial below ``exact_below`` discordant pairs,
    else chi-square with Edwards' continuity correction, (|b - c| - 1)^2 / (b + c) on 1 df."""
    from scipy import stats

    b, c = n_baseline_only, n_candidate_only
    discordant = b + c
    if discordant == 0:
        return SignificanceTest("mcnemar_exact", 0.0, 1.0,
                                "no discordant pairs: both versions are right or wrong on the same items")
    if discordant < exact_below:
        p = stats.binomtest(min(b, c), discordant, 0.5).pvalue
        return SignificanceTest("mcnemar_exact", float(min(b, c)), float(p),
                                f"exact binomial test: {discordant} discordant pairs < {exact_below}")
    statistic = (abs(b - c) - 1) ** 2 / discordant
    return SignificanceTest("mcnemar_chi2_cc", float(statistic), float(stats.chi2.sf(statistic, df=1)),
                            f"chi-square with continuity correction: {discordant} discordant pairs")


def paired_t_test(baseline: np.ndarray, candidate: np.ndarray) -> SignificanceTest:
    """Paired t-test of candidate - baseline; degenerate inputs get a defined answer and a note."""
    from scipy import stats

    d = np.asarray(candidate, float) - np.asarray(baseline, float)
    if d.size < 2:
        return SignificanceTest("paired_t", math.nan, 1.0, f"{d.size} paired item: a t-test needs at least 2")
    if np.all(d == 0):
        return SignificanceTest("paired_t", 0.0, 1.0, "all paired differences are zero")
    if _is_constant(d):
        return SignificanceTest("paired_t", math.copysign(math.inf, d[0]), 0.0,
                                "all paired differences are equal and non-zero: the t statistic is unbounded")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.ttest_rel(candidate, baseline)
    return SignificanceTest("paired_t", float(result.statistic), float(result.pvalue), _warning_note(caught))


def wilcoxon_test(baseline: np.ndarray, candidate: np.ndarray) -> SignificanceTest:
    """Wilcoxon signed-rank test of candidate - baseline (scipy defaults: zero differences dropped,
    exact distribution for small samples without ties, normal approximation otherwise)."""
    from scipy import stats

    d = np.asarray(candidate, float) - np.asarray(baseline, float)
    if np.all(d == 0):
        return SignificanceTest("wilcoxon", 0.0, 1.0, "all paired differences are zero")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.wilcoxon(d)
    note = _warning_note(caught)
    if (d == 0).any():
        note = "; ".join(filter(None, [f"{int((d == 0).sum())} zero differences dropped", note]))
    return SignificanceTest("wilcoxon", float(result.statistic), float(result.pvalue), note)


def cohens_dz(differences: np.ndarray) -> float:
    """Standardised mean paired difference: mean(d) / sd(d) (sample sd, ddof=1)."""
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0 or _is_constant(d):
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / sd


def _compare_benchmark(benchmark: str, kind: ScoreKind, baseline: np.ndarray, candidate: np.ndarray, *,
                       n_unpaired_baseline: int, n_unpaired_candidate: int, rng: np.random.Generator,
                       n_resamples: int, ci_level: float, continuous_test: ContinuousTest,
                       mcnemar_exact_below: int) -> dict:
    d = candidate - baseline
    ci_low, ci_high = paired_bootstrap_ci(d, rng, n_resamples, ci_level)
    fields: dict = dict(
        benchmark=benchmark, kind=kind, n_paired=int(d.size), n_unpaired_baseline=int(n_unpaired_baseline),
        n_unpaired_candidate=int(n_unpaired_candidate), baseline_mean=float(baseline.mean()),
        candidate_mean=float(candidate.mean()), difference=float(d.mean()), ci_low=ci_low, ci_high=ci_high,
        cohens_dz=cohens_dz(d))
    notes = []
    is_zero_one = bool(np.isin(baseline, (0.0, 1.0)).all() and np.isin(candidate, (0.0, 1.0)).all())
    if kind == "binary" and is_zero_one:
        b = int(((baseline == 1) & (candidate == 0)).sum())
        c = int(((baseline == 0) & (candidate == 1)).sum())
        test = mcnemar_test(b, c, mcnemar_exact_below)
        odds_ratio = c / b if b else (math.inf if c else math.nan)
        return fields | dict(test=test, secondary_test=None, n_baseline_only=b, n_candidate_only=c,
                             odds_ratio=odds_ratio, risk_difference=(c - b) / d.size, notes=tuple(notes))
    if kind == "binary":
        notes.append("binary scores average to fractions over several samples per item: "
                     "McNemar needs one 0/1 outcome per item, so the continuous paired tests are used")
    t_test, w_test = paired_t_test(baseline, candidate), wilcoxon_test(baseline, candidate)
    test, secondary = (t_test, w_test) if continuous_test == "paired_t" else (w_test, t_test)
    return fields | dict(test=test, secondary_test=secondary, notes=tuple(notes))


def _single_version(rows: pd.DataFrame, role: str, score_column: str) -> str:
    missing = [c for c in (*REQUIRED_COLUMNS, score_column) if c not in rows.columns]
    if missing:
        raise ValueError(f"{role} rows lack columns {missing}; expected {[*REQUIRED_COLUMNS, score_column]} "
                         "(pass score_column= to name the score column)")
    versions = rows["model_version"].unique().tolist()
    if len(versions) != 1:
        raise ValueError(f"{role} rows must hold exactly one model_version, found {versions}")
    return str(versions[0])


def _per_item_scores(rows: pd.DataFrame, kinds: Mapping[str, ScoreKind], score_column: str,
                     version: str) -> dict[str, pd.Series]:
    """Mean score per example (over samples), one Series indexed by example_id per benchmark."""
    rows = rows[rows["benchmark"].isin(list(kinds))]
    duplicated = rows.duplicated(["benchmark", "example_id", "sample"])
    if duplicated.any():
        first = rows[duplicated].iloc[0]
        raise ValueError(f"model {version!r} benchmark {first['benchmark']!r} example {first['example_id']!r} "
                         f"sample {first['sample']}: scored more than once; deduplicate the results")
    scores = pd.to_numeric(rows[score_column], errors="coerce").astype(float)
    if scores.isna().any():
        first = rows[scores.isna()].iloc[0]
        raise ValueError(f"model {version!r} benchmark {first['benchmark']!r} example {first['example_id']!r}: "
                         f"{score_column}={first[score_column]} is missing or not a number; "
                         "score every example or drop it from both versions")
    binary = rows["benchmark"].map(dict(kinds)) == "binary"
    bad = binary & ~scores.isin((0.0, 1.0))
    if bad.any():
        first = rows[bad].iloc[0]
        raise ValueError(f"model {version!r} benchmark {first['benchmark']!r} example {first['example_id']!r}: "
                         f"{score_column}={scores[bad].iloc[0]} but the benchmark is declared binary (0/1); "
                         "declare it 'continuous' or fix the scorer")
    means = scores.groupby([rows["benchmark"], rows["example_id"].astype(str)]).mean()
    return {str(benchmark): group.droplevel(0) for benchmark, group in means.groupby(level=0)}


def _is_constant(d: np.ndarray) -> bool:
    """Equal up to float rounding: (x + 0.25) - x is not exactly 0.25 for every x."""
    return bool(np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())))


def _warning_note(caught: list[warnings.WarningMessage]) -> str:
    return "; ".join(f"scipy warned: {w.message}" for w in caught)
