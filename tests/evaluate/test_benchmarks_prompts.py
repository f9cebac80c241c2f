"""Prompts and stop sequences equal lm-evaluation-harness's own: its task YAMLs are loaded and its
ConfigurableTask builds the contexts from the same raw rows (read here without our loaders)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import datasets
import lm_eval
import pandas as pd
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml

from crucible.data.loaders import load_benchmark
from crucible.evaluate.benchmarks import evaluate_benchmark
from crucible.evaluate.benchmarks.gsm8k import STOP_SEQUENCES as GSM8K_STOPS
from crucible.evaluate.benchmarks.humaneval import STOP_SEQUENCES as HUMANEVAL_STOPS
from crucible.inference import Generation, Loglikelihood

TASKS = Path(lm_eval.__file__).parent / "tasks"
DATA = Path(__file__).resolve().parents[2] / "crucible" / "data" / "files"


class RecordingEngine:
    """Keeps the requests it is sent; answers with empty text and equal log-probabilities."""

    def __init__(self) -> None:
        self.requests: list = []

    def generate(self, requests):
        self.requests += list(requests)
        return [Generation("", 1, 1, "stop", 0.0) for _ in requests]

    def loglikelihood(self, requests):
        self.requests += list(requests)
        return [Loglikelihood(-1.0, False, 1) for _ in requests]


def harness_task(yaml_path: Path, splits: dict[str, list[dict]]) -> ConfigurableTask:
    config = load_yaml(yaml_path)
    config["custom_dataset"] = lambda **_: datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)  # the evaluator's default fewshot_random_seed
    return task


def mmlu_csv(subject: str, split: str) -> list[dict]:
    with (DATA / "mmlu" / "data" / split / f"{subject}_{split}.csv").open(newline="", encoding="utf-8") as stream:
        return [{"question": q, "subject": subject, "choices": [a, b, c, d], "answer": "ABCD".index(answer)}
                for q, a, b, c, d, answer in csv.reader(stream)]


@pytest.mark.parametrize(("benchmark", "shots"), [("mmlu", 5), ("mmlu_0shot", 0)])
def test_mmlu_contexts_and_continuations_equal_the_harness(benchmark, shots):
    subject = "high_school_us_history"  # long, multi-line questions and a multi-word subject
    task = harness_task(TASKS / "mmlu" / "default" / f"mmlu_{subject}.yaml",
                        {"test": mmlu_csv(subject, "test")[:4], "dev": mmlu_csv(subject, "dev")})
    frame = load_benchmark("mmlu", splits=["dev", "test"]).to_frame()
    engine = RecordingEngine()
    results, _ = evaluate_benchmark(benchmark, engine, frame, "v1", {"subjects": (subject,), "limit": 4})

    docs = list(task.test_docs())
    expected = [task.fewshot_context(doc, shots) for doc in docs]
    assert results["prompt"].tolist() == expected
    assert expected[0].startswith("The following are multiple choice questions (with answers) about high school "
                                  "us history.\n\n")
    assert expected[0].count("\nAnswer:") == shots + 1
    # Each question is scored by the four continuations the harness builds, in its order.
    harness_requests = task.construct_requests(docs[0], expected[0], metadata=(task.config.task, 0, 1))
    assert [(r.context, r.continuation) for r in engine.requests[:4]] == [r.args for r in harness_requests]


def test_gsm8k_few_shot_prompts_and_stops_equal_the_harness():
    def rows(split: str, count: int) -> list[dict]:
        with (DATA / "gsm8k" / f"{split}.jsonl").open(encoding="utf-8") as stream:
            return [json.loads(line) for _, line in zip(range(count), stream, strict=False)]

    # A pool of 40 train rows on both sides: the harness's generator draws the same shots for them.
    task = harness_task(TASKS / "gsm8k" / "gsm8k.yaml", {"train": rows("train", 40), "test": rows("test", 6)})
    frame = load_benchmark("gsm8k", limit=40).to_frame()
    engine = RecordingEngine()
    results, _ = evaluate_benchmark("gsm8k", engine, frame, "v1", {"limit": 6, "num_fewshot": 5})

    expected = [task.fewshot_context(doc, 5) for doc in task.test_docs()]
    assert results["prompt"].tolist() == expected
    assert len({p.split("\n\n")[0] for p in expected}) > 1  # shots differ from question to question
    assert tuple(task.config.generation_kwargs["until"]) == GSM8K_STOPS
    assert all(r.stop == GSM8K_STOPS and r.temperature == 0 for r in engine.requests)


def test_gsm8k_chat_variant_sends_the_same_turns_as_messages():
    frame = load_benchmark("gsm8k", limit=20).to_frame()
    plain, _ = evaluate_benchmark("gsm8k", RecordingEngine(), frame, "v1", {"limit": 2, "num_fewshot": 2})
    engine = RecordingEngine()
    chat, summaries = evaluate_benchmark("gsm8k", engine, frame, "v1", {"limit": 2, "num_fewshot": 2, "chat": True})
    messages = engine.requests[0].messages
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    # The same shots and question as the raw prompt, only split into turns.
    pairs = zip(messages[:-1:2], messages[1::2], strict=True)
    assert "".join(f"{q['content']} {a['content']}\n\n" for q, a in pairs) + messages[-1]["content"] == \
        plain["prompt"][0]
    assert json.loads(chat["prompt"][0]) == messages
    assert set(summaries["variant"]) == {"2-shot chat"}


def test_humaneval_prompt_is_the_problem_and_stops_are_the_harness_ones():
    config = load_yaml(TASKS / "humaneval" / "humaneval.yaml", resolve_func=False)
    assert tuple(config["generation_kwargs"]["until"]) == HUMANEVAL_STOPS
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as stream:
        first = json.loads(stream.readline())
    frame = load_benchmark("humaneval", limit=1).to_frame()
    engine = RecordingEngine()
    results, _ = evaluate_benchmark("humaneval", engine, frame, "v1", {"limit": 1},
                                    sandbox=_RefusingSandbox())
    assert engine.requests[0].prompt == first["prompt"] == results["prompt"][0]
    assert engine.requests[0].stop == HUMANEVAL_STOPS


class _RefusingSandbox:
    """Runs nothing: every program "fails" (the prompt test needs no execution)."""

    def run_many(self, programs, *, workers=2):
        from crucible.sandbox import SandboxResult

        return [SandboxResult("failed", "not run", 1, "", "", 0.0) for _ in programs]


def test_examples_are_taken_in_file_order_whatever_order_the_lake_returns():
    frame = load_benchmark("humaneval", limit=12).to_frame()
    shuffled = frame.sample(frac=1.0, random_state=3)
    engine = RecordingEngine()
    results, _ = evaluate_benchmark("humaneval", engine, pd.concat([shuffled]), "v1", {"limit": 11},
                                    sandbox=_RefusingSandbox())
    assert results["example_id"].tolist() == [f"HumanEval/{i}" for i in range(11)]
