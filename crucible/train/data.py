"""Which rows feed a run, and what every run leaves on the lake: its id, its run row, its rejected examples.

Every training method (SFT, DPO, RL, distillation) and evaluation select rows here, pinned to the
datasets/examples version they record, so a run can be repeated on exactly the data it saw.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from crucible.lake import DeltaLake, WriteResult
from crucible.quarantine import quarantine_rows, store_quarantined
from schemas import EXAMPLES

if TYPE_CHECKING:
    from crucible.train.recipes import Recipe


@dataclass
class RejectedExample:
    """An example a run could not train on, and why (stored in quarantine, never trained silently)."""

    example_id: str
    reason: str


class RowsNotLoadedError(LookupError):
    """The rows asked for are not in datasets/examples at the version asked for."""

    def __init__(self, message: str, dataset: str, split: str | None, version: int):
        super().__init__(message)
        self.dataset, self.split, self.version = dataset, split, version


def new_run_id(method: str, now: dt.datetime | None = None) -> str:
    """A fresh run id, ``<method>-<UTC time>-<6 hex>``: sortable by start time, unique across processes."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{method}-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def select_rows(lake: DeltaLake, dataset: str, split: str | None = None, limit: int | None = None,
                table_version: int | None = None, *, recipe: str | None = None) -> tuple[pd.DataFrame, int]:
    """Rows of ``dataset`` in datasets/examples and the table version they were read at.

    ``split`` None takes every split. ``table_version`` None pins the newest version, so the rows
    and the version returned always agree. With ``limit`` the first ``limit`` rows by example_id are
    kept. ``recipe`` names who asks, so the error says "recipe X trains on ...". Raises
    :class:`RowsNotLoadedError` naming what the table holds and what to run.
    """
    wanted = f"{dataset}/{split}" if split is not None else dataset
    asker = f"recipe {recipe} trains on {wanted}" if recipe else f"rows of {wanted} were asked for"
    version = table_version if table_version is not None else lake.version(EXAMPLES)
    if version < 0:
        raise RowsNotLoadedError(
            f"{asker}, but no dataset has been loaded yet ({EXAMPLES.path} does not exist): run dataset_ingest_job "
            f"for partition {dataset!r} first", dataset, split, version)
    where = {"dataset": dataset} | ({"split": split} if split is not None else {})
    rows = lake.read(EXAMPLES, where=where, version=version)
    if rows.empty:
        loaded = lake.read(EXAMPLES, columns=["dataset", "split"], version=version).drop_duplicates()
        held = ", ".join(sorted(f"{r.dataset}/{r.split}" for r in loaded.itertuples())) or "none"
        pick = ', or pick a loaded one with overrides {"dataset.name": ..., "dataset.split": ...}' if recipe else ""
        raise RowsNotLoadedError(
            f"{asker}, but {EXAMPLES.path} (version {version}) has no such rows; it holds {held}. "
            f"Run dataset_ingest_job for {dataset!r}{pick}", dataset, split, version)
    if limit:
        rows = rows.sort_values("example_id").head(limit)
    return rows, version


def data_source(dataset: str, split: str | None, version: int) -> str:
    """How a run names the data it read: ``gsm8k/train@v3`` (the quarantine source and the metadata)."""
    return f"{dataset}/{split}@v{version}" if split is not None else f"{dataset}@v{version}"


def quarantine_rejected(lake: DeltaLake, method: str, rejected: Sequence[RejectedExample], source: str, *,
                        key: str = "example_id") -> WriteResult | None:
    """Store the examples a ``method`` run rejected in quarantine (table ``training/<method>_input``).

    ``source`` is where they were read (:func:`data_source`); ``key`` names the id column
    (``pair_id`` for preference pairs). Re-quarantining the same example is a no-op.
    """
    return store_quarantined(lake, quarantine_rows(
        f"training/{method}_input", (({key: r.example_id}, source, r.reason) for r in rejected)))


def build_run_row(run_id: str, recipe: Recipe, *, dataset: str, dataset_version: int, steps: int,
                  final_loss: float | None, tokens_per_second: float, checkpoint_uri: str,
                  started_at: pd.Timestamp, method: str | None = None, base_model: str | None = None,
                  trigger_reason: str = "manual", data_window: str = "",
                  finished_at: pd.Timestamp | None = None) -> dict:
    """The training/runs row of a finished run (``record_run`` stores it).

    ``method`` and ``base_model`` default to the recipe's (a tiny model is named ``tiny-<family>``);
    ``finished_at`` defaults to now.
    """
    from crucible.train.recipes import recipe_hash  # evaluation selects rows here without loading recipes

    if base_model is None:
        base = recipe.base_model
        base_model = base.name_or_path or f"tiny-{base.tiny.family}"
    return {
        "run_id": run_id, "method": method or recipe.method, "recipe_name": recipe.name,
        "recipe_hash": recipe_hash(recipe), "base_model": base_model, "dataset": dataset,
        "dataset_version": int(dataset_version), "trigger_reason": trigger_reason, "data_window": data_window,
        "steps": int(steps), "final_loss": final_loss, "tokens_per_second": float(tokens_per_second or 0.0),
        "checkpoint_uri": str(checkpoint_uri), "started_at": started_at,
        "finished_at": finished_at if finished_at is not None else pd.Timestamp.now(tz="UTC"),
    }


@dataclass
class FeedbackRows:
    """The curated examples of a feedback window that a retraining adds to its recipe's rows."""

    rows: pd.DataFrame
    version: int  # the datasets/examples version they were read at
    window: str  # the lineage node of the window, feedback:<start>..<end>


def select_feedback_rows(lake: DeltaLake, start: dt.date, end: dt.date, version: int | None = None,
                         *, dataset: str = "feedback", split: str = "train") -> FeedbackRows:
    """The curated training examples of the window ``start..end`` (the ``feedback/train`` slice that
    feedback/curated_examples writes), read at ``version`` (None: the newest).

    Raises :class:`RowsNotLoadedError` when the slice holds another window's examples: the curation of this
    window has not run (retrain_job runs it first when its config names the same window).
    """
    from crucible.registry.lineage import feedback_node

    window = feedback_node(start, end)
    version = lake.version(EXAMPLES) if version is None else version
    if version < 0:
        return FeedbackRows(pd.DataFrame(columns=EXAMPLES.columns), version, window)
    rows = lake.read(EXAMPLES, where={"dataset": dataset, "split": split}, version=version)
    others = sorted(set(rows["source"]) - {window})
    if others:
        raise RowsNotLoadedError(
            f"a retraining on {window} reads the curated examples of that window from {EXAMPLES.path} (version "
            f"{version}, {dataset}/{split}), but they are those of {', '.join(others)}: materialize "
            f"feedback/curated_examples with window_start={start} and window_end={end} first (retrain_job does "
            f"when both assets' configs name the same window)", dataset, split, version)
    return FeedbackRows(rows.sort_values("example_id").reset_index(drop=True), version, window)
