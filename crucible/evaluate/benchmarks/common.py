"""What every benchmark scorer shares: its config base, the order items are taken in, and its output rows."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from crucible.evaluate.benchmarks.intervals import bootstrap_interval, wilson_interval
from schemas import EVAL_RESULTS, EVAL_SUMMARIES

_DIGITS = re.compile(r"(\d+)")


class BenchmarkConfig(BaseModel):
    """Settings every benchmark has. ``limit`` caps the items scored (None: the whole split);
    intervals are at ``ci_level``, bootstrap ones from ``bootstrap_resamples`` draws seeded by ``seed``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: str = "test"
    limit: int | None = Field(default=None, ge=1)
    ci_level: float = Field(default=0.95, gt=0.0, lt=1.0)
    bootstrap_resamples: int = Field(default=1000, ge=100)
    seed: int = 0


def _natural_key(text: str) -> tuple:
    """``file.jsonl:10`` after ``file.jsonl:9``: digit runs compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(text))


def file_order(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order of their source files (``source`` is ``<file>:<line>``), which is the order
    the harness takes a test set in, whatever order the lake returned them in."""
    keys = [(_natural_key(str(source)), _natural_key(str(example_id)))
            for source, example_id in zip(rows["source"], rows["example_id"], strict=True)]
    order = sorted(range(len(rows)), key=keys.__getitem__)
    return rows.iloc[order].reset_index(drop=True)


def split_rows(examples: pd.DataFrame, dataset: str, split: str, benchmark: str) -> pd.DataFrame:
    """The ``dataset`` rows of ``split`` in file order; an error naming the splits there are when none."""
    missing = [c for c in ("dataset", "split", "example_id", "input", "target", "messages", "metadata", "source")
               if c not in examples.columns]
    if missing:
        raise ValueError(f"benchmark {benchmark}: the examples frame lacks columns {missing}; pass rows of "
                         "datasets/examples")
    rows = examples[(examples["dataset"] == dataset) & (examples["split"] == split)]
    if rows.empty:
        present = sorted(examples.loc[examples["dataset"] == dataset, "split"].unique())
        raise ValueError(f"benchmark {benchmark}: no {dataset!r} examples in split {split!r} (splits present: "
                         f"{present or 'none'}); load that split into datasets/examples or set split=")
    return file_order(rows)


def parse_json(text: str, what: str, example_id: str, benchmark: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"benchmark {benchmark}, example {example_id}: {what} is not valid JSON ({error})") from None


def results_frame(rows: list[dict[str, Any]], model_version: str, benchmark: str, split: str,
                  variant: str) -> pd.DataFrame:
    """Per-sample rows in the columns of ``evaluation/results``; ``item_metrics`` dicts become JSON."""
    frame = pd.DataFrame(rows)
    frame["model_version"], frame["benchmark"], frame["split"], frame["variant"] = (
        model_version, benchmark, split, variant)
    frame["item_metrics"] = [json.dumps(m, sort_keys=True) for m in frame["item_metrics"]]
    for column, default in (("subject", None), ("finish_reason", None), ("completion_tokens", 0),
                            ("extracted_answer", None)):
        if column not in frame.columns:
            frame[column] = default
    frame["sample"] = frame["sample"].astype("int64")
    frame["completion_tokens"] = frame["completion_tokens"].astype("int64")
    frame["score"] = frame["score"].astype(float)
    return frame[EVAL_RESULTS.columns]


def proportion_metric(metric: str, outcomes: Sequence[float], config: BenchmarkConfig) -> dict[str, Any]:
    """A share of 0/1 items with its Wilson interval."""
    values = np.asarray(outcomes, dtype=float)
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"metric {metric}: a proportion needs 0/1 outcomes, got {sorted(set(values.tolist()))[:5]}")
    low, high = wilson_interval(int(values.sum()), len(values), config.ci_level)
    return {"metric": metric, "value": float(values.mean()), "ci_low": low, "ci_high": high,
            "ci_method": "wilson", "ci_level": config.ci_level, "n": len(values)}


def mean_metric(metric: str, values: Sequence[float], config: BenchmarkConfig) -> dict[str, Any]:
    """The mean of per-item values with its percentile bootstrap interval over items."""
    array = np.asarray(values, dtype=float)
    low, high = bootstrap_interval(len(array), values=array, level=config.ci_level,
                                   resamples=config.bootstrap_resamples, seed=config.seed)
    return {"metric": metric, "value": float(array.mean()), "ci_low": low, "ci_high": high,
            "ci_method": "bootstrap", "ci_level": config.ci_level, "n": len(array)}


def summaries_frame(metrics: list[dict[str, Any]], model_version: str, benchmark: str, split: str,
                    variant: str) -> pd.DataFrame:
    """Summary rows in the columns of ``evaluation/summaries``."""
    frame = pd.DataFrame(metrics)
    frame["model_version"], frame["benchmark"], frame["split"], frame["variant"] = (
        model_version, benchmark, split, variant)
    frame["n"] = frame["n"].astype("int64")
    return frame[EVAL_SUMMARIES.columns]
