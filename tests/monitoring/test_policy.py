"""The retraining decision on its own: every rule, its thresholds, the window, the run key and the tags."""

import datetime as dt

import pandas as pd
import pytest

from crucible.monitoring.policy import (
    RetrainingPolicy,
    curatable_count,
    decide,
    retraining_tags,
)

DAY = dt.date(2026, 11, 10)


def report(*drifted: bool) -> pd.DataFrame:
    detectors = ["ks", "psi", "chi2", "js", "mmd"]
    return pd.DataFrame([{"detector": detectors[i], "feature": "prompt_length_words", "statistic": 0.5,
                          "p_value": None if detectors[i] in ("psi", "js") else 1e-6, "threshold": 0.25,
                          "drifted": d} for i, d in enumerate(drifted)])


def quality(days: list[dt.date], passed: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({"day": days, "passed": passed, "event_id": [f"e{i}" for i in range(len(days))]})


@pytest.mark.parametrize("rule,min_drifted,flags,retrain", [
    ("any", 1, (True, False, False), True),
    ("any", 1, (False, False, False), False),
    ("all", 1, (True, True, False), False),
    ("all", 1, (True, True, True), True),
    ("min", 2, (True, False, False), False),
    ("min", 2, (True, False, True), True),
    ("min", 3, (True, False, True), False),
])
def test_drift_rule(rule, min_drifted, flags, retrain):
    decision = decide(RetrainingPolicy(drift_rule=rule, min_drifted=min_drifted), DAY, drift_report=report(*flags))
    assert decision.retrain is retrain
    assert decision.trigger == ("drift" if retrain else "none")
    assert decision.reasons[0].startswith(f"drift on {DAY}" if retrain else f"no drift on {DAY}")
    assert f"{sum(flags)} of {len(flags)} detectors drifted" in decision.reason


def test_a_drift_reason_names_each_drifted_detector():
    decision = decide(RetrainingPolicy(drift_rule="any"), DAY, drift_report=report(True, True))
    assert "ks prompt_length_words p=1e-06 < 0.25" in decision.reason
    assert "psi prompt_length_words 0.500 > 0.25" in decision.reason


def test_an_empty_drift_report_never_retrains():
    assert not decide(RetrainingPolicy(drift_rule="all"), DAY, drift_report=report()).retrain


def test_quality_rule_pass_rate_below_the_minimum_over_the_window():
    policy = RetrainingPolicy(min_pass_rate=0.7, min_quality_events=10, window_days=3)
    inside = [DAY, DAY - dt.timedelta(days=2)] * 10
    low = decide(policy, DAY, quality=quality(inside, [True, False] * 10))
    assert low.retrain and low.trigger == "quality" and "pass rate 50.0% of 20 answers < 70%" in low.reason
    high = decide(policy, DAY, quality=quality(inside, [True] * 18 + [False] * 2))
    assert not high.retrain and "pass rate 90.0%" in high.reason


def test_quality_rule_ignores_days_outside_the_window_and_waits_for_enough_answers():
    policy = RetrainingPolicy(min_pass_rate=0.7, min_quality_events=10, window_days=3)
    outside = [DAY - dt.timedelta(days=3)] * 30  # the day before the window starts
    decision = decide(policy, DAY, quality=quality(outside + [DAY] * 5, [False] * 35))
    assert not decision.retrain and "only 5 checked answers, 10 needed" in decision.reason


def test_no_quality_rows_at_all_waits_for_answers():
    decision = decide(RetrainingPolicy(), DAY, quality=pd.DataFrame())
    assert not decision.retrain and "only 0 checked answers" in decision.reason


def test_curated_volume_rule():
    policy = RetrainingPolicy(min_curated=40)
    assert decide(policy, DAY, curated_count=40).trigger == "curated_volume"
    below = decide(policy, DAY, curated_count=39)
    assert not below.retrain and "39 curatable examples < 40" in below.reason


def test_the_first_rule_that_fires_names_the_trigger_and_every_fired_rule_gives_its_reason():
    policy = RetrainingPolicy(drift_rule="any", min_curated=5, min_quality_events=1)
    both = decide(policy, DAY, drift_report=report(False), quality=quality([DAY], [False]), curated_count=9)
    assert both.trigger == "quality" and len(both.reasons) == 2 and "curated volume" in both.reasons[1]
    switched_off = decide(RetrainingPolicy(triggers=("curated_volume",)), DAY, drift_report=report(True, True),
                          curated_count=1)
    assert not switched_off.retrain and switched_off.reasons == [
        f"curated volume over {DAY - dt.timedelta(days=6)}..{DAY}: 1 curatable examples < 50"]


def test_one_window_per_day_whichever_trigger_and_its_run_key_and_tags():
    policy = RetrainingPolicy(drift_rule="any", window_days=7, min_curated=1)
    drift = decide(policy, DAY, drift_report=report(True))
    volume = decide(policy, DAY, curated_count=3)
    assert (drift.window_start, drift.window_end) == (dt.date(2026, 11, 4), DAY)
    assert drift.run_key == volume.run_key == "retrain-2026-11-04-2026-11-10"
    assert retraining_tags(drift) == {"crucible/retrain_window": "2026-11-04..2026-11-10",
                                      "crucible/trigger": "drift", "crucible/day": "2026-11-10"}
    assert retraining_tags(volume)["crucible/trigger"] == "curated_volume"


@pytest.mark.parametrize("kwargs,message", [
    ({"drift_rule": "most"}, "drift_rule 'most' is not one of any, all, min"),
    ({"triggers": ("drift", "cost")}, "unknown trigger(s) cost"),
    ({"window_days": 0}, "window_days must be at least 1, got 0"),
    ({"min_pass_rate": 1.5}, "min_pass_rate must be in [0, 1], got 1.5"),
])
def test_a_bad_policy_is_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        RetrainingPolicy(**kwargs)


def test_curatable_count_edits_and_positive_scores_on_passing_answers():
    signals = pd.DataFrame({"event_id": ["a", "a", "b", "c", "d", "d", "e"],
                            "signal": ["thumbs_up", "thumbs_down", "copy", "edit", "thumbs_down", "regenerate",
                                       "share"]})
    checks = pd.DataFrame({"event_id": ["a", "b", "c", "e"], "passed": [True, False, False, True]})
    # a: +3 -2 > 0, passed; b: positive but failed; c: an edit counts even on a failed answer; d: negative;
    # e: positive, passed.
    assert curatable_count(signals, checks) == 3
    assert curatable_count(signals) == 4
    assert curatable_count(signals.iloc[0:0]) == 0
