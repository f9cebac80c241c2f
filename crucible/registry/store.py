"""The registry's first API, kept for the current asset graph: newest version, register a training run's checkpoint.

Both go through :class:`crucible.registry.registry.Registry`; new code should use it directly (with a
principal, e.g. ``Registry.for_service``).
"""

from __future__ import annotations

from crucible.lake import DeltaLake
from crucible.quarantine import StoredTable
from crucible.registry.access import Principal
from crucible.registry.registry import Registry, committed_versions
from crucible.registry.versions import normalize_stage
from schemas import MODEL_VERSIONS

# The principal the pre-access-control pipeline acts as until it is given a token of its own.
PIPELINE = Principal("pipeline:register_checkpoint", frozenset({"trainer"}))
_DERIVED_BY = {"sft": "fine_tuned_from", "dpo": "dpo_trained_from", "rl": "rl_trained_from",
               "distill": "distilled_from"}


def latest_version(lake: DeltaLake, model_name: str) -> dict | None:
    """The newest committed version's row (the ``registry/versions`` columns), None when there is none."""
    versions = committed_versions(lake, model_name)
    if versions.empty:
        return None
    return versions.iloc[-1].to_dict()


def serving_version(lake: DeltaLake, model_name: str) -> dict | None:
    """The version that serves: the production one, else the newest (nothing promoted yet, as in the
    demo); None before the first registration."""
    versions = committed_versions(lake, model_name)
    if versions.empty:
        return None
    in_production = versions.loc[versions["stage"] == "production"]
    return (in_production if len(in_production) else versions).iloc[-1].to_dict()


def register_checkpoint(lake: DeltaLake, model_name: str, run: dict, metrics: dict[str, float],
                        stage: str = "experiment") -> tuple[dict, StoredTable]:
    """Register ``run``'s checkpoint; the same weights (same sha256) return the version already registered."""
    registry = Registry(lake, PIPELINE)
    registered = registry.register(
        model_name, {"checkpoint": run["checkpoint_uri"]}, training_run_id=run["run_id"], dataset=run["dataset"],
        dataset_version=int(run["dataset_version"]), metrics=metrics, recipe_name=run.get("recipe_name"),
        recipe_hash=run.get("recipe_hash"), base_model=run.get("base_model"),
        derived_by=_DERIVED_BY.get(run.get("method", "sft"), "fine_tuned_from"),
        lineage_from=[(f"checkpoint:{run['checkpoint_uri']}", "registered_as")], stage=normalize_stage(stage))
    versions = committed_versions(lake, model_name)
    row = versions.loc[versions["version"] == registered.version].iloc[0].to_dict()
    stored = StoredTable(MODEL_VERSIONS.path, 1, 1, 0, lake.version(MODEL_VERSIONS), [])
    return row, stored

