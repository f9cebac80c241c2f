"""Every benchmark end to end on a tiny Llama saved to disk and loaded by the inference engine: the
frames pass the schemas and are stored in (and read back from) real Delta tables."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from crucible.data.loaders import load_benchmark
from crucible.data.metrics import extract_gsm8k_answer
from crucible.evaluate.benchmarks import BENCHMARKS, evaluate_benchmark
from crucible.inference import InferenceEngine, LoglikelihoodRequest
from crucible.quarantine import store_validated
from crucible.sandbox import Sandbox
from crucible.train.config import TinyModelSpec
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
from schemas import EVAL_RESULTS, EVAL_SUMMARIES
from schemas.evaluation import EvalResultsSchema, EvalSummariesSchema

SPEC = TinyModelSpec(family="llama", vocab_size=384, hidden_size=64, num_layers=2, num_heads=4,
                     max_position_embeddings=256)

SETTINGS = {
    "mmlu": {"limit": 4},
    "mmlu_0shot": {"limit": 4},
    "gsm8k": {"limit": 3, "num_fewshot": 1, "max_new_tokens": 12},
    "humaneval": {"limit": 2, "n_samples": 2, "temperature": 0.8, "max_new_tokens": 12, "timeout_s": 20},
    "norobots": {"limit": 2, "max_new_tokens": 12},
}


@pytest.fixture(scope="module")
def examples() -> pd.DataFrame:
    frames = [load_benchmark("mmlu", splits=["dev", "test"], limit=300).to_frame()]
    frames += [load_benchmark(name, limit=20).to_frame() for name in ("gsm8k", "humaneval", "norobots")]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def engine(tmp_path_factory, examples) -> InferenceEngine:
    tokenizer = train_bpe_tokenizer(examples["input"].tolist() + examples["target"].tolist(),
                                    vocab_size=SPEC.vocab_size)
    torch.manual_seed(0)
    model = build_tiny_causal_lm(SPEC, tokenizer, seed=1)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return InferenceEngine.from_checkpoint(folder, batch_size=8)


@pytest.fixture(scope="module")
def scored(engine, examples) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    sandbox = Sandbox(timeout_s=20)
    return {name: evaluate_benchmark(name, engine, examples, "tiny-v1", SETTINGS[name], sandbox=sandbox)
            for name in BENCHMARKS}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_frames_pass_the_schemas_and_carry_the_headline(scored, name):
    results, summaries = scored[name]
    EvalResultsSchema.validate(results)
    EvalSummariesSchema.validate(summaries)
    spec = BENCHMARKS[name]
    samples = SETTINGS[name].get("n_samples", 1)
    assert len(results) == SETTINGS[name]["limit"] * samples
    assert set(results["benchmark"]) == set(summaries["benchmark"]) == {name}
    assert set(results["split"]) == {spec.split}
    headline = summaries.set_index("metric").loc[spec.headline_metric]
    assert headline["n"] == SETTINGS[name]["limit"]
    assert headline["ci_low"] <= headline["value"] <= headline["ci_high"]
    # The headline of a mean over items equals the mean of the per-item scores.
    assert headline["value"] == pytest.approx(results.groupby("example_id")["score"].mean().mean())
    if spec.score_kind == "binary":
        assert set(results["score"]) <= {0.0, 1.0}


def test_mmlu_scores_are_the_engines_log_likelihoods(scored, engine):
    results, _ = scored["mmlu"]
    row = results.iloc[0]
    direct = engine.loglikelihood([LoglikelihoodRequest(row["prompt"], f" {letter}") for letter in "ABCD"])
    assert json.loads(row["output"]) == pytest.approx(dict(zip("ABCD", [d.logprob for d in direct], strict=True)))
    assert row["extracted_answer"] == "ABCD"[max(range(4), key=lambda i: direct[i].logprob)]
    assert row["prompt"].count("\nAnswer:") == 6  # five dev shots and the question
    assert scored["mmlu_0shot"][0]["prompt"].iloc[0].count("\nAnswer:") == 1


def test_generated_answers_are_extracted_and_stopped(scored):
    results, _ = scored["gsm8k"]
    for output, answer in zip(results["output"], results["extracted_answer"], strict=True):
        assert "Question:" not in output  # the stop sequence cut it
        assert answer == extract_gsm8k_answer(output, "flexible")
    humaneval, summaries = scored["humaneval"]
    assert set(humaneval["sample"]) == {0, 1}
    assert {"pass@1"} == set(summaries["metric"])
    assert all(json.loads(m)["status"] in ("passed", "failed", "timed_out") for m in humaneval["item_metrics"])
    norobots, summaries = scored["norobots"]
    assert set(summaries["metric"]) == {"rouge1", "rouge2", "rougeL", "bleu"}
    assert norobots["subject"].notna().all()  # the NoRobots category


def test_results_and_summaries_round_trip_through_delta(scored, lake):
    for name, (results, summaries) in scored.items():
        stored = store_validated(lake, EVAL_RESULTS, results, source=f"test {name}",
                                 replace_where={"benchmark": name, "model_version": "tiny-v1"})
        assert stored.quarantined == 0, stored
        assert store_validated(lake, EVAL_SUMMARIES, summaries, source=f"test {name}").quarantined == 0
    back = lake.read(EVAL_RESULTS, where={"benchmark": "humaneval"})
    assert len(back) == len(scored["humaneval"][0])
    assert set(lake.read(EVAL_SUMMARIES)["benchmark"]) == set(BENCHMARKS)
