"""Evaluate a model version on a benchmark into the lake, and gate a candidate against production.

Both evaluation assets (the candidate step of the retraining chain and the partitioned
model-version x benchmark backfill) run the same steps through here, so a slice written by either
is the same slice: rows of ``(model_version, benchmark)`` in ``evaluation/results`` and
``evaluation/summaries``, replaced whole on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from crucible.evaluate.benchmarks import benchmark_spec, evaluate_benchmark
from crucible.evaluate.gate import GateDecision, gate_decision
from crucible.lake import DeltaLake
from crucible.quarantine import StoredTable, store_validated
from crucible.train.data import RowsNotLoadedError, select_rows
from schemas import EVAL_RESULTS, EVAL_SUMMARIES, EXAMPLES, TRAINING_RUNS


class DatasetNotLoadedError(LookupError):
    """A benchmark's dataset has no rows in datasets/examples."""


@dataclass(frozen=True)
class BenchmarkRun:
    """What evaluating one (model version, benchmark) slice wrote."""

    model_version: str
    benchmark: str
    results: StoredTable
    summaries: pd.DataFrame
    examples_version: int

    @property
    def headline(self) -> tuple[str, float]:
        metric = benchmark_spec(self.benchmark).headline_metric
        values = self.summaries.loc[self.summaries["metric"] == metric, "value"]
        return metric, float(values.iloc[0]) if len(values) else float("nan")


def checkpoint_of(lake: DeltaLake, model_version: str) -> str:
    """The checkpoint folder of a model version (its training run id)."""
    runs = lake.read(TRAINING_RUNS, where={"run_id": model_version})
    if runs.empty:
        known = lake.read(TRAINING_RUNS, columns=["run_id"])["run_id"].tolist()
        raise LookupError(f"model version {model_version!r}: no training run with that id in {TRAINING_RUNS.path} "
                          f"(known: {', '.join(sorted(known)[-5:]) or 'none'}); train it first")
    uri = str(runs["checkpoint_uri"].iloc[0])
    if not Path(uri).exists():
        raise FileNotFoundError(f"model version {model_version!r}: its checkpoint {uri} is gone")
    return uri


def benchmark_examples(lake: DeltaLake, benchmark: str) -> tuple[pd.DataFrame, int]:
    """Every row (all splits) of the benchmark's dataset and the examples-table version read."""
    spec = benchmark_spec(benchmark)
    try:
        return select_rows(lake, spec.dataset)
    except RowsNotLoadedError:
        raise DatasetNotLoadedError(
            f"benchmark {benchmark} needs dataset {spec.dataset!r} in {EXAMPLES.path}, which has none of its rows: "
            f"run dataset_ingest_job for partition {spec.dataset!r} first") from None


def evaluate_version(lake: DeltaLake, model_version: str, benchmark: str, config: Mapping[str, Any] | None = None,
                     engine: Any = None, sandbox: Any = None) -> BenchmarkRun:
    """Score ``model_version`` on ``benchmark`` and replace its slice of the evaluation tables."""
    rows, examples_version = benchmark_examples(lake, benchmark)
    if engine is None:
        from crucible.inference import InferenceEngine

        engine = InferenceEngine.from_checkpoint(checkpoint_of(lake, model_version))
    results, summaries = evaluate_benchmark(benchmark, engine, rows, model_version, config, sandbox=sandbox)
    where = {"model_version": model_version, "benchmark": benchmark}
    source = f"evaluation of {model_version} on {benchmark} (datasets/examples@{examples_version})"
    stored = store_validated(lake, EVAL_RESULTS, results, source=source, replace_where=where)
    store_validated(lake, EVAL_SUMMARIES, summaries, source=source, replace_where=where)
    return BenchmarkRun(model_version, benchmark, stored, summaries, examples_version)


def has_results(lake: DeltaLake, model_version: str, benchmark: str) -> bool:
    rows = lake.read(EVAL_SUMMARIES, where={"model_version": model_version, "benchmark": benchmark},
                     columns=["metric"])
    return not rows.empty


def results_of(lake: DeltaLake, model_version: str, benchmarks: Sequence[str]) -> pd.DataFrame:
    """Per-sample rows of ``model_version`` on ``benchmarks``."""
    return lake.read(EVAL_RESULTS, where={"model_version": model_version, "benchmark": list(benchmarks)})


def gate_candidate(lake: DeltaLake, candidate: str, production: str | None, benchmarks: Sequence[str],
                   alpha: float = 0.05, min_effect: float = 0.0) -> GateDecision:
    """The promotion gate of ``candidate`` against the ``production`` version on ``benchmarks``
    (both must have been evaluated on them; the comparison pairs the items both scored)."""
    kinds = {name: benchmark_spec(name).score_kind for name in benchmarks}
    candidate_rows = results_of(lake, candidate, benchmarks)
    missing = sorted(set(benchmarks) - set(candidate_rows["benchmark"]))
    if missing:
        raise LookupError(f"gate: candidate {candidate} has no results on {', '.join(missing)}; evaluate it first")
    production_rows = results_of(lake, production, benchmarks) if production and production != candidate else None
    return gate_decision(candidate_rows, production_rows, kinds, alpha=alpha, min_effect=min_effect)
