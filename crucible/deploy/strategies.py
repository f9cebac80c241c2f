"""Rollout strategies (replace, blue-green, canary, A/B) as traffic steps, one executor that walks the steps
through the router and rolls back automatically, and the A/B significance test on feedback signals.

During every step the previous (stable) version stays in the route table as the retry target, so it
keeps serving throughout: a rollback is one route-table switch back to it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from crucible.deploy.router import RouteTable, TrafficControl


@dataclass(frozen=True)
class Backend:
    """A served version the router can send traffic to."""

    name: str
    url: str


@dataclass(frozen=True)
class Thresholds:
    """When the new version is rolled back: its error rate or p99 latency (over the requests it got in the
    current step, failures retried on the stable version included) above these, once it has ``min_requests``."""

    max_error_rate: float = 0.05
    max_p99_ms: float = 5_000.0
    min_requests: int = 5

    def breach(self, stats: dict[str, Any]) -> str | None:
        """Why ``stats`` (a backend's router figures) break the thresholds, or None."""
        if stats["requests"] < self.min_requests:
            return None
        if stats["error_rate"] > self.max_error_rate:
            return (f"error rate {stats['error_rate']:.1%} ({stats['errors']}/{stats['requests']}) above "
                    f"{self.max_error_rate:.1%}")
        if stats["p99_ms"] is not None and stats["p99_ms"] > self.max_p99_ms:
            return f"p99 latency {stats['p99_ms']:.0f} ms above {self.max_p99_ms:.0f} ms"
        return None


@dataclass(frozen=True)
class Step:
    """Send ``percent`` of traffic to the new version and watch it for ``hold_s`` seconds."""

    percent: float
    hold_s: float
    sticky: bool = False


@dataclass(frozen=True)
class Strategy:
    """A named sequence of traffic steps; ``judged`` strategies (A/B) end with a significance test."""

    name: Literal["replace", "blue_green", "canary", "ab"]
    steps: tuple[Step, ...]
    judged: bool = False

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"strategy {self.name}: no traffic steps")
        for step in self.steps:
            if not 0 < step.percent <= 100 or step.hold_s < 0:
                raise ValueError(f"strategy {self.name}: step {step} needs 0 < percent <= 100 and hold_s >= 0")
        percents = [s.percent for s in self.steps]
        if percents != sorted(percents):
            raise ValueError(f"strategy {self.name}: traffic steps must not go down, got {percents}")
        if not self.judged and percents[-1] != 100:
            raise ValueError(f"strategy {self.name}: the last step must send 100% to the new version, got "
                             f"{percents[-1]}%")


def replace() -> Strategy:
    """All traffic to the new version at once, the old one stopped right after (no observation window)."""
    return Strategy("replace", (Step(100, 0),))


def blue_green(hold_s: float = 60) -> Strategy:
    """All traffic to the new (green) version at once, the old (blue) one kept running for ``hold_s`` while the
    new one is watched, and switched back to if it breaks the thresholds."""
    return Strategy("blue_green", (Step(100, hold_s),))


def canary(percents: Sequence[float] = (10, 30, 50, 100), hold_s: float = 60) -> Strategy:
    """Traffic to the new version in steps, each held for ``hold_s`` while it is watched."""
    return Strategy("canary", tuple(Step(float(p), hold_s) for p in percents))


def ab_test(split_percent: float = 50, duration_s: float = 3600) -> Strategy:
    """A sticky split for ``duration_s``, then a significance test on feedback decides which version stays."""
    return Strategy("ab", (Step(float(split_percent), duration_s, sticky=True),), judged=True)


STRATEGY_BUILDERS: dict[str, Callable[..., Strategy]] = {
    "replace": replace, "blue_green": blue_green, "canary": canary, "ab": ab_test}


def strategy_from_config(name: str, *, canary_steps: Sequence[float] = (10, 30, 50, 100), hold_s: float = 60,
                         ab_split_percent: float = 50) -> Strategy:
    """The strategy called ``name`` with settings from a deployment's config."""
    if name == "replace":
        return replace()
    if name == "blue_green":
        return blue_green(hold_s)
    if name == "canary":
        return canary(canary_steps, hold_s)
    if name == "ab":
        return ab_test(ab_split_percent, hold_s)
    raise ValueError(f"rollout strategy {name!r}: expected one of {', '.join(STRATEGY_BUILDERS)}")


# -- the A/B significance test ------------------------------------------------------------------


@dataclass(frozen=True)
class ABResult:
    """Thumbs-up rates of A (the stable version) and B (the new one) and a two-sided two-proportion z-test."""

    successes_a: int
    trials_a: int
    successes_b: int
    trials_b: int
    z: float
    p_value: float
    alpha: float

    @property
    def rate_a(self) -> float:
        return self.successes_a / self.trials_a if self.trials_a else 0.0

    @property
    def rate_b(self) -> float:
        return self.successes_b / self.trials_b if self.trials_b else 0.0

    @property
    def winner(self) -> Literal["a", "b"] | None:
        """The significantly better version, or None when the difference is not significant."""
        if self.p_value >= self.alpha:
            return None
        return "b" if self.rate_b > self.rate_a else "a"

    def describe(self) -> str:
        return (f"thumbs-up A {self.successes_a}/{self.trials_a} ({self.rate_a:.1%}) vs B {self.successes_b}/"
                f"{self.trials_b} ({self.rate_b:.1%}): z={self.z:.2f}, p={self.p_value:.4f} (alpha {self.alpha})")


def two_proportion_z_test(successes_a: int, trials_a: int, successes_b: int, trials_b: int,
                          alpha: float = 0.05) -> ABResult:
    """z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b)) with the pooled p = (x_a + x_b) / (n_a + n_b);
    two-sided p-value = erfc(|z| / sqrt 2). With no trials on a side, or a pooled rate of 0 or 1, z = 0, p = 1."""
    for name, x, n in (("A", successes_a, trials_a), ("B", successes_b, trials_b)):
        if n < 0 or not 0 <= x <= max(n, 0):
            raise ValueError(f"two-proportion test: version {name} has {x} successes out of {n} trials")
    if not trials_a or not trials_b:
        return ABResult(successes_a, trials_a, successes_b, trials_b, 0.0, 1.0, alpha)
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if spread == 0:
        return ABResult(successes_a, trials_a, successes_b, trials_b, 0.0, 1.0, alpha)
    z = (successes_b / trials_b - successes_a / trials_a) / spread
    return ABResult(successes_a, trials_a, successes_b, trials_b, z, math.erfc(abs(z) / math.sqrt(2)), alpha)


def thumbs_test(events: pd.DataFrame, signals: pd.DataFrame, version_a: int, version_b: int,
                alpha: float = 0.05) -> ABResult:
    """The A/B test on thumbs: per version, the events with a thumbs signal (trials) and those whose latest
    thumbs signal is up (successes). ``events`` need event_id and model_version; ``signals`` event_id, signal,
    timestamp (rows of SIGNALS)."""
    thumbs = signals.loc[signals["signal"].isin(["thumbs_up", "thumbs_down"])]
    latest = thumbs.sort_values("timestamp").drop_duplicates("event_id", keep="last")
    joined = latest.merge(events[["event_id", "model_version"]], on="event_id")
    counts = {}
    for version in (version_a, version_b):
        mine = joined.loc[joined["model_version"] == version]
        counts[version] = (int((mine["signal"] == "thumbs_up").sum()), len(mine))
    return two_proportion_z_test(*counts[version_a], *counts[version_b], alpha=alpha)


# -- the executor -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepReport:
    percent: float
    held_s: float
    candidate: dict[str, Any]
    stable: dict[str, Any] | None
    breach: str | None = None


@dataclass
class RolloutResult:
    """How a rollout ended: ``promoted`` (the new version takes all traffic) or ``rolled_back`` (the previous
    one does; ``reason`` says why: a threshold, or an A/B test the new version did not win)."""

    outcome: Literal["promoted", "rolled_back"]
    strategy: str
    steps: list[StepReport] = field(default_factory=list)
    reason: str | None = None
    ab: ABResult | None = None
    dropped: int = 0


RolloutListener = Callable[[str, float, str | None], None]


def run_rollout(router: TrafficControl, candidate: Backend, stable: Backend | None, strategy: Strategy,
                thresholds: Thresholds = Thresholds(), *, candidate_timeout_s: float = 10.0,
                stable_timeout_s: float = 60.0, check_interval_s: float = 0.2,
                judge: Callable[[], ABResult] | None = None, on_step: RolloutListener | None = None,
                sleep: Callable[[float], None] = time.sleep) -> RolloutResult:
    """Walk ``strategy``'s steps: route ``percent`` to ``candidate`` (failures retried on ``stable``), watch it
    for ``hold_s`` (every ``check_interval_s``), and switch all traffic back to ``stable`` the moment it breaks
    ``thresholds``. ``on_step(event, percent, reason)`` hears "step", "promoted" and "rolled_back".

    With no ``stable`` (a first deployment) the candidate takes all traffic at once. An A/B strategy ends
    with ``judge()``: the candidate stays only if it is significantly better.
    """
    notify = on_step or (lambda event, percent, reason: None)
    timeouts = {candidate.name: candidate_timeout_s}
    if stable is None:
        router.set_routes(RouteTable.single(candidate.name, candidate.url, timeouts=timeouts,
                                            default_timeout_s=stable_timeout_s))
        notify("promoted", 100.0, "first deployment: no previous version")
        return RolloutResult("promoted", strategy.name, reason="first deployment: no previous version")
    if stable.name == candidate.name:
        raise ValueError(f"rollout: the new and the previous version are both named {candidate.name!r}")
    backends = {stable.name: stable.url, candidate.name: candidate.url}
    timeouts[stable.name] = stable_timeout_s
    result = RolloutResult("promoted", strategy.name)

    def back_to_stable(reason: str) -> RolloutResult:
        router.set_routes(RouteTable.single(stable.name, stable.url, default_timeout_s=stable_timeout_s))
        result.outcome, result.reason = "rolled_back", reason
        result.dropped = router.stats().dropped
        notify("rolled_back", 0.0, reason)
        return result

    for step in strategy.steps:
        router.set_routes(RouteTable(backends, {candidate.name: step.percent, stable.name: 100 - step.percent},
                                     stable.name, sticky=step.sticky, timeouts=timeouts))
        router.stats(reset=True)
        notify("step", step.percent, None)
        started = time.monotonic()
        breach = None
        while True:
            stats = router.stats()
            breach = thresholds.breach(stats.of(candidate.name))
            elapsed = time.monotonic() - started
            if breach or elapsed >= step.hold_s:
                break
            sleep(min(check_interval_s, step.hold_s - elapsed))
        result.steps.append(StepReport(step.percent, round(elapsed, 3), stats.of(candidate.name),
                                       stats.of(stable.name), breach))
        if breach:
            return back_to_stable(f"{strategy.name} step {step.percent:g}%: {candidate.name} {breach}")
    if strategy.judged:
        if judge is None:
            raise ValueError(f"rollout: strategy {strategy.name} ends with a significance test but no judge was given")
        result.ab = judge()
        if result.ab.winner != "b":
            verdict = "is significantly worse" if result.ab.winner == "a" else "is not significantly better"
            return back_to_stable(f"A/B: {candidate.name} {verdict} than {stable.name}: {result.ab.describe()}")
    router.set_routes(RouteTable.single(candidate.name, candidate.url, default_timeout_s=stable_timeout_s))
    result.dropped = router.stats().dropped
    result.reason = f"{strategy.name}: {candidate.name} passed every step"
    notify("promoted", 100.0, result.reason)
    return result
