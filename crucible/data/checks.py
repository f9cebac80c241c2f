"""Quality checks on one dataset's rows of the examples table: each returns whether it passed, how many
rows it looked at and which examples failed and why."""

from __future__ import annotations

import dataclasses
import json
import re

import pandas as pd

from crucible.sandbox import Sandbox, check_humaneval_many

# A plain decimal number, as GSM8K answer extraction (crucible.data.metrics) can match it.
_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
MMLU_ANSWERS = ("0", "1", "2", "3")


@dataclasses.dataclass(frozen=True)
class ExampleFailure:
    split: str
    example_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ExampleCheckResult:
    """The outcome of one check: ``checked`` rows looked at, one failure per failing example."""

    check: str
    checked: int
    failures: tuple[ExampleFailure, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def failing_ids(self) -> list[str]:
        return list(dict.fromkeys(failure.example_id for failure in self.failures))


def _result(check: str, frame: pd.DataFrame, failing: pd.Series, reasons: pd.Series | str) -> ExampleCheckResult:
    """Failures for the rows where ``failing`` is true, in (split, example_id) order."""
    rows = frame.assign(_reason=reasons).loc[failing.to_numpy(dtype=bool)]
    rows = rows.sort_values(["split", "example_id"])
    failures = tuple(ExampleFailure(str(split), str(example_id), reason)
                     for split, example_id, reason in zip(rows["split"], rows["example_id"], rows["_reason"],
                                                          strict=True))
    return ExampleCheckResult(check, len(frame), failures)


def unique_example_ids(frame: pd.DataFrame) -> ExampleCheckResult:
    """Each example id occurs once per (dataset, split); one failure per repeated id."""
    keys = ["dataset", "split", "example_id"]
    counts = frame.groupby(keys, sort=False).size().rename("occurrences").reset_index()
    reasons = counts["occurrences"].map(lambda n: f"occurs {n} times in its split")
    return _result("unique_example_ids", counts, counts["occurrences"] > 1, reasons)


def non_empty_targets(frame: pd.DataFrame) -> ExampleCheckResult:
    """Every target has some non-whitespace text."""
    empty = frame["target"].isna() | (frame["target"].astype(str).str.strip() == "")
    return _result("non_empty_targets", frame, empty, "target is empty")


def gsm8k_numeric_targets(frame: pd.DataFrame) -> ExampleCheckResult:
    """Every GSM8K target is a plain decimal number (``72``, ``-3``, ``0.5``: no commas, units or ``$``)."""
    targets = frame["target"].fillna("").astype(str).str.strip()
    bad = ~targets.map(lambda text: _DECIMAL.fullmatch(text) is not None)
    return _result("gsm8k_numeric_targets", frame, bad, targets.map(lambda t: f"target {t!r} is not a number"))


def mmlu_targets_in_range(frame: pd.DataFrame) -> ExampleCheckResult:
    """Every MMLU target is a choice index ``"0"``..``"3"``."""
    targets = frame["target"].fillna("").astype(str)
    bad = ~targets.isin(MMLU_ANSWERS)
    return _result("mmlu_targets_in_range", frame, bad,
                   targets.map(lambda t: f"target {t!r} is not a choice index 0-3"))


def humaneval_solutions_pass(frame: pd.DataFrame, timeout: float = 10.0, workers: int = 2,
                             sandbox: Sandbox | None = None) -> ExampleCheckResult:
    """Each HumanEval canonical solution (``input`` prompt + ``target``) passes its own ``test``
    (from ``metadata``), run in the code sandbox (default ``Sandbox(timeout_s=timeout)``); a failure's
    reason is the sandbox's ("exit code 1: AssertionError", "timed out after 10 s")."""
    checks, keys, reasons = [], [], {}
    columns = ("split", "example_id", "input", "target", "metadata")
    for split, example_id, prompt, solution, metadata in frame[list(columns)].itertuples(index=False):
        fields = json.loads(metadata)
        if not fields.get("test") or not fields.get("entry_point"):
            reasons[split, example_id] = "metadata lacks 'test' or 'entry_point'"
            continue
        problem = {"task_id": example_id, "prompt": prompt, "test": fields["test"], "entry_point": fields["entry_point"]}
        checks.append((problem, solution))
        keys.append((split, example_id))
    results = check_humaneval_many(checks, sandbox=sandbox or Sandbox(timeout_s=timeout), workers=workers)
    reasons.update((key, result.reason) for key, result in zip(keys, results, strict=True) if not result.passed)
    failures = tuple(ExampleFailure(split, example_id, reason)
                     for (split, example_id), reason in sorted(reasons.items()))
    return ExampleCheckResult("humaneval_solutions_pass", len(frame), failures)
