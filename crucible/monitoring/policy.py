"""The retraining decision: which rules (drift, low quality, curated volume) ask for a retraining of which window.

Every trigger evaluated for a day D proposes the same window, the ``window_days`` days ending on D, so a
run key per window (``retrain-<start>-<end>``) gives at most one retraining per window, whichever
trigger fires first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

TRIGGERS = ("drift", "quality", "curated_volume")
DRIFT_RULES = ("any", "all", "min")
WINDOW_TAG = "crucible/retrain_window"
TRIGGER_TAG = "crucible/trigger"
DAY_TAG = "crucible/day"


@dataclass(frozen=True)
class RetrainingPolicy:
    """Rules and thresholds of the retraining decision.

    - drift: ``drift_rule`` "any" (one drifted detector is enough), "all" (every detector of the day's
      report drifted) or "min" (at least ``min_drifted`` detectors drifted);
    - quality: the pass rate of the window's answers is below ``min_pass_rate`` (judged once the window
      holds at least ``min_quality_events`` checked answers);
    - curated volume: at least ``min_curated`` curatable examples in the window.
    ``triggers`` switches rules on and off.
    """

    drift_rule: str = "min"
    min_drifted: int = 2
    min_pass_rate: float = 0.7
    min_quality_events: int = 20
    min_curated: int = 50
    window_days: int = 7
    triggers: tuple[str, ...] = TRIGGERS

    def __post_init__(self) -> None:
        if self.drift_rule not in DRIFT_RULES:
            raise ValueError(f"retraining policy: drift_rule {self.drift_rule!r} is not one of {', '.join(DRIFT_RULES)}")
        unknown = sorted(set(self.triggers) - set(TRIGGERS))
        if unknown:
            raise ValueError(f"retraining policy: unknown trigger(s) {', '.join(unknown)}; known: {', '.join(TRIGGERS)}")
        for name, value, low in (("min_drifted", self.min_drifted, 1), ("window_days", self.window_days, 1),
                                 ("min_curated", self.min_curated, 1), ("min_quality_events", self.min_quality_events, 1)):
            if value < low:
                raise ValueError(f"retraining policy: {name} must be at least {low}, got {value}")
        if not 0 <= self.min_pass_rate <= 1:
            raise ValueError(f"retraining policy: min_pass_rate must be in [0, 1], got {self.min_pass_rate}")

    def window(self, day: dt.date) -> tuple[dt.date, dt.date]:
        """The ``window_days`` days ending on ``day``."""
        return day - dt.timedelta(days=self.window_days - 1), day


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain on the window, which trigger decided, and why (or why not)."""

    retrain: bool
    trigger: str
    reasons: list[str] = field(default_factory=list)
    window_start: dt.date | None = None
    window_end: dt.date | None = None

    @property
    def window(self) -> str:
        return f"{self.window_start}..{self.window_end}"

    @property
    def run_key(self) -> str:
        return f"retrain-{self.window_start}-{self.window_end}"

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def drift_rule(policy: RetrainingPolicy, day: dt.date, report: pd.DataFrame) -> tuple[bool, str]:
    """Whether a day's drift report (DRIFT_REPORTS rows) calls for a retraining, and why."""
    if report.empty:
        return False, f"no drift report for {day}"
    drifted = report.loc[report["drifted"].astype(bool)]
    needed = {"any": 1, "all": len(report), "min": policy.min_drifted}[policy.drift_rule]
    rule = {"any": "any detector", "all": f"all {len(report)} detectors",
            "min": f"at least {policy.min_drifted} detectors"}[policy.drift_rule]
    if len(drifted) < needed or drifted.empty:
        return False, f"no drift on {day}: {len(drifted)} of {len(report)} detectors drifted (rule: {rule})"
    details = ", ".join(_describe_detector(r) for r in drifted.itertuples())
    return True, f"drift on {day}: {len(drifted)} of {len(report)} detectors drifted (rule: {rule}): {details}"


def _describe_detector(row) -> str:
    feature = f" {row.feature}" if getattr(row, "feature", "") else ""
    if row.p_value is None or pd.isna(row.p_value):
        return f"{row.detector}{feature} {row.statistic:.3f} > {row.threshold:g}"
    return f"{row.detector}{feature} p={row.p_value:.2g} < {row.threshold:g}"


def quality_rule(policy: RetrainingPolicy, window: tuple[dt.date, dt.date], quality: pd.DataFrame) -> tuple[bool, str]:
    """Whether the window's pass rate (QUALITY rows of the window) is below the policy's minimum."""
    label = f"{window[0]}..{window[1]}"
    if len(quality) < policy.min_quality_events:
        return False, (f"quality over {label}: only {len(quality)} checked answers, {policy.min_quality_events} "
                       f"needed to judge")
    rate = float(quality["passed"].astype(bool).mean())
    if rate < policy.min_pass_rate:
        return True, (f"low quality over {label}: pass rate {rate:.1%} of {len(quality)} answers < "
                      f"{policy.min_pass_rate:.0%}")
    return False, f"quality over {label}: pass rate {rate:.1%} of {len(quality)} answers >= {policy.min_pass_rate:.0%}"


def curated_volume_rule(policy: RetrainingPolicy, window: tuple[dt.date, dt.date], count: int) -> tuple[bool, str]:
    """Whether the window holds enough curatable examples to be worth a retraining."""
    label = f"{window[0]}..{window[1]}"
    if count >= policy.min_curated:
        return True, f"curated volume over {label}: {count} curatable examples >= {policy.min_curated}"
    return False, f"curated volume over {label}: {count} curatable examples < {policy.min_curated}"


def decide(policy: RetrainingPolicy, day: dt.date, *, drift_report: pd.DataFrame | None = None,
           quality: pd.DataFrame | None = None, curated_count: int | None = None) -> RetrainDecision:
    """Apply the policy's rules to what is given, for the window ending on ``day``; the first rule that
    fires (in the order drift, quality, curated volume) names the trigger, and every rule evaluated
    adds its reason. Rules switched off in ``policy.triggers`` or given no input are not evaluated."""
    start, end = policy.window(day)
    checks: list[tuple[str, bool, str]] = []
    if drift_report is not None and "drift" in policy.triggers:
        checks.append(("drift", *drift_rule(policy, day, drift_report)))
    if quality is not None and "quality" in policy.triggers:
        in_window = quality
        if len(quality):
            days = pd.to_datetime(quality["day"]).dt.date
            in_window = quality.loc[(days >= start) & (days <= end)]
        checks.append(("quality", *quality_rule(policy, (start, end), in_window)))
    if curated_count is not None and "curated_volume" in policy.triggers:
        checks.append(("curated_volume", *curated_volume_rule(policy, (start, end), curated_count)))
    fired = [trigger for trigger, fires, _ in checks if fires]
    reasons = [reason for _, fires, reason in checks if fires] or [reason for _, _, reason in checks]
    return RetrainDecision(bool(fired), fired[0] if fired else "none", reasons or ["no rule evaluated"], start, end)


def retraining_tags(decision: RetrainDecision) -> dict[str, str]:
    """The tags of a retraining run: its window (what makes it one per window) and its trigger."""
    return {WINDOW_TAG: decision.window, TRIGGER_TAG: decision.trigger, DAY_TAG: str(decision.window_end)}


def curatable_count(signals: pd.DataFrame, quality: pd.DataFrame | None = None,
                    weights: dict[str, float] | None = None) -> int:
    """How many answered requests users vouched for: an edit, or a positive signal score (sum of the
    weights) on an answer that did not fail the quality checks. These are the candidates of the
    user-edit and high-quality curation strategies, counted before any retraining curates them."""
    if signals.empty:
        return 0
    if weights is None:
        from schemas.feedback import SIGNAL_WEIGHTS

        weights = SIGNAL_WEIGHTS
    scored = signals.assign(weight=signals["signal"].map(weights).fillna(0.0))
    per_event = scored.groupby("event_id").agg(score=("weight", "sum"),
                                              edited=("signal", lambda s: bool((s == "edit").any())))
    failed: Sequence[str] = []
    if quality is not None and len(quality):
        failed = quality.loc[~quality["passed"].astype(bool), "event_id"].tolist()
    vouched = per_event["edited"] | ((per_event["score"] > 0) & ~per_event.index.isin(failed))
    return int(vouched.sum())
