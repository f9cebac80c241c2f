"""PII scrubbing and drift detectors, checked against hand computations and scipy."""

import datetime as dt
import math

import numpy as np
import pytest

from crucible.feedback.events import simulated_prompts
from crucible.feedback.pii import sanitize_pii
from crucible.monitoring.drift import kolmogorov_smirnov, population_stability_index, psi_drift


@pytest.mark.parametrize("text,expected", [
    ("mail jane.doe@example.com now", "mail [EMAIL] now"),
    ("call +1 415-555-0132 today", "call [PHONE] today"),
    ("(020) 7946 0958 or li.wei.7@mail.example.org", "[PHONE] or [EMAIL]"),
    ("She sold 48 clips in 2021 for $12.50, 1,000 total", "She sold 48 clips in 2021 for $12.50, 1,000 total"),
])
def test_sanitize_pii(text, expected):
    assert sanitize_pii(text).text == expected


def test_psi_matches_hand_computation():
    baseline = list(range(100))
    current = [5] * 50 + [95] * 50
    # Decile bins of the baseline hold 10 each; current puts 50 in the first bin and 50 in the
    # last. Shares are smoothed with 0.5 per bin: (count + 0.5) / (n + 0.5 * 10).
    b = np.full(10, 10.5 / 105)
    c = np.array([50.5] + [0.5] * 8 + [50.5]) / 105
    expected = float(np.sum((c - b) * np.log(c / b)))
    assert population_stability_index(baseline, current) == pytest.approx(expected)
    assert population_stability_index(baseline, baseline) == pytest.approx(0.0, abs=1e-12)


def test_ks_and_psi_flag_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    baseline = rng.normal(40, 8, 2000)
    same = rng.normal(40, 8, 300)
    shifted = rng.normal(90, 8, 300)
    assert not kolmogorov_smirnov(baseline, same).drifted and not psi_drift(baseline, same).drifted
    ks, psi = kolmogorov_smirnov(baseline, shifted), psi_drift(baseline, shifted)
    assert ks.drifted and ks.p_value < 1e-10 and psi.drifted and psi.statistic > 1
    assert not math.isnan(psi.statistic)


def test_simulated_prompts_are_deterministic_and_plant_long_prompts():
    pool = ["short question one", "short question two"]
    day = dt.date(2026, 11, 3)
    assert simulated_prompts(pool, day, 20) == simulated_prompts(pool, day, 20)
    long = simulated_prompts(pool, day, 20, long_prompt_share=1.0, pii_share=0.0)
    assert min(len(p.split()) for p in long) > 40  # a two-paragraph preamble before a three-word question
