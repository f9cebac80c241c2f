"""The promotion gate: block a candidate that is significantly worse than production on a gated benchmark."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd

from crucible.evaluate.compare import (
    MCNEMAR_EXACT_BELOW,
    TEST_LABELS,
    BenchmarkComparison,
    ComparisonResult,
    ContinuousTest,
    ScoreKind,
    compare_versions,
)


class BlockedBenchmark(NamedTuple):
    """A gated benchmark on which the candidate is significantly worse than production."""

    benchmark: str
    difference: float  # candidate mean - production mean (negative)
    ci: tuple[float, float]
    p_value: float
    adjusted_p: float
    test: str


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may be promoted; ``reasons`` says why, with the numbers."""

    passed: bool
    blocked: list[BlockedBenchmark]
    reasons: str
    comparison: ComparisonResult | None = None


def gate_decision(candidate_rows: pd.DataFrame, production_rows: pd.DataFrame | None,
                  gated_benchmarks: Mapping[str, ScoreKind], alpha: float = 0.05, min_effect: float = 0.0, *,
                  score_column: str = "score", ci_level: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                  continuous_test: ContinuousTest = "paired_t",
                  mcnemar_exact_below: int = MCNEMAR_EXACT_BELOW) -> GateDecision:
    """Block the candidate on each gated benchmark (benchmark -> score kind) where it is worse than
    production by more than ``min_effect`` (candidate - production < -min_effect) and the Holm-adjusted
    p-value over the gated benchmarks is <= ``alpha``. No production rows (None or empty): pass.
    Missing or malformed rows raise ValueError (see ``compare_versions``) rather than pass silently.
    """
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0 (a margin of tolerated regression), got {min_effect}")
    if production_rows is None or production_rows.empty:
        version = _version_name(candidate_rows)
        return GateDecision(True, [], f"passed: no production version to compare {version} against, "
                                      "so there is nothing it could regress from")
    comparison = compare_versions(
        production_rows, candidate_rows, gated_benchmarks, score_column=score_column, alpha=alpha,
        ci_level=ci_level, n_resamples=n_resamples, seed=seed, continuous_test=continuous_test,
        mcnemar_exact_below=mcnemar_exact_below)
    failing = [c for c in comparison.benchmarks if c.reject and c.difference < -min_effect]
    blocked = [BlockedBenchmark(c.benchmark, c.difference, (c.ci_low, c.ci_high), c.test.p_value,
                                c.adjusted_p, c.test.name) for c in failing]
    return GateDecision(not blocked, blocked, _reasons(comparison, failing, min_effect), comparison)


def _reasons(comparison: ComparisonResult, failing: list[BenchmarkComparison], min_effect: float) -> str:
    who = f"candidate {comparison.candidate_version} vs production {comparison.baseline_version}"
    rule = f"Holm-adjusted p <= {comparison.alpha:g} and difference < {-min_effect if min_effect else 0:g}"
    level = f"{comparison.ci_level:.0%}"
    if failing:
        lines = [f"blocked: {who} is significantly worse on {len(failing)} gated benchmark(s) ({rule}):"]
        lines += [f"- {c.benchmark}: candidate {c.candidate_mean:.4f} vs production {c.baseline_mean:.4f}, difference "
                  f"{c.difference:+.4f} ({level} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}]), "
                  f"{TEST_LABELS[c.test.name]} p={c.test.p_value:.4g}, adjusted p={c.adjusted_p:.4g}, "
                  f"n={c.n_paired}" for c in failing]
        return "\n".join(lines)
    lines = [f"passed: {who} is not significantly worse on any of {len(comparison.benchmarks)} "
             f"gated benchmark(s) ({rule} blocks):"]
    lines += [f"- {c.benchmark}: difference {c.difference:+.4f} ({level} CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}]), "
              f"{TEST_LABELS[c.test.name]} p={c.test.p_value:.4g}, adjusted p={c.adjusted_p:.4g}, "
              f"n={c.n_paired} ({c.verdict}{', within min_effect' if c.verdict == 'worse' else ''})"
              for c in comparison.benchmarks]
    return "\n".join(lines)


def _version_name(rows: pd.DataFrame) -> str:
    if "model_version" in rows.columns and rows["model_version"].nunique() == 1:
        return str(rows["model_version"].iloc[0])
    return "the candidate"
