"""The paired comparison against scipy and statsmodels, the bootstrap CI, and input handling."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from crucible.evaluate.compare import compare_versions, holm_adjust, paired_bootstrap_ci

TOL = 1e-10


def _compare(make_rows, base: dict, cand: dict, kinds: dict, **kwargs):
    return compare_versions(make_rows("v1", base), make_rows("v2", cand), kinds, **kwargs)


def test_binary_few_discordant_pairs_use_exact_mcnemar(make_rows, make_binary_pair):
    base, cand = make_binary_pair(both=50, baseline_only=3, candidate_only=9, neither=20)
    result = _compare(make_rows, {"mmlu": base}, {"mmlu": cand}, {"mmlu": "binary"})
    c = result.get("mmlu")
    reference = mcnemar([[50, 3], [9, 20]], exact=True)
    assert c.test.name == "mcnemar_exact" and "12 discordant pairs" in c.test.note
    assert c.test.p_value == pytest.approx(reference.pvalue, abs=TOL)
    assert c.test.p_value == pytest.approx(stats.binomtest(3, 12, 0.5).pvalue, abs=TOL)
    assert c.test.statistic == reference.statistic == 3
    assert (c.n_baseline_only, c.n_candidate_only, c.n_paired) == (3, 9, 82)
    assert c.odds_ratio == pytest.approx(9 / 3)
    assert c.risk_difference == pytest.approx(6 / 82, abs=TOL)
    assert c.difference == pytest.approx(cand.mean() - base.mean(), abs=TOL)
    assert (c.baseline_mean, c.candidate_mean) == (pytest.approx(53 / 82), pytest.approx(59 / 82))
    d = cand - base
    assert c.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1), abs=TOL)
    assert c.secondary_test is None


def test_binary_many_discordant_pairs_use_corrected_chi_square(make_rows, make_binary_pair):
    base, cand = make_binary_pair(both=100, baseline_only=30, candidate_only=12, neither=40)
    c = _compare(make_rows, {"mmlu": base}, {"mmlu": cand}, {"mmlu": "binary"}).get("mmlu")
    reference = mcnemar([[100, 30], [12, 40]], exact=False, correction=True)
    hand = (abs(30 - 12) - 1) ** 2 / 42
    assert c.test.name == "mcnemar_chi2_cc"
    assert c.test.statistic == pytest.approx(hand, abs=TOL)
    assert c.test.statistic == pytest.approx(reference.statistic, abs=TOL)
    assert c.test.p_value == pytest.approx(stats.chi2.sf(hand, df=1), abs=TOL)
    assert c.test.p_value == pytest.approx(reference.pvalue, abs=TOL)
    assert c.odds_ratio == pytest.approx(12 / 30)
    assert c.difference == pytest.approx(-18 / 182, abs=TOL)


def test_continuous_scores_match_scipy_paired_t_and_wilcoxon(make_rows):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.8, 40)
    cand = np.clip(base + rng.normal(0.03, 0.1, 40), 0, 1)
    kinds = {"norobots": "continuous"}
    c = _compare(make_rows, {"norobots": base}, {"norobots": cand}, kinds).get("norobots")
    t, w = stats.ttest_rel(cand, base), stats.wilcoxon(cand - base)
    assert c.test.name == "paired_t" and c.secondary_test.name == "wilcoxon"
    assert (c.test.statistic, c.test.p_value) == (pytest.approx(t.statistic, abs=TOL), pytest.approx(t.pvalue, abs=TOL))
    assert c.secondary_test.statistic == pytest.approx(w.statistic, abs=TOL)
    assert c.secondary_test.p_value == pytest.approx(w.pvalue, abs=TOL)
    d = cand - base
    assert c.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1), abs=TOL)
    assert c.odds_ratio is None and c.n_baseline_only is None

    swapped = _compare(make_rows, {"norobots": base}, {"norobots": cand}, kinds,
                       continuous_test="wilcoxon").get("norobots")
    assert swapped.test.name == "wilcoxon" and swapped.test.p_value == pytest.approx(w.pvalue, abs=TOL)
    assert swapped.secondary_test.name == "paired_t"


def test_zero_and_tied_differences_match_scipy_and_note_the_dropped_zeros(make_rows):
    base = np.array([0.5, 0.5, 0.2, 0.4, 0.1, 0.3, 0.6, 0.6, 0.7, 0.2])
    cand = base + np.array([0.0, 0.0, 0.1, 0.1, 0.1, -0.1, 0.2, 0.0, 0.1, 0.2])
    c = _compare(make_rows, {"nr": base}, {"nr": cand}, {"nr": "continuous"}).get("nr")
    w = stats.wilcoxon(cand - base)
    assert c.secondary_test.p_value == pytest.approx(w.pvalue, abs=TOL)
    assert "3 zero differences dropped" in c.secondary_test.note
    assert c.test.p_value == pytest.approx(stats.ttest_rel(cand, base).pvalue, abs=TOL)


def test_identical_scores_give_p_one_with_a_reason(make_rows, make_binary_pair):
    scores = np.linspace(0, 1, 12)
    base, cand = make_binary_pair(both=10, baseline_only=0, candidate_only=0, neither=5)
    result = _compare(make_rows, {"nr": scores, "mmlu": base}, {"nr": scores, "mmlu": cand},
                      {"nr": "continuous", "mmlu": "binary"})
    nr, mmlu = result.get("nr"), result.get("mmlu")
    assert nr.test.p_value == nr.secondary_test.p_value == 1.0
    assert "all paired differences are zero" in nr.test.note
    assert "all paired differences are zero" in nr.secondary_test.note
    assert nr.cohens_dz == 0.0 and (nr.ci_low, nr.ci_high) == (0.0, 0.0)
    assert mmlu.test.p_value == 1.0 and "no discordant pairs" in mmlu.test.note
    assert math.isnan(mmlu.odds_ratio)
    assert not nr.reject and not mmlu.reject and nr.adjusted_p == mmlu.adjusted_p == 1.0


def test_constant_nonzero_difference_is_reported_not_crashed(make_rows):
    base = np.linspace(0, 0.5, 8)
    c = _compare(make_rows, {"nr": base}, {"nr": base + 0.25}, {"nr": "continuous"}).get("nr")
    assert c.test.p_value == 0.0 and c.test.statistic == math.inf and "unbounded" in c.test.note
    assert c.cohens_dz == math.inf
    assert c.ci_low == pytest.approx(0.25) and c.ci_high == pytest.approx(0.25)


@pytest.mark.parametrize("p_values", [
    [0.01, 0.04, 0.03, 0.2, 0.001],
    [0.02, 0.02, 0.5, 1.0],
    [0.049],
    list(np.random.default_rng(0).uniform(0, 0.1, 15)),
])
def test_holm_matches_statsmodels(p_values):
    reject, corrected, _, _ = multipletests(p_values, alpha=0.05, method="holm")
    adjusted, ours = holm_adjust(p_values, alpha=0.05)
    np.testing.assert_allclose(adjusted, corrected, atol=TOL, rtol=0)
    np.testing.assert_array_equal(ours, reject)


def test_holm_is_applied_across_benchmarks(make_rows, make_binary_pair):
    rng = np.random.default_rng(5)
    mmlu = make_binary_pair(both=60, baseline_only=4, candidate_only=14, neither=30)
    gsm = make_binary_pair(both=40, baseline_only=20, candidate_only=8, neither=30)
    nr_base = rng.uniform(0, 1, 30)
    nr_cand = np.clip(nr_base + rng.normal(0.05, 0.1, 30), 0, 1)
    result = _compare(make_rows, {"mmlu": mmlu[0], "gsm8k": gsm[0], "norobots": nr_base},
                      {"mmlu": mmlu[1], "gsm8k": gsm[1], "norobots": nr_cand},
                      {"mmlu": "binary", "gsm8k": "binary", "norobots": "continuous"}, alpha=0.05)
    raw = [c.test.p_value for c in result.benchmarks]
    reject, corrected, _, _ = multipletests(raw, alpha=0.05, method="holm")
    np.testing.assert_allclose([c.adjusted_p for c in result.benchmarks], corrected, atol=TOL, rtol=0)
    assert [c.reject for c in result.benchmarks] == list(reject)
    assert [c.benchmark for c in result.benchmarks] == ["mmlu", "gsm8k", "norobots"]


def test_samples_are_averaged_per_item_and_unpaired_items_counted(make_rows):
    base = make_rows("v1", {"humaneval": np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])})
    cand = make_rows("v2", {"humaneval": np.array([[1, 1, 1, 1], [0, 1, 0, 0], [1, 1, 1, 0]])})
    base = base[base["example_id"] != "ex0"]  # ex0 scored only by the candidate, ex3 only by the baseline
    c = compare_versions(base, cand, {"humaneval": "binary"}).get("humaneval")
    assert (c.n_paired, c.n_unpaired_baseline, c.n_unpaired_candidate) == (2, 1, 1)
    assert c.baseline_mean == pytest.approx((0.0 + 1.0) / 2)
    assert c.candidate_mean == pytest.approx((0.25 + 0.75) / 2)
    assert c.test.name == "paired_t" and "several samples per item" in c.notes[0]
    assert c.test.p_value == pytest.approx(stats.ttest_rel([0.25, 0.75], [0.0, 1.0]).pvalue, abs=TOL)


def test_benchmarks_outside_kinds_are_ignored(make_rows):
    result = _compare(make_rows, {"a": [1, 0, 1], "other": [0.3, 0.4]}, {"a": [1, 1, 1], "other": [0.1, 0.2]},
                      {"a": "binary"})
    assert [c.benchmark for c in result.benchmarks] == ["a"]


def test_bootstrap_ci_is_seeded_and_order_independent(make_rows):
    rng = np.random.default_rng(1)
    base, cand = rng.uniform(0, 1, (2, 50))
    kinds = {"a": "continuous", "b": "continuous"}
    first = _compare(make_rows, {"a": base, "b": cand}, {"a": cand, "b": base}, kinds, seed=7)
    again = _compare(make_rows, {"b": cand, "a": base}, {"b": base, "a": cand}, dict(reversed(kinds.items())), seed=7)
    other = _compare(make_rows, {"a": base, "b": cand}, {"a": cand, "b": base}, kinds, seed=8)
    for name in kinds:
        assert (first.get(name).ci_low, first.get(name).ci_high) == (again.get(name).ci_low, again.get(name).ci_high)
        assert (first.get(name).ci_low, first.get(name).ci_high) != (other.get(name).ci_low, other.get(name).ci_high)
        assert first.get(name).ci_low < first.get(name).difference < first.get(name).ci_high


def test_bootstrap_percentiles_match_a_hand_computed_distribution():
    # Resampling 3 items with differences (0, 0, 3): the mean is K, K ~ Binomial(3, 1/3), so
    # P(mean <= 0) = 8/27 = 0.30, P(mean <= 2) = 26/27 = 0.963. The 2.5th and 5th percentiles are
    # therefore 0, the 95th is 2 (0.963 >= 0.95) and the 97.5th is 3 (0.963 < 0.975).
    d = np.array([0.0, 0.0, 3.0])
    assert paired_bootstrap_ci(d, np.random.default_rng(0), 20_000, 0.95) == (0.0, 3.0)
    assert paired_bootstrap_ci(d, np.random.default_rng(0), 20_000, 0.90) == (0.0, 2.0)


def test_bootstrap_ci_covers_the_true_mean_about_as_often_as_its_level():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(200):
        d = rng.normal(0.3, 1.0, 60)
        low, high = paired_bootstrap_ci(d, rng, 1000, 0.95)
        hits += low <= 0.3 <= high
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_chunks_give_the_same_answer_as_one_draw(monkeypatch):
    import crucible.evaluate.compare as compare

    d = np.random.default_rng(2).normal(size=37)
    whole = paired_bootstrap_ci(d, np.random.default_rng(4), 500)
    monkeypatch.setattr(compare, "_BOOTSTRAP_CHUNK_ENTRIES", 37 * 7)
    assert paired_bootstrap_ci(d, np.random.default_rng(4), 500) == pytest.approx(whole, abs=TOL)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda df: df.drop(columns="score"), "lack columns ['score']"),
    (lambda df: df.assign(model_version=["v2", "v9"] * 2), "exactly one model_version"),
    (lambda df: df.assign(score=[1.0, 0.5, 1.0, 0.0]), "example 'ex1': score=0.5 but the benchmark is declared binary"),
    (lambda df: df.assign(score=[1.0, None, 1.0, 0.0]), "example 'ex1': score=nan is missing"),
    (lambda df: pd.concat([df, df.iloc[:1]]), "example 'ex0' sample 0: scored more than once"),
    (lambda df: df.assign(example_id=["x0", "x1", "x2", "x3"]), "no example scored by both 'v1' (4 items) and 'v2'"),
])
def test_bad_input_names_the_problem(make_rows, mutate, message):
    base = make_rows("v1", {"mmlu": [1, 0, 1, 1]})
    cand = mutate(make_rows("v2", {"mmlu": [1, 1, 1, 0]}))
    with pytest.raises(ValueError, match=re.escape(message)):
        compare_versions(base, cand, {"mmlu": "binary"})


def test_unknown_kind_is_rejected(make_rows):
    rows = make_rows("v1", {"mmlu": [1, 0]})
    with pytest.raises(ValueError, match="kind 'accuracy' is not 'binary' or 'continuous'"):
        compare_versions(rows, rows.assign(model_version="v2"), {"mmlu": "accuracy"})
