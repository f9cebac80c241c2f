"""One day's drift report: the day's traffic features against a baseline snapshot, every detector's
verdict with its explanation, and a distribution plot per feature."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from crucible.lake import DeltaLake
from crucible.monitoring.baselines import BaselineSnapshot
from crucible.monitoring.drift import (
    Detection,
    DriftResult,
    DriftThresholds,
    detect_all,
    drift_rows,
    verdict_table,
)
from crucible.monitoring.features import traffic_features
from crucible.monitoring.plots import feature_plot
from crucible.monitoring.policy import RetrainingPolicy, drift_rule
from schemas import INFERENCE_EVENTS, QUALITY, SIGNALS


@dataclass
class DayReport:
    """The verdicts of one day, the features left out (with why) and one PNG per compared feature."""

    day: dt.date
    snapshot: BaselineSnapshot
    detection: Detection
    plots: dict[str, bytes] = field(default_factory=dict)

    @property
    def results(self) -> list[DriftResult]:
        return self.detection.results

    def rows(self) -> list[dict]:
        return drift_rows(self.day, self.results, self.snapshot.baseline_id)

    def drifted(self) -> list[DriftResult]:
        return [r for r in self.results if r.drifted]

    def markdown(self, policy: RetrainingPolicy | None = None) -> str:
        """The verdict table, the features skipped, and (given a policy) what its drift rule concludes."""
        import pandas as pd

        parts = [f"Baseline {self.snapshot.describe()}", "", verdict_table(self.results)]
        if self.detection.skipped:
            parts += ["", "Not compared: " + "; ".join(self.detection.skipped)]
        if policy is not None:
            _, conclusion = drift_rule(policy, self.day, pd.DataFrame(self.rows()))
            parts += ["", f"Retraining rule: {conclusion}"]
        return "\n".join(parts)


def day_features(lake: DeltaLake, day: dt.date) -> dict:
    """The monitored features of ``day``'s served events, with their quality rows and signals when present."""
    # Arrow-backed text: category counts stay columnar (see bench/bench_drift.py).
    events = lake.read(INFERENCE_EVENTS, where={"day": day}, arrow_strings=True)
    quality = lake.read(QUALITY, where={"day": day}, arrow_strings=True) if lake.exists(QUALITY) else None
    signals = lake.read(SIGNALS, where={"day": day}, arrow_strings=True) if lake.exists(SIGNALS) else None
    return traffic_features(events, quality, signals, f"{INFERENCE_EVENTS.path}@v{lake.version(INFERENCE_EVENTS)}: {day}")


def report_day(lake: DeltaLake, day: dt.date, snapshot: BaselineSnapshot,
               thresholds: DriftThresholds = DriftThresholds(),
               embed: Callable[[list[str]], np.ndarray] | None = None, plots: bool = True) -> DayReport:
    """Compare ``day`` with ``snapshot``; raises when the day has no served events."""
    current = day_features(lake, day)
    if not current:
        raise ValueError(f"no inference events on {day} in {INFERENCE_EVENTS.path}: ingest or serve that day's "
                         f"traffic (feedback/inference_events) first")
    detection = detect_all(snapshot.features, current, thresholds, embed)
    report = DayReport(day, snapshot, detection)
    if plots:
        by_feature: dict[str, list[DriftResult]] = {}
        for result in detection.results:
            by_feature.setdefault(result.feature, []).append(result)
        report.plots = {name: feature_plot(name, *pair, by_feature.get(name, []))
                        for name, pair in detection.prepared.items()}
    return report
