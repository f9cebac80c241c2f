"""Every detector against an independent computation (scipy, statsmodels, by hand), and one sort (or one
count) per sample giving the same answers as the plain algorithms."""

import re

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp
from statsmodels.stats.proportion import proportions_ztest

from crucible.monitoring.drift import (
    DriftThresholds,
    Feature,
    NumericSample,
    chi_squared,
    detect_all,
    jensen_shannon,
    kolmogorov_smirnov,
    maximum_mean_discrepancy,
    population_stability_index,
    psi_drift,
    two_proportion,
    verdict_table,
)

rng = np.random.default_rng(7)


@pytest.mark.parametrize("make", [
    lambda: (rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)),              # exact p-value
    lambda: (rng.normal(0, 1, 20_000), rng.normal(0.02, 1, 15_000)),       # asymptotic p-value
    lambda: (rng.integers(0, 50, 30_000), rng.integers(0, 52, 12_000)),     # counted, not sorted
    lambda: (rng.integers(0, 50, 30_000), rng.normal(25, 9, 12_000)),       # counted against sorted
], ids=["small", "large", "integers", "mixed"])
def test_ks_matches_scipy(make):
    baseline, current = make()
    ours, theirs = kolmogorov_smirnov(baseline, current), ks_2samp(baseline, current)
    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-300)


def test_integer_samples_are_counted_and_give_the_sorted_answers():
    ints = rng.integers(3, 400, 50_000)
    counted, sorted_ = NumericSample(ints), NumericSample(ints.astype(float))
    assert counted.counts is not None and sorted_.counts is None
    qs = np.linspace(0, 1, 11)
    np.testing.assert_allclose(counted.quantiles(qs), np.quantile(ints, qs))
    edges = np.array([-np.inf, 2.5, 3, 10.2, 399, 1e9, np.inf])
    np.testing.assert_array_equal(counted.count_below(edges), sorted_.count_below(edges))
    current = rng.integers(0, 450, 20_000)
    assert population_stability_index(counted, NumericSample(current), 7) == pytest.approx(
        population_stability_index(sorted_, NumericSample(current.astype(float)), 7), abs=1e-12)


def test_psi_of_a_constant_baseline_uses_two_bins_and_ks_still_sees_the_shift():
    baseline, current = [5] * 100, [5] * 50 + [9] * 50
    # Edges (-inf, 5, inf): both samples lie wholly in [5, inf), so PSI sees nothing; KS does.
    psi = psi_drift(baseline, current, bins=5)
    assert psi.statistic == pytest.approx(0.0, abs=1e-12) and not psi.drifted and "of 2:" in psi.explanation
    assert kolmogorov_smirnov(baseline, current).drifted


def test_nan_values_are_refused_by_name():
    with pytest.raises(ValueError, match="latency baseline: 1 NaN values"):
        NumericSample([1.0, float("nan"), 2.0], "latency baseline")


def test_chi_squared_matches_scipy_and_names_the_biggest_change():
    baseline, current = {"a": 50, "b": 30, "c": 20}, {"a": 20, "b": 30, "c": 50, "d": 4}
    ours = chi_squared(baseline, current)
    table = np.array([[50, 30, 20, 0], [20, 30, 50, 4]])
    theirs = chi2_contingency(table, correction=False)
    assert ours.statistic == pytest.approx(theirs.statistic) and ours.p_value == pytest.approx(theirs.pvalue)
    assert ours.drifted and "largest change 'a' 50% -> 19%" in ours.explanation


def test_jensen_shannon_matches_scipy():
    baseline, current = {"x": 70, "y": 30}, {"x": 40, "y": 50, "z": 10}
    expected = jensenshannon([0.7, 0.3, 0.0], [0.4, 0.5, 0.1], base=2)
    result = jensen_shannon(baseline, current, threshold=0.1)
    assert result.statistic == pytest.approx(expected) and result.drifted
    assert jensen_shannon(baseline, baseline).statistic == pytest.approx(0.0, abs=1e-7)


def test_two_proportion_matches_statsmodels():
    z, p = proportions_ztest([12, 30], [200, 180])
    result = two_proportion((12, 200), (30, 180))
    assert result.statistic == pytest.approx(abs(z)) and result.p_value == pytest.approx(p)
    assert result.drifted and "16.7% (30/180) vs baseline 6.0% (12/200)" in result.explanation
    with pytest.raises(ValueError, match="thumbs: current has 5 successes of 3 trials"):
        two_proportion((1, 10), (5, 3), feature="thumbs")


def test_mmd_flags_a_shift_and_not_noise():
    base = rng.normal(size=(400, 24))
    same = maximum_mean_discrepancy(base, rng.normal(size=(60, 24)), seed=1)
    shifted = maximum_mean_discrepancy(base, rng.normal(size=(60, 24)) + 0.6, seed=1)
    assert not same.drifted and same.p_value > 0.05
    assert shifted.drifted and shifted.p_value == pytest.approx(1 / 201)
    assert shifted.num_baseline == 256  # cut to the fixed sample size


def test_ks_and_psi_on_a_shift_explain_the_medians():
    ks = kolmogorov_smirnov(rng.normal(40, 8, 2000), rng.normal(90, 8, 300), feature="prompt_length_words")
    assert ks.drifted and re.search(r"median (8|9)\d\.\d+ vs baseline (3|4)\d\.\d+$", ks.explanation)


def test_detect_all_runs_the_detectors_of_each_kind_and_says_what_it_skipped():
    baseline = {"length": Feature("numeric", rng.integers(5, 30, 500)), "kind": Feature("categorical", {"a": 9}),
                "rate": Feature("rate", (5, 100)), "only_baseline": Feature("numeric", [1, 2, 3]),
                "prompt_embedding": Feature("embedding", ["a text"])}
    current = {"length": Feature("numeric", rng.integers(5, 30, 80)), "kind": Feature("categorical", {"a": 3, "b": 4}),
               "rate": Feature("rate", (40, 100)), "prompt_embedding": Feature("embedding", ["other"]),
               "new": Feature("numeric", [1.0])}
    detection = detect_all(baseline, current, DriftThresholds())
    assert sorted((r.feature, r.detector) for r in detection.results) == [
        ("kind", "chi2"), ("kind", "js"), ("length", "ks"), ("length", "psi"), ("rate", "two_proportion")]
    assert detection.skipped == ["new: no baseline", "only_baseline: no data today",
                                 "prompt_embedding: embedding drift is off"]
    table = verdict_table(detection.results)
    assert table.count("\n") == 6 and "| rate | two_proportion |" in table and "**DRIFT**" in table
