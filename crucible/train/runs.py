"""Training runs on the lake: which run is the latest, recording one with its metric history, and its lineage."""

from __future__ import annotations

import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import StoredTable, store_validated
from schemas import LINEAGE_EDGES, TRAINING_METRICS, TRAINING_RUNS


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


def run_lineage_edges(run_id: str, parent_node: str, relation: str, dataset: str, dataset_version: int, *,
                      created_by: str) -> pd.DataFrame:
    """A run's lineage as rows of registry/lineage_edges: ``parent_node -[relation]-> run:<run_id>`` (what it
    started from, e.g. ``run:<sft run>`` with ``rl_trained_from``) and ``dataset:<name>@v<N> -[trained_on]->
    run:<run_id>`` (the data it read). Training edges belong to no registration (``registration_id`` null)."""
    now = pd.Timestamp.now(tz="UTC")
    run = f"run:{run_id}"
    edges = [(parent_node, relation), (f"dataset:{dataset}@v{int(dataset_version)}", "trained_on")]
    return pd.DataFrame([{"source": source, "target": run, "relation": rel, "registration_id": None,
                          "created_by": created_by, "created_at": now} for source, rel in edges],
                        columns=LINEAGE_EDGES.columns)


def parent_sft_run(lake: DeltaLake, run_id: str | None = None, method: str = "this method") -> dict:
    """The SFT run a DPO, RL or distillation run starts from: ``run_id`` when given, else the newest SFT run."""
    runs = lake.read(TRAINING_RUNS)
    if run_id:
        found = runs[runs["run_id"] == run_id]
        if found.empty:
            raise LookupError(f"parent run {run_id!r} is not in {TRAINING_RUNS.path}; pick one of "
                              f"{sorted(runs['run_id'])[-5:] or 'none (train an SFT checkpoint first)'}")
        return found.iloc[0].to_dict()
    sft = runs[runs["method"] == "sft"]
    if sft.empty:
        raise LookupError(f"no SFT run in {TRAINING_RUNS.path} to start {method} from: materialize "
                          "training/sft_checkpoint first, or name a parent run id")
    return sft.sort_values("finished_at").iloc[-1].to_dict()


def feedback_lineage_edges(run_id: str, window: str, feedback_version: int, *, created_by: str,
                           dataset: str = "feedback") -> pd.DataFrame:
    """A retraining's feedback lineage as rows of registry/lineage_edges: ``window -[curated_from]->
    dataset:feedback@v<N> -[trained_on]-> run:<run_id>``, so that a registered version's ancestors read
    feedback window -> curated examples -> training run. ``window`` is a ``feedback:<start>..<end>`` node."""
    now = pd.Timestamp.now(tz="UTC")
    curated = f"dataset:{dataset}@v{int(feedback_version)}"
    edges = [(window, curated, "curated_from"), (curated, f"run:{run_id}", "trained_on")]
    return pd.DataFrame([{"source": source, "target": target, "relation": relation, "registration_id": None,
                          "created_by": created_by, "created_at": now} for source, target, relation in edges],
                        columns=LINEAGE_EDGES.columns)
