"""GSM8K as lm-evaluation-harness's ``gsm8k`` task: k-shot ``Question: ..\\nAnswer:`` prompts, greedy
generation until its stop sequences, strict (``#### N``) and flexible (last number) extraction."""

from __future__ import annotations

import json
import random
from typing import Any

import pandas as pd
from pydantic import Field

from crucible.data.metrics import extract_gsm8k_answer, gsm8k_is_correct
from crucible.evaluate.benchmarks.common import (
    BenchmarkConfig,
    parse_json,
    proportion_metric,
    results_frame,
    split_rows,
    summaries_frame,
)

DATASET = "gsm8k"
FEWSHOT_SPLIT = "train"
# The task's generation_kwargs.until.
STOP_SEQUENCES = ("Question:", "</s>", "<|im_end|>")
# The harness seeds its few-shot sampler with 1234 (``fewshot_random_seed``) and draws shots for the
# test questions in order from one generator, so the same seed and order give the same shots.
HARNESS_FEWSHOT_SEED = 1234


class GSM8KConfig(BenchmarkConfig):
    """Demo defaults: the first 16 test problems, 5 shots (the harness's ``num_fewshot``), answers up to
    128 new tokens (the harness allows 256). ``chat`` sends the shots and the question as chat turns
    through the model's chat format instead of one raw prompt. Shots are drawn from the train rows
    present in the examples frame: with the whole train split they are the harness's own."""

    limit: int | None = Field(default=16, ge=1)
    num_fewshot: int = Field(default=5, ge=0)
    max_new_tokens: int = Field(default=128, ge=1)
    chat: bool = False
    fewshot_seed: int = HARNESS_FEWSHOT_SEED


def question_prompt(question: str) -> str:
    """The task's ``doc_to_text``."""
    return f"Question: {question}\nAnswer:"


def solution(row: Any) -> str:
    """The full reference solution (reasoning and ``#### N``): the example's last assistant turn."""
    turns = [m for m in parse_json(row.messages, "messages", row.example_id, DATASET) if m.get("role") == "assistant"]
    if not turns:
        raise ValueError(f"GSM8K example {row.example_id}: messages have no assistant turn with the solution")
    return turns[-1]["content"]


def gsm8k_prompt(question: str, shots: list[tuple[str, str]]) -> str:
    """Shots as ``Question: q\\nAnswer: <solution>`` separated by blank lines, then the question."""
    return "".join(f"{question_prompt(q)} {a}\n\n" for q, a in shots) + question_prompt(question)


def gsm8k_messages(question: str, shots: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The chat variant: each shot a user turn and an assistant turn, then the question."""
    turns = []
    for q, a in shots:
        turns += [{"role": "user", "content": question_prompt(q)}, {"role": "assistant", "content": a}]
    return [*turns, {"role": "user", "content": question_prompt(question)}]


def draw_shots(pool: list[tuple[str, str]], num_items: int, k: int, seed: int) -> list[list[tuple[str, str]]]:
    """``k`` shots per item, drawn without replacement for each item in turn from one generator."""
    if k == 0:
        return [[] for _ in range(num_items)]
    if len(pool) < k:
        raise ValueError(f"GSM8K {k}-shot: only {len(pool)} rows in the {FEWSHOT_SPLIT!r} split to draw shots "
                         f"from; load that split into datasets/examples or lower num_fewshot")
    rng = random.Random(seed)
    return [rng.sample(pool, k) for _ in range(num_items)]


def score_gsm8k(engine: Any, examples: pd.DataFrame, model_version: str, config: GSM8KConfig, *,
                benchmark: str = "gsm8k", sandbox: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exact match after strict and after flexible extraction, side by side; flexible is the headline."""
    from crucible.inference import GenerationRequest

    rows = split_rows(examples, DATASET, config.split, benchmark)
    if config.limit is not None:
        rows = rows.head(config.limit)
    pool = []
    if config.num_fewshot:
        train = split_rows(examples, DATASET, FEWSHOT_SPLIT, benchmark)
        pool = [(row.input, solution(row)) for row in train.itertuples(index=False)]
    shots = draw_shots(pool, len(rows), config.num_fewshot, config.fewshot_seed)
    requests, prompts = [], []
    for row, item_shots in zip(rows.itertuples(index=False), shots, strict=True):
        if config.chat:
            messages = gsm8k_messages(row.input, item_shots)
            requests.append(GenerationRequest(messages=messages, max_new_tokens=config.max_new_tokens,
                                              stop=STOP_SEQUENCES))
            prompts.append(json.dumps(messages))
        else:
            prompt = gsm8k_prompt(row.input, item_shots)
            requests.append(GenerationRequest(prompt=prompt, max_new_tokens=config.max_new_tokens, stop=STOP_SEQUENCES))
            prompts.append(prompt)
    generations = engine.generate(requests)
    results, strict_scores = [], []
    for row, prompt, generation in zip(rows.itertuples(index=False), prompts, generations, strict=True):
        strict = float(gsm8k_is_correct(generation.text, row.target, "strict"))
        flexible = float(gsm8k_is_correct(generation.text, row.target, "flexible"))
        flexible_answer = extract_gsm8k_answer(generation.text, "flexible")
        strict_scores.append(strict)
        results.append({
            "example_id": row.example_id, "sample": 0, "prompt": prompt, "output": generation.text,
            "extracted_answer": flexible_answer, "gold": row.target, "score": flexible,
            "item_metrics": {"exact_match_strict": strict, "exact_match_flexible": flexible,
                             "answer_strict": extract_gsm8k_answer(generation.text, "strict"),
                             "answer_flexible": flexible_answer},
            "finish_reason": generation.finish_reason, "completion_tokens": generation.completion_tokens,
        })
    variant = f"{config.num_fewshot}-shot" + (" chat" if config.chat else "")
    frame = results_frame(results, model_version, benchmark, config.split, variant)
    metrics = [proportion_metric("exact_match_flexible", frame["score"], config),
               proportion_metric("exact_match_strict", strict_scores, config)]
    return frame, summaries_frame(metrics, model_version, benchmark, config.split, variant)
