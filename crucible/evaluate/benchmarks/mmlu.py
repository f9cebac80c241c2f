"""MMLU by log-likelihood of the answer letters, in lm-evaluation-harness's ``mmlu`` prompt format.

The harness's ``mmlu/default`` template: a description line per subject, then each question as
``<question.strip()>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:``; few-shot examples are the first k
rows of the subject's dev split, each followed by `` <letter>``, joined by a blank line. The model's
answer is the letter whose continuation `` A``..`` D`` is most likely.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pydantic import Field

from crucible.data.loaders.mmlu import LETTERS
from crucible.evaluate.benchmarks.common import (
    BenchmarkConfig,
    file_order,
    parse_json,
    proportion_metric,
    results_frame,
    split_rows,
    summaries_frame,
)

DATASET = "mmlu"
FEWSHOT_SPLIT = "dev"
DESCRIPTION = "The following are multiple choice questions (with answers) about {subject}.\n\n"
# The harness's target_delimiter and fewshot_delimiter.
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"


class MMLUConfig(BenchmarkConfig):
    """``limit`` items in all (demo default 57, one per subject), taken round-robin across subjects
    in name order so a small limit still covers many; None scores all 14,042 test questions.
    ``subjects`` restricts the run to those subjects (None: all)."""

    limit: int | None = Field(default=57, ge=1)
    subjects: tuple[str, ...] | None = None


def question_prompt(question: str, choices: Sequence[str]) -> str:
    """One question as the harness's ``doc_to_text`` writes it."""
    lines = [question.strip(), *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True))]
    return "\n".join(lines) + "\nAnswer:"


def mmlu_context(subject: str, question: str, choices: Sequence[str],
                 shots: Sequence[tuple[str, Sequence[str], int]] = ()) -> str:
    """The whole prompt: description, the ``(question, choices, answer index)`` shots, then the question."""
    labeled = [question_prompt(q, c) + TARGET_DELIMITER + LETTERS[a] for q, c, a in shots]
    head = DESCRIPTION.format(subject=" ".join(subject.split("_")))
    return head + "".join(shot + FEWSHOT_DELIMITER for shot in labeled) + question_prompt(question, choices)


def _parsed(row: Any) -> tuple[str, str, list[str], int]:
    """``(subject, question, choices, answer index)`` of an examples-table row.

    The loader wrote ``input`` as the question followed by one ``<letter>. <choice>`` line per
    choice, so the question is what precedes those lines."""
    metadata = parse_json(row.metadata, "metadata", row.example_id, DATASET)
    choices = metadata.get("choices")
    if not isinstance(choices, list) or len(choices) != len(LETTERS):
        raise ValueError(f"MMLU example {row.example_id}: metadata has no list of 4 choices; reload the dataset")
    suffix = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True))
    if not row.input.endswith(suffix):
        raise ValueError(f"MMLU example {row.example_id}: input does not end with its choices as 'A. ..' lines")
    if row.target not in {str(i) for i in range(len(LETTERS))}:
        raise ValueError(f"MMLU example {row.example_id}: target {row.target!r} is not an answer index 0-3")
    return metadata["subject"], row.input[: -len(suffix)], choices, int(row.target)


def select_items(rows: pd.DataFrame, limit: int | None, subjects: Sequence[str] | None) -> list[tuple]:
    """Parsed test items, round-robin across subjects (each subject's rows in file order)."""
    items = [(row.example_id, *_parsed(row)) for row in rows.itertuples(index=False)]
    if subjects is not None:
        known, wanted = {item[1] for item in items}, set(subjects)
        if wanted - known:
            raise ValueError(f"MMLU: subjects {sorted(wanted - known)} have no test rows; known subjects: "
                             f"{sorted(known)}")
        items = [item for item in items if item[1] in wanted]
    rank: dict[str, int] = {}
    keyed = []
    for item in items:
        rank[item[1]] = rank.get(item[1], 0) + 1
        keyed.append(((rank[item[1]], item[1]), item))
    ordered = [item for _, item in sorted(keyed, key=lambda pair: pair[0])]
    return ordered if limit is None else ordered[:limit]


def dev_shots(examples: pd.DataFrame, subjects: set[str], k: int) -> dict[str, list[tuple[str, list[str], int]]]:
    """The first ``k`` dev rows of each subject (the harness's ``first_n`` sampler)."""
    if k == 0:
        return {subject: [] for subject in subjects}
    dev = examples[(examples["dataset"] == DATASET) & (examples["split"] == FEWSHOT_SPLIT)]
    shots: dict[str, list[tuple[str, list[str], int]]] = {subject: [] for subject in subjects}
    for row in file_order(dev).itertuples(index=False):
        subject, question, choices, answer = _parsed(row)
        if subject in shots and len(shots[subject]) < k:
            shots[subject].append((question, choices, answer))
    short = {subject: len(found) for subject, found in shots.items() if len(found) < k}
    if short:
        raise ValueError(f"MMLU {k}-shot: these subjects have fewer than {k} rows in the dev split: {short}; "
                         "load the dev split into datasets/examples or use the zero-shot benchmark")
    return shots


def score_mmlu(engine: Any, examples: pd.DataFrame, model_version: str, config: MMLUConfig, *,
               num_fewshot: int, benchmark: str = "mmlu", sandbox: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy per subject and overall (pooled over questions, as the harness's ``mmlu`` group)."""
    from crucible.inference import LoglikelihoodRequest

    items = select_items(split_rows(examples, DATASET, config.split, benchmark), config.limit, config.subjects)
    shots = dev_shots(examples, {item[1] for item in items}, num_fewshot)
    contexts = [mmlu_context(subject, question, choices, shots[subject])
                for _, subject, question, choices, _ in items]
    requests = [LoglikelihoodRequest(context, TARGET_DELIMITER + letter) for context in contexts for letter in LETTERS]
    scored = engine.loglikelihood(requests)
    rows = []
    for index, ((example_id, subject, _, _, answer), context) in enumerate(zip(items, contexts, strict=True)):
        logprobs = [scored[index * len(LETTERS) + j].logprob for j in range(len(LETTERS))]
        chosen = max(range(len(LETTERS)), key=logprobs.__getitem__)  # first on ties, like numpy's argmax
        correct = float(chosen == answer)
        rows.append({"example_id": example_id, "sample": 0, "subject": subject, "prompt": context,
                     "output": json.dumps(dict(zip(LETTERS, logprobs, strict=True))),
                     "extracted_answer": LETTERS[chosen], "gold": LETTERS[answer], "score": correct,
                     "item_metrics": {"accuracy": correct}})
    variant = f"{num_fewshot}-shot"
    results = results_frame(rows, model_version, benchmark, config.split, variant)
    metrics = [proportion_metric("accuracy", results["score"], config)]
    for subject, group in results.groupby("subject", sort=True):
        metrics.append(proportion_metric(f"accuracy/{subject}", group["score"], config))
    return results, summaries_frame(metrics, model_version, benchmark, config.split, variant)
