"""Training runs on the lake: which run is the latest, and recording one with its metric history."""

from __future__ import annotations

import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import StoredTable, store_validated
from schemas import TRAINING_METRICS, TRAINING_RUNS


def latest_run(lake: DeltaLake) -> dict:
    runs = lake.read(TRAINING_RUNS)
    if runs.empty:
        raise LookupError(f"no training runs in {TRAINING_RUNS.path}: train a checkpoint first")
    return runs.sort_values("finished_at").iloc[-1].to_dict()


def record_run(lake: DeltaLake, run: dict, history: list[dict]) -> tuple[StoredTable, StoredTable]:
    """Store the run row and its metric history (one row per step and metric name)."""
    metrics = pd.DataFrame(
        [{"run_id": run["run_id"], "step": int(entry["step"]), "name": name, "value": float(value)}
         for entry in history for name, value in entry.items() if name != "step" and value is not None],
        columns=TRAINING_METRICS.columns,
    )
    stored_metrics = store_validated(lake, TRAINING_METRICS, metrics, source=f"training run {run['run_id']}")
    stored_run = store_validated(lake, TRAINING_RUNS, pd.DataFrame([run]), source=f"training run {run['run_id']}")
    return stored_run, stored_metrics
