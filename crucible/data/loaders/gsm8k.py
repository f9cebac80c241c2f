"""GSM8K (Cobbe et al.): grade-school math word problems whose answers end in ``#### <number>``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from crucible.data.loaders.base import (
    Example,
    LoadResult,
    RawRow,
    RecordProblem,
    chat,
    check_root,
    discover_split_files,
    load_split_files,
    require_text,
)


def final_answer(answer: str) -> tuple[str, str]:
    """``(reasoning, number)`` of a GSM8K answer: the text before the last ``####`` and the number after
    it without thousands separators or ``$``."""
    reasoning, marker, final = answer.rpartition("####")
    if not marker:
        raise RecordProblem("answer", "has no '####' line")
    number = final.strip().replace(",", "").replace("$", "")
    if not number:
        raise RecordProblem("answer", "has nothing after '####'")
    try:
        float(number)
    except ValueError:
        raise RecordProblem("answer", f"ends in {final.strip()!r} after '####', not a number") from None
    return reasoning.strip(), number


def normalize_gsm8k(row: RawRow, split: str) -> Example:
    question = require_text(row.value, "question")
    answer = require_text(row.value, "answer")
    reasoning, number = final_answer(answer)
    return Example(f"{split}-{row.line:06d}", question, number, chat(question, answer), {"reasoning": reasoning})


def load_gsm8k(root: str | Path, splits: Iterable[str] | None = None, limit: int | None = None) -> LoadResult:
    """Load ``<split>.jsonl`` files of ``{question, answer}`` (or the hub's Parquet shards) under ``root``.

    Example ids are ``<split>-<line>``, e.g. ``train-000017``; ``limit`` caps each split's records.
    """
    root = check_root("gsm8k", Path(root))
    return load_split_files("gsm8k", root, discover_split_files(root), splits, limit, normalize_gsm8k)
