"""Score a model on held-out GSM8K problems: per-example rows and summary metrics."""

from __future__ import annotations

import json

import pandas as pd

from crucible.data.metrics import extract_gsm8k_answer, gsm8k_is_correct, rouge
from crucible.evaluate.generation import ChatModel

BENCHMARK = "gsm8k"


def reference_answer(messages_json: str) -> str:
    """The reference solution text: the last assistant turn of the example's chat."""
    turns = [m for m in json.loads(messages_json) if m.get("role") == "assistant"]
    return turns[-1]["content"] if turns else ""


def evaluate_gsm8k(model: ChatModel, examples: pd.DataFrame, model_version: str,
                   max_new_tokens: int = 48) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Answer each example greedily; accuracy uses the harness's flexible extraction (last number),
    ``strict_accuracy`` its ``#### N`` format, ROUGE-L compares with the reference solution."""
    if examples.empty:
        raise ValueError("evaluate_gsm8k: no examples to evaluate")
    generations = model.answer(examples["input"].tolist(), max_new_tokens=max_new_tokens)
    predictions = [g.text for g in generations]
    references = [reference_answer(m) for m in examples["messages"]]
    rouge_l = [s["rougeL"].fmeasure for s in rouge(predictions, references, rouge_types=("rougeL",))]
    targets = examples["target"].tolist()
    results = pd.DataFrame({
        "model_version": model_version, "benchmark": BENCHMARK, "example_id": examples["example_id"].tolist(),
        "sample": 0, "prompt": examples["input"].tolist(), "prediction": predictions, "target": targets,
        "extracted_answer": [extract_gsm8k_answer(p, "flexible") for p in predictions],
        "correct": [gsm8k_is_correct(p, t, "flexible") for p, t in zip(predictions, targets, strict=True)],
        "rouge_l": rouge_l,
    })
    strict = [gsm8k_is_correct(p, t, "strict") for p, t in zip(predictions, targets, strict=True)]
    metrics = {"accuracy": float(results["correct"].mean()), "strict_accuracy": sum(strict) / len(strict),
               "rougeL": float(results["rouge_l"].mean()),
               "mean_completion_tokens": sum(g.completion_tokens for g in generations) / len(generations)}
    summaries = pd.DataFrame([{"model_version": model_version, "benchmark": BENCHMARK, "metric": name,
                               "value": value, "num_examples": len(results)} for name, value in metrics.items()])
    return results, summaries
