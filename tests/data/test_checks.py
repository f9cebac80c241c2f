"""Examples-table checks on hand-made frames and the shipped benchmarks."""

import json

import pandas as pd
import pytest

from crucible.data import checks
from crucible.data.loaders import load_benchmark


def frame(targets, ids=None, splits=None, dataset="toy") -> pd.DataFrame:
    ids = ids or [f"ex-{n}" for n in range(len(targets))]
    return pd.DataFrame({"dataset": dataset, "split": splits or ["train"] * len(targets), "example_id": ids,
                         "input": "question", "target": targets, "metadata": "{}"})


@pytest.fixture(scope="module")
def humaneval() -> pd.DataFrame:
    return load_benchmark("humaneval").to_frame()


def test_unique_ids_fail_on_a_repeat_within_a_split_only():
    rows = frame(["1", "2", "3", "4"], ids=["a", "b", "a", "a"], splits=["train", "train", "train", "test"])
    result = checks.unique_example_ids(rows)
    assert not result.passed and result.failing_ids == ["a"] and result.failed == 1 and result.checked == 3
    assert result.failures[0].split == "train" and "occurs 2 times" in result.failures[0].reason
    assert checks.unique_example_ids(rows.drop(index=2)).passed


def test_non_empty_targets():
    result = checks.non_empty_targets(frame(["42", "", "  \n", None, "x"]))
    assert result.failing_ids == ["ex-1", "ex-2", "ex-3"] and result.checked == 5
    assert checks.non_empty_targets(frame(["a", "b"])).passed


@pytest.mark.parametrize("target, ok", [("72", True), ("-3", True), ("0.5", True), ("18.", False),
                                        ("1,000", False), ("$5", False), ("five", False), ("", False),
                                        ("nan", False)])
def test_gsm8k_targets_are_numbers(target, ok):
    assert checks.gsm8k_numeric_targets(frame([target])).passed is ok


def test_gsm8k_and_mmlu_shipped_targets_pass():
    gsm8k = load_benchmark("gsm8k", splits=["test"]).to_frame()
    assert checks.gsm8k_numeric_targets(gsm8k).passed and checks.gsm8k_numeric_targets(gsm8k).checked == 1319
    mmlu = load_benchmark("mmlu", splits=["val"]).to_frame()
    assert checks.mmlu_targets_in_range(mmlu).passed


def test_mmlu_targets_in_range():
    result = checks.mmlu_targets_in_range(frame(["0", "1", "2", "3", "4", "A", "-1", " 1"]))
    assert result.failing_ids == ["ex-4", "ex-5", "ex-6", "ex-7"]
    assert "'A' is not a choice index" in result.failures[1].reason


def test_all_humaneval_canonical_solutions_pass(humaneval):
    result = checks.humaneval_solutions_pass(humaneval)
    assert result.checked == 164
    assert result.passed, result.failures[:3]


def test_broken_and_looping_humaneval_solutions_fail(humaneval):
    rows = humaneval.head(3).copy()
    rows.loc[0, "target"] = "    return None\n"
    rows.loc[1, "target"] = "    while True:\n        pass\n"
    result = checks.humaneval_solutions_pass(rows, timeout=1.0)
    reasons = {failure.example_id: failure.reason for failure in result.failures}
    assert set(reasons) == {"HumanEval/0", "HumanEval/1"}
    assert reasons["HumanEval/0"].startswith("exit code 1: AssertionError")
    assert reasons["HumanEval/1"] == "timed out after 1 s"


def test_humaneval_row_without_tests_fails_without_running():
    rows = frame(["    return 1\n"], ids=["HumanEval/x"]).assign(metadata=json.dumps({"entry_point": "f"}))
    assert checks.humaneval_solutions_pass(rows).failures[0].reason == "metadata lacks 'test' or 'entry_point'"
