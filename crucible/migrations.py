"""Ordered schema-migration steps of the lake's tables, recorded in ``_crucible/migrations``, safe to re-run.

Each table stores its schema version in the Delta property ``crucible.schema_version``; the code's
is ``TableSpec.schema_version``. A step moves one table from version N to N+1. Additive steps (new
nullable columns) also run by themselves on the next write; any other step waits for
``crucible lake migrate``, and until then writes to that table refuse.

Re-running is safe: a step is done in the order apply, record, bump the stored version, and every
step is idempotent, so a step interrupted at any point runs again from the start and a step whose
version was bumped is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from schemas import (
    ALL_TABLES,
    BASELINES,
    DRIFT_REPORTS,
    EVAL_RESULTS,
    EVAL_SUMMARIES,
    INFERENCE_EVENTS,
    LAKE_MIGRATIONS,
    QUARANTINE,
    TableSpec,
)

if TYPE_CHECKING:
    from crucible.lake import DeltaLake


@dataclass(frozen=True)
class MigrationStep:
    """One table's move from ``from_version`` to ``from_version + 1``."""

    table: str
    from_version: int
    description: str
    additive: bool
    apply: Callable[[DeltaLake, TableSpec], None]

    @property
    def to_version(self) -> int:
        return self.from_version + 1

    @property
    def step_id(self) -> str:
        return f"{self.table}@{self.from_version}->{self.to_version}"


@dataclass(frozen=True)
class StepOutcome:
    step_id: str
    table: str
    description: str
    status: str  # "applied", or "pending" under a dry run
    table_version: int


def add_new_columns(lake: DeltaLake, spec: TableSpec) -> None:
    """Additive step: add the spec's new nullable columns to the stored schema (old rows read null)."""
    lake.ensure(spec)


def backfill_quarantine_origin(lake: DeltaLake, spec: TableSpec) -> None:
    """quarantine/rows v2 -> v3: give rows from before v2 an origin, so a scoped write can replace them.

    One merge on the key updates only rows whose origin is still null, so running it again changes
    nothing.
    """
    from crucible.quarantine import legacy_origin

    rows = lake.read(spec)
    missing = rows.loc[rows["origin"].isna()].copy()
    if missing.empty:
        return
    missing["origin"] = [legacy_origin(t, s, r) for t, s, r in
                         zip(missing["table"], missing["source"], missing["record"], strict=True)]
    lake.upsert(spec, missing)


# What schema version 1 of the evaluation tables could not say, written into their migrated rows.
LEGACY_SPLIT = "test"
LEGACY_VARIANT = "legacy"
# A v1 summary had no interval: ci_low = ci_high = value, method "none"; the level is only a placeholder
# the schema requires (the evaluation default), since a zero-width "interval" has no coverage.
LEGACY_CI_LEVEL = 0.95


def eval_results_v1_to_v2(rows: pd.DataFrame) -> pd.DataFrame | None:
    """evaluation/results rows of schema v1 in the v2 shape; None when they already are (a re-run).

    prediction -> output, target -> gold, correct -> score (0.0/1.0), correct and rouge_l kept in
    item_metrics; v1 knew no split, subject, prompt variant, finish reason or token count.
    """
    if "correct" not in rows.columns:
        return None
    return pd.DataFrame({
        "model_version": rows["model_version"], "benchmark": rows["benchmark"], "example_id": rows["example_id"],
        "sample": rows["sample"], "split": LEGACY_SPLIT, "subject": None, "variant": LEGACY_VARIANT,
        "prompt": rows["prompt"], "output": rows["prediction"], "extracted_answer": rows["extracted_answer"],
        "gold": rows["target"], "score": rows["correct"].astype(float),
        "item_metrics": [json.dumps({"correct": bool(c), "rouge_l": float(r)})
                         for c, r in zip(rows["correct"], rows["rouge_l"], strict=True)],
        "finish_reason": None, "completion_tokens": 0,
    }, index=rows.index)


def eval_summaries_v1_to_v2(rows: pd.DataFrame) -> pd.DataFrame | None:
    """evaluation/summaries rows of schema v1 in the v2 shape; None when they already are (a re-run).

    The value is kept with no interval around it (ci_method "none", ci_low = ci_high = value);
    num_examples -> n, raised to 1 where v1 stored 0 (v2 counts at least one item).
    """
    if "num_examples" not in rows.columns:
        return None
    return pd.DataFrame({
        "model_version": rows["model_version"], "benchmark": rows["benchmark"], "metric": rows["metric"],
        "value": rows["value"], "ci_low": rows["value"], "ci_high": rows["value"], "ci_method": "none",
        "ci_level": LEGACY_CI_LEVEL, "n": rows["num_examples"].clip(lower=1), "split": LEGACY_SPLIT,
        "variant": LEGACY_VARIANT,
    }, index=rows.index)


def rewrite_eval_results(lake: DeltaLake, spec: TableSpec) -> None:
    """evaluation/results v1 -> v2: rewrite the table in the new columns (history keeps the old ones)."""
    lake.rewrite(spec, eval_results_v1_to_v2)


def rewrite_eval_summaries(lake: DeltaLake, spec: TableSpec) -> None:
    """evaluation/summaries v1 -> v2: rewrite the table in the new columns (history keeps the old ones)."""
    lake.rewrite(spec, eval_summaries_v1_to_v2)


# Schema version 1 of feedback/inference_events was written only by the simulated-traffic asset.
LEGACY_EVENTS_SOURCE = "simulation"
LEGACY_EVENTS_DEPLOYMENT = "simulation"


def inference_events_v1_to_v2(rows: pd.DataFrame) -> pd.DataFrame | None:
    """feedback/inference_events rows of schema v1 in the v2 shape; None when they already are (a re-run).

    v1 rows came from the simulation: deployment and source "simulation", no user or session, and
    ``ingested_at`` = their timestamp (v1 did not record when a row was written). Tokens and latency
    keep their values in the now nullable columns.
    """
    if "deployment" in rows.columns:
        return None
    return rows.assign(
        deployment=LEGACY_EVENTS_DEPLOYMENT, user_id=None, session_id=None, source=LEGACY_EVENTS_SOURCE,
        ingested_at=rows["timestamp"], prompt_tokens=rows["prompt_tokens"].astype("Int64"),
        response_tokens=rows["response_tokens"].astype("Int64"))


def rewrite_inference_events(lake: DeltaLake, spec: TableSpec) -> None:
    """feedback/inference_events v1 -> v2: rewrite in the new columns and nullability (history keeps v1)."""
    lake.rewrite(spec, inference_events_v1_to_v2)


STEPS: tuple[MigrationStep, ...] = (
    MigrationStep(QUARANTINE.path, 1, "add the nullable column origin (the scope a write replaces)",
                  additive=True, apply=add_new_columns),
    MigrationStep(QUARANTINE.path, 2, "back-fill origin of rows quarantined before version 2 from their "
                  "table's partition value in the record, else their source", additive=False,
                  apply=backfill_quarantine_origin),
    MigrationStep(EVAL_RESULTS.path, 1, "rewrite in the v2 columns: prediction -> output, target -> gold, "
                  "correct -> score, correct and rouge_l -> item_metrics; split 'test', variant 'legacy'",
                  additive=False, apply=rewrite_eval_results),
    MigrationStep(EVAL_SUMMARIES.path, 1, "rewrite in the v2 columns: num_examples -> n, no interval "
                  "(ci_method 'none', ci_low = ci_high = value); split 'test', variant 'legacy'",
                  additive=False, apply=rewrite_eval_summaries),
    MigrationStep(BASELINES.path, 1, "add the nullable snapshot columns snapshot_id, kind, table_versions, trigger",
                  additive=True, apply=add_new_columns),
    MigrationStep(INFERENCE_EVENTS.path, 1, "rewrite with deployment and source 'simulation', no user or session, "
                  "ingested_at = timestamp; tokens and latency become nullable", additive=False,
                  apply=rewrite_inference_events),
    MigrationStep(DRIFT_REPORTS.path, 1, "add the nullable column explanation (the key widens to day, detector, "
                  "feature)", additive=True, apply=add_new_columns),
)


def pending_steps(spec: TableSpec, stored_version: int) -> list[MigrationStep]:
    """The steps that take ``spec``'s table from ``stored_version`` to the code's version, in order."""
    steps = {step.from_version: step for step in STEPS if step.table == spec.path}
    pending = []
    for version in range(stored_version, spec.schema_version):
        if version not in steps:
            raise LookupError(f"table {spec.path}: no migration step from schema version {version} to "
                              f"{version + 1} in crucible/migrations.py")
        pending.append(steps[version])
    return pending


def run_step(lake: DeltaLake, spec: TableSpec, step: MigrationStep) -> StepOutcome:
    """Apply one step, record it, then bump the stored schema version (see the module docstring)."""
    before = lake.version(spec)
    with lake.migrating(spec):
        step.apply(lake, spec)
    after = lake.version(spec)
    lake.upsert(LAKE_MIGRATIONS, pd.DataFrame([{
        "step_id": step.step_id, "table": step.table, "from_version": step.from_version,
        "to_version": step.to_version, "description": step.description, "additive": step.additive,
        "table_version_before": before, "table_version_after": after, "applied_at": pd.Timestamp.now(tz="UTC"),
    }]))
    lake.set_schema_version(spec, step.to_version)
    return StepOutcome(step.step_id, step.table, step.description, "applied", lake.version(spec))


def migrate(lake: DeltaLake, specs: Sequence[TableSpec] = ALL_TABLES, dry_run: bool = False) -> list[StepOutcome]:
    """Run every pending step of every created table (tables not created yet start at the current version)."""
    outcomes = []
    for spec in specs:
        stored = lake.stored_schema_version(spec)
        if stored is None:
            continue
        for step in pending_steps(spec, stored):
            if dry_run:
                outcomes.append(StepOutcome(step.step_id, step.table, step.description, "pending", lake.version(spec)))
            else:
                outcomes.append(run_step(lake, spec, step))
    return outcomes
