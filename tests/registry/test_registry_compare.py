"""Registered versions side by side: config, metric and lineage differences, and the evaluation layer's statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crucible.evaluate.compare import compare_versions
from crucible.evaluate.report import comparison_json
from crucible.evaluate.runner import results_of
from crucible.quarantine import store_validated
from crucible.registry.compare import compare_registered
from crucible.registry.registry import Registry
from crucible.registry.storage import LocalStore
from schemas import EVAL_RESULTS
from tests.registry.conftest import ADMIN, make_checkpoint, register


def eval_rows(run_id: str, benchmark: str, scores: list[float], first_item: int = 0) -> pd.DataFrame:
    """Per-item evaluation rows of ``run_id`` as the benchmark scorers write them."""
    n = len(scores)
    return pd.DataFrame({
        "model_version": run_id, "benchmark": benchmark, "example_id": [f"{benchmark}-{first_item + i}" for i in range(n)],
        "sample": 0, "split": "test", "subject": None, "variant": "chat", "prompt": "q", "output": "a",
        "extracted_answer": None, "gold": "a", "score": scores, "item_metrics": "{}", "finish_reason": "stop",
        "completion_tokens": 1})


def store_results(lake, frame: pd.DataFrame) -> None:
    version, benchmark = frame["model_version"].iloc[0], frame["benchmark"].iloc[0]
    store_validated(lake, EVAL_RESULTS, frame, source="test", replace_where={"model_version": version,
                                                                             "benchmark": benchmark})


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    from crucible.lake import DeltaLake

    return DeltaLake(tmp_path_factory.mktemp("compare") / "lake")


@pytest.fixture(scope="module")
def versions(lake, tmp_path_factory):
    """v1 and v2 of 'tiny' with different configs, metrics and lineage, both scored on GSM8K and NoRobots;
    v3 scored on nothing, v4 on GSM8K only (written once for the module: registering is the slow part)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    admin = Registry(lake, ADMIN, LocalStore(folder / "store"))
    base = {"hyperparameters": {"lr": 1e-3, "max_steps": 10, "seed": 0}, "dataset": {"name": "gsm8k"}}
    v1 = register(admin, make_checkpoint(folder / "1", 1), training_run_id="run-a", training_config=base, base_model="tiny-llama",
                  metrics={"gsm8k/exact_match": 0.25, "loss": 1.5},
                  lineage_from=[("dataset:gsm8k@v3", "evaluated_on")])
    changed = {"hyperparameters": {"lr": 5e-4, "max_steps": 10, "seed": 0, "warmup": 2}, "dataset": {"name": "gsm8k"}}
    v2 = register(admin, make_checkpoint(folder / "2", 2), training_run_id="run-b", training_config=changed, parent_version=1,
                  dataset_version=4, metrics={"gsm8k/exact_match": 0.5, "norobots/rougeL": 0.3},
                  lineage_from=[("feedback:2026-11-01..2026-11-07", "curated_from")])
    rng = np.random.default_rng(7)
    store_results(lake, eval_rows("run-a", "gsm8k", rng.integers(0, 2, 40).astype(float).tolist()))
    store_results(lake, eval_rows("run-b", "gsm8k", rng.integers(0, 2, 40).astype(float).tolist(), first_item=5))
    store_results(lake, eval_rows("run-a", "norobots", rng.uniform(0, 1, 12).round(3).tolist()))
    store_results(lake, eval_rows("run-b", "norobots", rng.uniform(0, 1, 12).round(3).tolist()))
    v3 = register(admin, make_checkpoint(folder / "3", 3), training_run_id="run-c")
    v4 = register(admin, make_checkpoint(folder / "4", 4), training_run_id="run-d")
    store_results(lake, eval_rows("run-d", "gsm8k", [1.0] * 40))
    return v1, v2, v3, v4


@pytest.fixture
def two_versions(versions):
    return versions[:2]


def test_statistics_are_the_evaluation_layers_paired_comparison(lake, two_versions):
    v1, v2 = two_versions
    result = compare_registered(lake, [v1, v2], n_resamples=500, seed=3)

    kinds = {"gsm8k": "binary", "norobots": "continuous"}
    expected = compare_versions(results_of(lake, "run-a", list(kinds)), results_of(lake, "run-b", list(kinds)),
                                kinds, n_resamples=500, seed=3)
    [stats] = result.statistics
    assert comparison_json(stats) == comparison_json(expected)
    assert stats.get("gsm8k").n_paired == 35 and stats.get("gsm8k").n_unpaired_candidate == 5
    assert result.to_dict()["statistics"] == [comparison_json(expected)]
    markdown = result.markdown()
    assert "## Evaluation (paired statistics)" in markdown and "| gsm8k |" in markdown and "| norobots |" in markdown


def test_config_metric_and_lineage_differences(lake, two_versions):
    v1, v2 = two_versions
    result = compare_registered(lake, [v1, v2], benchmarks=["gsm8k"], n_resamples=200)

    assert result.labels == ("v1", "v2")
    assert result.config_diff == {"hyperparameters.lr": {"v1": 1e-3, "v2": 5e-4},
                                  "hyperparameters.warmup": {"v1": None, "v2": 2}}
    assert result.metrics == {"gsm8k/exact_match": {"v1": 0.25, "v2": 0.5}, "loss": {"v1": 1.5, "v2": None},
                              "norobots/rougeL": {"v1": None, "v2": 0.3}}
    assert result.metric_deltas["gsm8k/exact_match"] == {"v2": 0.25}
    assert result.metric_deltas["loss"] == {"v2": None}
    # v2 descends from v1, so v1's own ancestors are shared; what differs is each one's direct inputs.
    assert set(result.lineage_shared) == {"run:run-a", "dataset:gsm8k@v3", "base:tiny-llama"}
    assert result.lineage_only["v2"]["ancestors"] == ["dataset:gsm8k@v4", "feedback:2026-11-01..2026-11-07",
                                                      "model:tiny/v1", "run:run-b"]
    assert "model:tiny/v1 -[fine_tuned_from]-> <self>" in result.lineage_only["v2"]["edges"]
    assert "base:tiny-llama -[fine_tuned_from]-> <self>" in result.lineage_only["v1"]["edges"]
    assert "v1" not in result.lineage_only or not result.lineage_only["v1"]["ancestors"]
    assert [s.benchmarks[0].benchmark for s in result.statistics] == ["gsm8k"]

    data = result.to_dict()
    assert data["versions"][1]["dataset"] == "gsm8k@v4" and data["config_diff"]["hyperparameters.warmup"]["v1"] is None
    markdown = result.markdown()
    assert "| hyperparameters.lr | 0.001 | 0.0005 |" in markdown
    assert "| gsm8k/exact_match | 0.25 | 0.5 | +0.25 |" in markdown
    assert "feedback:2026-11-01..2026-11-07" in markdown


def test_versions_without_shared_results_get_a_note_instead_of_statistics(lake, versions):
    v1, _, v3, _ = versions
    result = compare_registered(lake, [v1, v3])
    assert result.statistics == ()
    assert result.notes == ("v3 vs v1: no benchmark with results for both on the same items (runs run-c and run-a)",)
    assert "No shared evaluation results." in result.markdown()


def test_three_versions_compare_each_against_the_first(lake, versions):
    v1, v2, _, v4 = versions
    result = compare_registered(lake, [v1, v2, v4], benchmarks=["gsm8k"], n_resamples=200)
    assert [(s.baseline_version, s.candidate_version) for s in result.statistics] == [("run-a", "run-b"),
                                                                                     ("run-a", "run-d")]
    assert set(result.metric_deltas["gsm8k/exact_match"]) == {"v2", "v4"}


def test_bad_inputs_are_named(lake, two_versions):
    v1, v2 = two_versions
    with pytest.raises(ValueError, match="at least two versions"):
        compare_registered(lake, [v1])
    with pytest.raises(ValueError, match="the same version is given twice"):
        compare_registered(lake, [v1, v1])
    with pytest.raises(ValueError, match=r"unknown benchmarks \['gsm9k'\]"):
        compare_registered(lake, [v1, v2], benchmarks=["gsm9k"])
