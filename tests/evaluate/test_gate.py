"""The promotion gate: planted regressions are blocked with their numbers, everything else passes."""

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from crucible.evaluate.gate import gate_decision

KINDS = {"mmlu": "binary", "gsm8k": "binary", "norobots": "continuous"}


@pytest.fixture
def production(make_rows, make_binary_pair):
    """Production scores plus the pairs used to derive candidates from them."""
    rng = np.random.default_rng(0)
    mmlu = make_binary_pair(both=150, baseline_only=0, candidate_only=0, neither=50)[0]
    gsm8k = make_binary_pair(both=60, baseline_only=0, candidate_only=0, neither=40, seed=1)[0]
    norobots = rng.uniform(0.2, 0.8, 80)
    return {"mmlu": mmlu, "gsm8k": gsm8k, "norobots": norobots}


def _plant(scores: np.ndarray, lose: int = 0, gain: int = 0) -> np.ndarray:
    """Candidate 0/1 scores: wrong on ``lose`` items production got right, right on ``gain`` it got wrong."""
    planted = scores.copy()
    planted[np.flatnonzero(scores == 1.0)[:lose]] = 0.0
    planted[np.flatnonzero(scores == 0.0)[:gain]] = 1.0
    return planted


def test_planted_regression_is_blocked_with_its_numbers(make_rows, production):
    # The candidate gets 40 MMLU items wrong that production got right, and fixes 5 it got wrong.
    candidate = dict(production, mmlu=_plant(production["mmlu"], lose=40, gain=5))
    decision = gate_decision(make_rows("v2", candidate), make_rows("v1", production), KINDS)
    assert not decision.passed
    assert [b.benchmark for b in decision.blocked] == ["mmlu"]
    blocked = decision.blocked[0]
    assert blocked.difference == pytest.approx(-35 / 200)
    assert blocked.ci[0] < blocked.difference < blocked.ci[1] < 0
    assert blocked.test == "mcnemar_chi2_cc"
    assert blocked.p_value == pytest.approx(mcnemar([[110, 40], [5, 45]], exact=False).pvalue, abs=1e-10)
    assert blocked.adjusted_p == pytest.approx(min(1.0, 3 * blocked.p_value), abs=1e-10)
    for text in ("blocked", "v2", "v1", "mmlu", "-0.1750", f"p={blocked.p_value:.4g}",
                 f"adjusted p={blocked.adjusted_p:.4g}", f"{blocked.ci[0]:+.4f}", "candidate 0.5750 vs production 0.7500", "difference < 0)"):
        assert text in decision.reasons
    assert "gsm8k" not in decision.reasons and "norobots" not in decision.reasons


def test_continuous_regression_is_blocked(make_rows, production):
    candidate = dict(production, norobots=production["norobots"] - 0.05
                     + np.random.default_rng(1).normal(0, 0.02, 80))
    decision = gate_decision(make_rows("v2", candidate), make_rows("v1", production), KINDS)
    assert [(b.benchmark, b.test) for b in decision.blocked] == [("norobots", "paired_t")]
    assert decision.blocked[0].difference == pytest.approx(-0.05, abs=0.01)


def test_planted_improvement_passes(make_rows, production):
    candidate = dict(production, mmlu=_plant(production["mmlu"], gain=30),
                     norobots=production["norobots"] + 0.05)
    decision = gate_decision(make_rows("v2", candidate), make_rows("v1", production), KINDS)
    assert decision.passed and decision.blocked == []
    assert decision.comparison.get("mmlu").verdict == "better"
    assert decision.comparison.get("mmlu").adjusted_p < 0.05
    assert decision.reasons.startswith("passed:") and "mmlu: difference +0.1500" in decision.reasons


def test_tiny_noisy_difference_passes(make_rows, production):
    rng = np.random.default_rng(4)
    # Three items lost and two gained on MMLU, tiny noise on NoRobots: not evidence of a regression.
    candidate = dict(production, mmlu=_plant(production["mmlu"], lose=3, gain=2),
                     norobots=production["norobots"] + rng.normal(-0.002, 0.05, 80))
    decision = gate_decision(make_rows("v2", candidate), make_rows("v1", production), KINDS)
    assert decision.passed, decision.reasons
    assert decision.comparison.get("mmlu").difference < 0
    assert "mmlu: difference -0.0050" in decision.reasons and "McNemar exact" in decision.reasons


def test_min_effect_tolerates_a_significant_but_small_regression(make_rows, production):
    candidate = dict(production, mmlu=_plant(production["mmlu"], lose=20))  # -0.10, p < 1e-4
    prod_rows, cand_rows = make_rows("v1", production), make_rows("v2", candidate)
    assert not gate_decision(cand_rows, prod_rows, KINDS, min_effect=0.0).passed
    tolerant = gate_decision(cand_rows, prod_rows, KINDS, min_effect=0.15)
    assert tolerant.passed and "worse, within min_effect" in tolerant.reasons
    assert not gate_decision(cand_rows, prod_rows, KINDS, min_effect=0.05).passed


def test_holm_correction_over_gated_benchmarks_can_spare_a_borderline_regression(make_rows, production):
    # 10 items lost and 2 gained: exact McNemar p = 2 * P(X <= 2 | n=12) = 0.0386 < 0.05 on its own,
    # but 3 gated benchmarks make the Holm-adjusted p = 3 * 0.0386 = 0.116.
    candidate = dict(production, mmlu=_plant(production["mmlu"], lose=10, gain=2))
    prod_rows, cand_rows = make_rows("v1", production), make_rows("v2", candidate)
    alone = gate_decision(cand_rows, prod_rows, {"mmlu": "binary"})
    assert not alone.passed and alone.blocked[0].p_value == pytest.approx(2 * 79 / 4096, abs=1e-12)
    together = gate_decision(cand_rows, prod_rows, KINDS)
    assert together.passed and together.comparison.get("mmlu").adjusted_p == pytest.approx(3 * 2 * 79 / 4096)


def test_no_production_version_passes_and_says_so(make_rows, production):
    candidate_rows = make_rows("v2", production)
    for missing in (None, candidate_rows.iloc[0:0]):
        decision = gate_decision(candidate_rows, missing, KINDS)
        assert decision.passed and decision.blocked == [] and decision.comparison is None
        assert "no production version" in decision.reasons and "v2" in decision.reasons


def test_candidate_missing_a_gated_benchmark_is_an_error_not_a_pass(make_rows, production):
    candidate = {k: v for k, v in production.items() if k != "gsm8k"}
    with pytest.raises(ValueError, match="benchmark 'gsm8k': no example scored by both"):
        gate_decision(make_rows("v2", candidate), make_rows("v1", production), KINDS)
