"""Scoring from known model outputs: GSM8K extractions side by side, MMLU accuracy per subject, HumanEval
pass@k from programs really run in the sandbox, and the entry point's errors.

The engine here is scripted (it answers from a table) so each case has a known right answer; the
real engine on a real model runs in test_benchmarks_end_to_end.py."""

from __future__ import annotations

import json
from math import comb

import pandas as pd
import pytest
from pydantic import ValidationError

from crucible.data.loaders import load_benchmark
from crucible.evaluate.benchmarks import (
    BENCHMARKS,
    HumanEvalConfig,
    MMLUConfig,
    evaluate_benchmark,
    wilson_interval,
)
from crucible.inference import Generation, Loglikelihood
from crucible.sandbox import Sandbox
from schemas.evaluation import EvalResultsSchema, EvalSummariesSchema


class ScriptedEngine:
    """Generates ``answer(request, index)``; scores a continuation by ``logprob(request)``."""

    def __init__(self, answer=None, logprob=None) -> None:
        self.answer, self.logprob, self.requests = answer, logprob, []

    def generate(self, requests):
        self.requests += list(requests)
        return [Generation(self.answer(r, i), 10, 5, "stop", 1.0) for i, r in enumerate(requests)]

    def loglikelihood(self, requests):
        self.requests += list(requests)
        return [Loglikelihood(self.logprob(r), False, 1) for r in requests]


@pytest.fixture(scope="module")
def gsm8k_rows():
    return load_benchmark("gsm8k", splits=["test"], limit=5).to_frame()


def test_gsm8k_strict_and_flexible_extraction_are_reported_side_by_side(gsm8k_rows):
    gold = gsm8k_rows["target"].tolist()  # 18, 3, 70000, ...
    outputs = [
        f"She has 16 - 3 - 4 = 9 eggs, 9 * 2 = {gold[0]}.\n#### {gold[0]}",  # both
        f"It takes 2 + 1 = {gold[1]} bolts.",  # flexible only: no '#### '
        f"#### {int(gold[2]):,}\nWait, maybe 5",  # strict only ('70,000' matches), flexible takes 5
        "I do not know.",  # neither
        f"#### ${gold[4]}.",  # strict regex needs a digit after '#### ': '$' fails it; flexible strips '$' and '.'
    ]
    engine = ScriptedEngine(answer=lambda r, i: outputs[i])
    results, summaries = evaluate_benchmark("gsm8k", engine, gsm8k_rows, "v7", {"num_fewshot": 0, "limit": 5})
    metrics = [json.loads(m) for m in results["item_metrics"]]
    assert [m["exact_match_strict"] for m in metrics] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert [m["exact_match_flexible"] for m in metrics] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert results["score"].tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]  # the headline: flexible
    assert [m["answer_strict"] for m in metrics] == [gold[0], None, gold[2], None, None]
    assert results["extracted_answer"].tolist() == [gold[0], gold[1], "5", None, gold[4]]
    values = summaries.set_index("metric")
    assert values.loc["exact_match_strict", "value"] == pytest.approx(2 / 5)
    assert values.loc["exact_match_flexible", "value"] == pytest.approx(3 / 5)
    assert (values.loc["exact_match_strict", "ci_low"], values.loc["exact_match_strict", "ci_high"]) == \
        pytest.approx(wilson_interval(2, 5))
    assert engine.requests[0].prompt == f"Question: {gsm8k_rows['input'][0]}\nAnswer:"
    EvalResultsSchema.validate(results)
    EvalSummariesSchema.validate(summaries)


def test_gsm8k_shots_need_the_train_split(gsm8k_rows):
    with pytest.raises(ValueError, match="no 'gsm8k' examples in split 'train'.*splits present: \\['test'\\]"):
        evaluate_benchmark("gsm8k", ScriptedEngine(answer=lambda r, i: ""), gsm8k_rows, "v1", {"num_fewshot": 2})


@pytest.fixture(scope="module")
def mmlu_rows():
    # Two subjects: abstract_algebra (5 dev, 100 test rows) and anatomy (5 dev, 135 test rows).
    frame = load_benchmark("mmlu", splits=["dev", "test"], limit=300).to_frame()
    return frame[frame["example_id"].str.startswith(("abstract_algebra", "anatomy"))]


def test_mmlu_picks_the_most_likely_letter_and_reports_accuracy_per_subject(mmlu_rows):
    def logprob(request):
        # " B" is always the most likely continuation.
        letter = request.continuation.strip()
        return 0.0 if letter == "B" else -1.0

    engine = ScriptedEngine(logprob=logprob)
    results, summaries = evaluate_benchmark("mmlu_0shot", engine, mmlu_rows, "v1", MMLUConfig(limit=6))
    # Round-robin across subjects: row 1 of each, then row 2 of each...
    assert results["example_id"].tolist() == [f"{s}-{i:04d}" for i in (1, 2, 3) for s in ("abstract_algebra",
                                                                                          "anatomy")]
    assert set(results["extracted_answer"]) == {"B"}
    expected = (results["gold"] == "B").astype(float)
    assert 0 < expected.mean() < 1  # some right, some wrong
    assert results["score"].tolist() == expected.tolist()
    values = summaries.set_index("metric")["value"]
    assert values["accuracy"] == pytest.approx(expected.mean())
    for subject in ("abstract_algebra", "anatomy"):
        assert values[f"accuracy/{subject}"] == pytest.approx(expected[results["subject"] == subject].mean())
    assert json.loads(results["output"][0]) == {"A": -1.0, "B": 0.0, "C": -1.0, "D": -1.0}
    assert [r.continuation for r in engine.requests[:4]] == [" A", " B", " C", " D"]
    assert set(summaries["variant"]) == {"0-shot"} and set(summaries["n"]) == {6, 3}
    EvalSummariesSchema.validate(summaries)


def test_mmlu_ties_go_to_the_first_letter_and_five_shot_needs_dev_rows(mmlu_rows):
    results, _ = evaluate_benchmark("mmlu_0shot", ScriptedEngine(logprob=lambda r: -2.0), mmlu_rows, "v1",
                                    {"limit": 2})
    assert set(results["extracted_answer"]) == {"A"}
    without_dev = mmlu_rows[mmlu_rows["split"] == "test"]
    with pytest.raises(ValueError, match="fewer than 5 rows in the dev split"):
        evaluate_benchmark("mmlu", ScriptedEngine(logprob=lambda r: 0.0), without_dev, "v1", {"limit": 2})
    with pytest.raises(ValueError, match="subjects \\['astrology'\\] have no test rows"):
        evaluate_benchmark("mmlu", ScriptedEngine(logprob=lambda r: 0.0), mmlu_rows, "v1", {"subjects": ["astrology"]})


def test_humaneval_pass_at_k_counts_programs_that_pass_in_the_sandbox():
    rows = load_benchmark("humaneval", limit=3).to_frame()
    solutions = dict(zip(rows["example_id"], rows["target"], strict=True))
    # Per problem, which of its 4 samples are the canonical solution (the rest return None).
    right = {"HumanEval/0": {0, 1, 2, 3}, "HumanEval/1": {2}, "HumanEval/2": set()}
    samples: dict[str, int] = {}

    def answer(request, index):
        task_id = next(t for t in solutions if rows.set_index("example_id").loc[t, "input"] == request.prompt)
        sample = samples[task_id] = samples.get(task_id, -1) + 1
        return solutions[task_id] if sample in right[task_id] else "    return None\n"

    engine = ScriptedEngine(answer=answer)
    config = HumanEvalConfig(n_samples=4, temperature=0.8, ks=(1, 2), workers=2, timeout_s=20)
    results, summaries = evaluate_benchmark("humaneval", engine, rows, "v1", config,
                                            sandbox=Sandbox(timeout_s=20))
    passed = results.groupby("example_id")["score"].sum().to_dict()
    assert passed == {"HumanEval/0": 4.0, "HumanEval/1": 1.0, "HumanEval/2": 0.0}
    failed = json.loads(results.loc[results["score"] == 0, "item_metrics"].iloc[0])
    assert failed["status"] == "failed" and "AssertionError" in failed["reason"]

    def pass_at(k, c, n=4):
        return 1 - comb(n - c, k) / comb(n, k)

    values = summaries.set_index("metric")
    assert values.loc["pass@1", "value"] == pytest.approx((1 + 1 / 4 + 0) / 3)
    assert values.loc["pass@2", "value"] == pytest.approx((pass_at(2, 4) + pass_at(2, 1) + pass_at(2, 0)) / 3)
    assert set(values["ci_method"]) == {"bootstrap"} and set(values["n"]) == {3}
    assert set(results["variant"]) == {"n=4 T=0.8 top_p=0.95"}
    # Every sample has its own seed, the same on a second run, also when fewer problems are scored.
    seeds = [r.seed for r in engine.requests]
    assert len(set(seeds)) == 12 and all(r.temperature == 0.8 for r in engine.requests)
    again = ScriptedEngine(answer=lambda r, i: "")
    evaluate_benchmark("humaneval", again, rows, "v1", config.model_copy(update={"limit": 2}),
                       sandbox=Sandbox(timeout_s=20))
    assert [r.seed for r in again.requests] == seeds[:8]
    EvalResultsSchema.validate(results)
    EvalSummariesSchema.validate(summaries)


def test_humaneval_config_refuses_greedy_multi_sampling_and_impossible_k():
    with pytest.raises(ValidationError, match="identical greedy samples"):
        HumanEvalConfig(n_samples=5)
    with pytest.raises(ValidationError, match=r"ks \[10\] need 1 <= k <= n_samples=5"):
        HumanEvalConfig(n_samples=5, temperature=0.8, ks=(1, 10))
    assert HumanEvalConfig(n_samples=20, temperature=0.8).pass_ks == (1, 10)
    assert HumanEvalConfig().pass_ks == (1,)


def test_entry_point_names_bad_benchmarks_and_configs(gsm8k_rows):
    engine = ScriptedEngine(answer=lambda r, i: "")
    with pytest.raises(KeyError, match="unknown benchmark 'arc'; known: mmlu, mmlu_0shot, gsm8k"):
        evaluate_benchmark("arc", engine, gsm8k_rows, "v1")
    with pytest.raises(TypeError, match="config is a MMLUConfig; expected GSM8KConfig"):
        evaluate_benchmark("gsm8k", engine, gsm8k_rows, "v1", MMLUConfig())
    with pytest.raises(ValidationError, match="limit"):
        evaluate_benchmark("gsm8k", engine, gsm8k_rows, "v1", {"limit": 0})
    with pytest.raises(ValueError, match="no 'gsm8k' examples in split 'validation'"):
        evaluate_benchmark("gsm8k", engine, gsm8k_rows, "v1", {"split": "validation", "num_fewshot": 0})
    # Rows of other datasets are ignored; limit None scores every row there is.
    mixed = pd.concat([gsm8k_rows, load_benchmark("norobots", limit=2).to_frame()])
    results, _ = evaluate_benchmark("gsm8k", engine, mixed, "v1", {"limit": None, "num_fewshot": 0})
    assert len(results) == len(gsm8k_rows)


def test_registry_says_what_the_statistical_comparison_needs():
    assert {name: (spec.headline_metric, spec.score_kind, spec.split) for name, spec in BENCHMARKS.items()} == {
        "mmlu": ("accuracy", "binary", "test"), "mmlu_0shot": ("accuracy", "binary", "test"),
        "gsm8k": ("exact_match_flexible", "binary", "test"), "humaneval": ("pass@1", "binary", "test"),
        "norobots": ("rougeL", "continuous", "test"),
    }
    assert [name for name, spec in BENCHMARKS.items() if spec.needs_sandbox] == ["humaneval"]
