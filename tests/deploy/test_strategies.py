"""Rollout strategies through a real router in front of real backends, under client load: healthy versions
are promoted step by step, broken ones (errors, hangs, slowness) roll back with no client seeing a failure;
the A/B significance test against statsmodels."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from crucible.deploy.router import Router, RouteTable
from crucible.deploy.strategies import (
    ABResult,
    Backend,
    Step,
    Strategy,
    Thresholds,
    ab_test,
    blue_green,
    canary,
    replace,
    run_rollout,
    strategy_from_config,
    thumbs_test,
    two_proportion_z_test,
)
from tests.deploy.backends import Backend as HttpBackend
from tests.deploy.test_router import call


class Load:
    """Clients calling the router until stopped, recording every status and which backend answered."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.answers, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stop.is_set():
            status, payload, _ = call(self.url)
            self.answers.append((status, payload.get("backend")))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def rollout(mode: str, strategy: Strategy, delay_s: float = 0.0, thresholds: Thresholds = Thresholds(), **options):
    events: list[tuple[str, float]] = []
    with HttpBackend("v1") as old, HttpBackend("v2", mode=mode, delay_s=delay_s) as new:
        with Router(RouteTable.single("v1", old.url)) as router, Load(router.url) as load:
            result = run_rollout(router, Backend("v2", new.url), Backend("v1", old.url), strategy, thresholds,
                                 candidate_timeout_s=0.5, check_interval_s=0.05,
                                 on_step=lambda event, percent, reason: events.append((event, percent)), **options)
            final = router.routes()
            after = call(router.url)[1]["backend"]
    return result, events, load.answers, final, after


def test_a_healthy_canary_walks_every_step_and_takes_all_traffic():
    result, events, answers, final, after = rollout("ok", canary((10, 50, 100), hold_s=0.4))
    assert result.outcome == "promoted" and [s.percent for s in result.steps] == [10, 50, 100]
    assert events == [("step", 10), ("step", 50), ("step", 100), ("promoted", 100)]
    assert all(s.candidate["requests"] > 0 and s.candidate["errors"] == 0 for s in result.steps)
    assert final.weights == {"v2": 100.0} and after == "v2"
    assert {status for status, _ in answers} == {200} and {b for _, b in answers} == {"v1", "v2"}


@pytest.mark.parametrize("mode, delay_s, why", [
    ("error", 0.0, "error rate"),     # every answer is a 500
    ("hang", 30.0, "error rate"),     # never answers: the router's 0.5 s timeout fails it
    ("slow", 0.3, "p99 latency"),     # answers, but slower than the 200 ms threshold
])
def test_a_broken_canary_rolls_back_and_no_client_sees_a_failure(mode, delay_s, why):
    thresholds = Thresholds(max_error_rate=0.05, max_p99_ms=200, min_requests=3)
    result, events, answers, final, after = rollout(mode, canary((10, 50, 100), hold_s=3), delay_s, thresholds)
    assert result.outcome == "rolled_back" and why in result.reason and "step 10%" in result.reason
    assert len(result.steps) == 1 and result.steps[0].held_s < 3  # rolled back as soon as it broke
    assert events[-1] == ("rolled_back", 0.0) and final.weights == {"v1": 100.0} and after == "v1"
    assert answers and {status for status, _ in answers} == {200}
    if mode != "slow":
        assert {backend for _, backend in answers} == {"v1"}  # every failed answer was retried on v1
    assert result.dropped == 0


def test_blue_green_and_replace_switch_all_traffic_at_once():
    result, events, answers, final, _ = rollout("ok", blue_green(hold_s=0.3))
    assert result.outcome == "promoted" and events[0] == ("step", 100) and final.weights == {"v2": 100.0}
    assert {s for s, _ in answers} == {200}
    result, events, _, final, _ = rollout("error", blue_green(hold_s=2), thresholds=Thresholds(min_requests=2))
    assert result.outcome == "rolled_back" and final.weights == {"v1": 100.0}
    result, events, _, final, _ = rollout("ok", replace())
    assert result.outcome == "promoted" and result.steps[0].held_s == 0


@pytest.mark.parametrize("ab, outcome", [
    (ABResult(30, 100, 60, 100, 4.3, 0.00002, 0.05), "promoted"),      # B significantly better
    (ABResult(50, 100, 52, 100, 0.3, 0.77, 0.05), "rolled_back"),      # no significant difference
    (ABResult(60, 100, 30, 100, -4.3, 0.00002, 0.05), "rolled_back"),  # B significantly worse
])
def test_an_ab_test_keeps_the_new_version_only_when_it_wins(ab, outcome):
    result, events, answers, final, _ = rollout("ok", ab_test(50, duration_s=0.3), judge=lambda: ab)
    assert result.outcome == outcome and result.ab == ab
    assert [e for e, _ in events] == ["step", "promoted" if outcome == "promoted" else "rolled_back"]
    assert final.weights == ({"v2": 100.0} if outcome == "promoted" else {"v1": 100.0})
    if outcome != "promoted":
        assert "A/B" in result.reason and "p=" in result.reason


def test_a_first_deployment_takes_all_traffic():
    with HttpBackend("v1") as first, Router(RouteTable.single("v1", first.url)) as router:
        result = run_rollout(router, Backend("v2", first.url), None, canary())
        assert result.outcome == "promoted" and router.routes().weights == {"v2": 100.0}


@pytest.mark.parametrize("counts", [(45, 100, 62, 110), (3, 10, 9, 12), (0, 5, 5, 5), (120, 400, 150, 420)])
def test_two_proportion_z_test_matches_statsmodels(counts):
    from statsmodels.stats.proportion import proportions_ztest

    xa, na, xb, nb = counts
    ours = two_proportion_z_test(xa, na, xb, nb)
    z, p = proportions_ztest([xb, xa], [nb, na])
    assert ours.z == pytest.approx(z) and ours.p_value == pytest.approx(p)


def test_two_proportion_z_test_edge_cases():
    assert two_proportion_z_test(0, 0, 3, 5).p_value == 1.0 and two_proportion_z_test(5, 5, 5, 5).winner is None
    with pytest.raises(ValueError, match="version B has 6 successes out of 5"):
        two_proportion_z_test(1, 2, 6, 5)


def test_thumbs_test_counts_each_events_latest_thumb_per_version():
    events = pd.DataFrame({"event_id": ["e1", "e2", "e3", "e4", "e5"], "model_version": [1, 1, 2, 2, 2]})
    t = pd.Timestamp("2026-11-01", tz="UTC")
    signals = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e3", "e4", "e5", "e5"],
        "signal": ["thumbs_up", "thumbs_down", "thumbs_down", "thumbs_up", "copy", "thumbs_up", "thumbs_up"],
        "timestamp": [t, t, t, t + pd.Timedelta(1, "s"), t, t, t]})
    result = thumbs_test(events, signals, 1, 2)
    # v1: e1 up, e2 down -> 1/2; v2: e3's latest thumb is up, e4 has no thumb, e5 up (counted once) -> 2/2
    assert (result.successes_a, result.trials_a, result.successes_b, result.trials_b) == (1, 2, 2, 2)


@pytest.mark.parametrize("build, message", [
    (lambda: Strategy("canary", ()), "no traffic steps"),
    (lambda: canary((10, 50)), "last step must send 100%"),
    (lambda: canary((50, 10, 100)), "must not go down"),
    (lambda: Strategy("canary", (Step(0, 1), Step(100, 1))), "0 < percent <= 100"),
    (lambda: strategy_from_config("shadow"), "expected one of replace, blue_green, canary, ab"),
])
def test_strategies_refuse_impossible_steps(build, message):
    with pytest.raises(ValueError, match=message):
        build()
