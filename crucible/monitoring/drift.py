"""Drift detectors comparing a feature's current distribution with a baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DriftResult:
    detector: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool


def population_stability_index(baseline: Sequence[float], current: Sequence[float], bins: int = 10,
                               smoothing: float = 0.5) -> float:
    """PSI = sum_i (c_i - b_i) * ln(c_i / b_i) over quantile bins of the baseline.

    Bin edges are the baseline's quantiles (each baseline bin holds ~1/bins of the mass). Shares
    are additively smoothed, ``(count + smoothing) / (n + smoothing * bins)``, so that an empty
    bin in a small daily sample adds a bounded term instead of an ``ln(epsilon)`` blow-up.
    """
    base = np.asarray(baseline, dtype=float)
    cur = np.asarray(current, dtype=float)
    if base.size == 0 or cur.size == 0:
        raise ValueError(f"PSI needs non-empty samples (baseline {base.size}, current {cur.size})")
    edges = np.unique(np.quantile(base, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    if edges.size < 3:
        edges = np.array([-np.inf, float(base[0]), np.inf])
    k = edges.size - 1
    b = (np.histogram(base, edges)[0] + smoothing) / (base.size + smoothing * k)
    c = (np.histogram(cur, edges)[0] + smoothing) / (cur.size + smoothing * k)
    return float(np.sum((c - b) * np.log(c / b)))


def kolmogorov_smirnov(baseline: Sequence[float], current: Sequence[float], p_threshold: float = 0.01) -> DriftResult:
    """Two-sample KS test; drift when the p-value falls below ``p_threshold``."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(baseline, dtype=float), np.asarray(current, dtype=float))
    p_value = float(result.pvalue)
    return DriftResult("ks", float(result.statistic), p_value, p_threshold, p_value < p_threshold)


def psi_drift(baseline: Sequence[float], current: Sequence[float], threshold: float = 0.25,
              bins: int = 10) -> DriftResult:
    """PSI drift: by the usual reading, < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant."""
    psi = population_stability_index(baseline, current, bins)
    return DriftResult("psi", psi, None, threshold, psi > threshold)


def daily_drift_rows(day, baseline: Sequence[float], current: Sequence[float], baseline_id: str, feature: str,
                     psi_threshold: float = 0.25, ks_p_threshold: float = 0.001, psi_bins: int = 10) -> list[dict]:
    """One drift-report row per detector (KS, PSI) for one day's values of ``feature``."""
    results = [kolmogorov_smirnov(baseline, current, ks_p_threshold),
               psi_drift(baseline, current, psi_threshold, psi_bins)]
    return [{"day": day, "detector": r.detector, "feature": feature, "statistic": r.statistic,
             "p_value": r.p_value, "threshold": r.threshold, "drifted": r.drifted, "baseline_id": baseline_id,
             "num_current": len(current), "num_baseline": len(baseline)} for r in results]
