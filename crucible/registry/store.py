"""The model registry on the lake: register a checkpoint as the next version, with its lineage."""

from __future__ import annotations

import json

import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import StoredTable, store_validated
from crucible.registry.versions import artifact_sha256, next_version
from schemas import LINEAGE_EDGES, MODEL_VERSIONS


def latest_version(lake: DeltaLake, model_name: str) -> dict | None:
    versions = lake.read(MODEL_VERSIONS, where={"model_name": model_name})
    if versions.empty:
        return None
    return versions.sort_values("version").iloc[-1].to_dict()


def register_checkpoint(lake: DeltaLake, model_name: str, run: dict, metrics: dict[str, float],
                        stage: str = "candidate") -> tuple[dict, StoredTable]:
    """Register ``run``'s checkpoint; the same artifact (same sha256) is never registered twice."""
    sha = artifact_sha256(run["checkpoint_uri"])
    versions = lake.read(MODEL_VERSIONS, where={"model_name": model_name})
    same = versions[versions["sha256"] == sha]
    version = int(same["version"].iloc[0]) if len(same) else next_version(versions["version"].astype(int).tolist())
    row = {
        "model_name": model_name, "version": version, "artifact_uri": run["checkpoint_uri"], "sha256": sha,
        "metrics": json.dumps(metrics, sort_keys=True), "training_run_id": run["run_id"],
        "dataset": run["dataset"], "dataset_version": int(run["dataset_version"]), "stage": stage,
        "created_at": same["created_at"].iloc[0] if len(same) else pd.Timestamp.now(tz="UTC"),
    }
    stored = store_validated(lake, MODEL_VERSIONS, pd.DataFrame([row]), source=f"training run {run['run_id']}")
    model_ref = f"model:{model_name}/v{version}"
    edges = pd.DataFrame([
        {"source": f"dataset:{run['dataset']}@v{int(run['dataset_version'])}", "target": f"run:{run['run_id']}",
         "relation": "trained_on"},
        {"source": f"run:{run['run_id']}", "target": f"checkpoint:{run['checkpoint_uri']}", "relation": "produced"},
        {"source": f"checkpoint:{run['checkpoint_uri']}", "target": model_ref, "relation": "registered_as"},
        {"source": f"base:{run['base_model']}", "target": f"run:{run['run_id']}", "relation": "fine_tuned_from"},
    ])
    store_validated(lake, LINEAGE_EDGES, edges, source=model_ref)
    return row, stored
