"""NoRobots: answer each conversation through the model's chat format, compare with the human reply by
ROUGE-1/2/L (rouge-score's defaults, no stemming) and corpus BLEU (sacrebleu's defaults)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from crucible.data.metrics import corpus_bleu, rouge, sentence_bleu
from crucible.data.metrics.bleu import _bleu_from_stats
from crucible.evaluate.benchmarks.common import (
    BenchmarkConfig,
    mean_metric,
    parse_json,
    results_frame,
    split_rows,
    summaries_frame,
)
from crucible.evaluate.benchmarks.intervals import bootstrap_interval

DATASET = "norobots"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class NoRobotsConfig(BenchmarkConfig):
    """Demo defaults: the first 8 test conversations, replies up to 128 new tokens, greedy."""

    limit: int | None = Field(default=8, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)


def conversation(row: Any) -> tuple[list[dict[str, str]], str]:
    """The turns before the last assistant reply (the prompt) and that reply (the reference)."""
    messages = parse_json(row.messages, "messages", row.example_id, DATASET)
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None or last == 0:
        raise ValueError(f"NoRobots example {row.example_id}: messages need a turn before the last assistant reply")
    return messages[:last], messages[last]["content"]


def corpus_bleu_interval(predictions: list[str], references: list[str],
                         config: BenchmarkConfig) -> tuple[float, float]:
    """Bootstrap over items of corpus BLEU: each segment's n-gram statistics are computed once, and a
    resample sums them before the BLEU formula is applied, as corpus BLEU itself does."""
    stats = [sentence_bleu(p, [r]) for p, r in zip(predictions, references, strict=True)]
    counts = np.array([s.counts for s in stats], dtype=np.int64)
    totals = np.array([s.totals for s in stats], dtype=np.int64)
    lengths = np.array([(s.sys_len, s.ref_len) for s in stats], dtype=np.int64)

    def corpus_score(indices: np.ndarray) -> float:
        sys_len, ref_len = lengths[indices].sum(axis=0).tolist()
        return _bleu_from_stats(sys_len, ref_len, counts[indices].sum(axis=0).tolist(),
                                totals[indices].sum(axis=0).tolist(), effective_order=False).score

    return bootstrap_interval(len(stats), corpus_score, level=config.ci_level, resamples=config.bootstrap_resamples,
                              seed=config.seed)


def score_norobots(engine: Any, examples: pd.DataFrame, model_version: str, config: NoRobotsConfig, *,
                   benchmark: str = "norobots", sandbox: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean ROUGE F1 per type (ROUGE-L the headline and the per-item score) and corpus BLEU (0-100)."""
    from crucible.inference import GenerationRequest

    rows = split_rows(examples, DATASET, config.split, benchmark)
    if config.limit is not None:
        rows = rows.head(config.limit)
    conversations = [conversation(row) for row in rows.itertuples(index=False)]
    generations = engine.generate([GenerationRequest(messages=prompt, max_new_tokens=config.max_new_tokens)
                                   for prompt, _ in conversations])
    predictions = [g.text.strip() for g in generations]
    references = [reference for _, reference in conversations]
    rouges = rouge(predictions, references, rouge_types=ROUGE_TYPES)
    results = []
    for row, (prompt, reference), prediction, generation, scores in zip(
            rows.itertuples(index=False), conversations, predictions, generations, rouges, strict=True):
        item = {name: scores[name].fmeasure for name in ROUGE_TYPES}
        item["bleu"] = sentence_bleu(prediction, [reference]).score
        subject = parse_json(row.metadata, "metadata", row.example_id, DATASET).get("category")
        results.append({
            "example_id": row.example_id, "sample": 0, "subject": subject, "prompt": json.dumps(prompt),
            "output": generation.text, "extracted_answer": prediction, "gold": reference, "score": item["rougeL"],
            "item_metrics": item, "finish_reason": generation.finish_reason,
            "completion_tokens": generation.completion_tokens,
        })
    variant = "chat"
    frame = results_frame(results, model_version, benchmark, config.split, variant)
    metrics = [mean_metric(name, [scores[name].fmeasure for scores in rouges], config) for name in ROUGE_TYPES]
    low, high = corpus_bleu_interval(predictions, references, config)
    metrics.append({"metric": "bleu", "value": corpus_bleu(predictions, [references]).score, "ci_low": low,
                    "ci_high": high, "ci_method": "bootstrap", "ci_level": config.ci_level, "n": len(predictions)})
    return frame, summaries_frame(metrics, model_version, benchmark, config.split, variant)
