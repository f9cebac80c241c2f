"""MMLU (Hendrycks et al.): four-choice questions in 57 subjects, in both published layouts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from crucible.data.loaders.base import (
    DatasetReadError,
    Example,
    LoadResult,
    RawRow,
    RecordProblem,
    SplitCollector,
    chat,
    check_root,
    choose_splits,
    discover_split_files,
    iter_csv_rows,
    load_split_files,
    raise_if_nothing_read,
    read_rows,
    require_text,
    split_sort_key,
)

LETTERS = "ABCD"
CSV_COLUMNS = ("question", *LETTERS, "answer")


def mmlu_example(example_id: str, subject: str, question: str, choices: Sequence[str], answer: int) -> Example:
    """Input is the question with its choices as ``A. ..`` lines; target the answer index "0".."3"."""
    prompt = "\n".join([question, *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True))])
    letter = LETTERS[answer]
    metadata = {"subject": subject, "choices": list(choices), "answer_letter": letter}
    return Example(example_id, prompt, str(answer), chat(prompt, letter), metadata)


def _csv_normalizer(subject: str):
    def normalize(row: RawRow, split: str) -> Example:
        values: list[str] = row.value
        if len(values) != len(CSV_COLUMNS):
            raise RecordProblem(None, f"expected {len(CSV_COLUMNS)} columns ({','.join(CSV_COLUMNS)}), got {len(values)}")
        question, *choices, letter = values
        if not question.strip():
            raise RecordProblem("question", "is empty")
        if letter.strip() not in tuple(LETTERS):
            raise RecordProblem("answer", f"must be one of A, B, C, D, got {letter!r}")
        return mmlu_example(f"{subject}-{row.index:04d}", subject, question, choices, LETTERS.index(letter.strip()))

    return normalize


def _answer_index(value: Any) -> int:
    if isinstance(value, str) and value.strip() in tuple(LETTERS):
        return LETTERS.index(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(LETTERS):
        return value
    raise RecordProblem("answer", f"must be an index 0-3 or a letter A-D, got {value!r}")


def _table_normalizer():
    """Rows ``{question, subject, choices, answer}``; ids number each subject's rows within a split."""
    seen: Counter[tuple[str, str]] = Counter()

    def normalize(row: RawRow, split: str) -> Example:
        fields = row.value
        question = require_text(fields, "question")
        subject = require_text(fields, "subject")
        choices = fields.get("choices")
        if not isinstance(choices, list | tuple) or len(choices) != len(LETTERS):
            raise RecordProblem("choices", f"must be a list of 4 strings, got {choices!r}")
        if not all(isinstance(choice, str) for choice in choices):
            raise RecordProblem("choices", "must hold only strings")
        answer = _answer_index(fields.get("answer"))
        seen[split, subject] += 1
        return mmlu_example(f"{subject}-{seen[split, subject]:04d}", subject, question, choices, answer)

    return normalize


def _csv_split_files(root: Path) -> dict[str, list[Path]]:
    data = root / "data"
    if not data.is_dir():
        return {}
    found = {folder.name: sorted(folder.glob("*.csv")) for folder in data.iterdir() if folder.is_dir()}
    return {split: found[split] for split in sorted(found, key=split_sort_key) if found[split]}


def load_mmlu(root: str | Path, splits: Iterable[str] | None = None, limit: int | None = None) -> LoadResult:
    """Load MMLU from ``root``: the original ``data/{dev,val,test}/<subject>_<split>.csv`` files, or
    Parquet/JSON(L) files of ``{question, subject, choices, answer}`` named by split (the hub layout;
    when an ``all/`` folder exists only it is read, since the per-subject folders repeat it).

    ``limit`` caps the records of each split. Example ids are ``<subject>-<row>`` (row 1-based).
    """
    root = check_root("mmlu", Path(root))
    csv_files = _csv_split_files(root)
    if not csv_files:
        table_root = root / "all" if (root / "all").is_dir() else root
        return load_split_files("mmlu", root, discover_split_files(table_root), splits, limit, _table_normalizer())
    result = LoadResult()
    for split in choose_splits("mmlu", root, csv_files, splits):
        collector = SplitCollector(result, "mmlu", split, limit)
        for path in csv_files[split]:
            if collector.full:
                break
            subject = path.stem.removesuffix(f"_{split}")
            label = f"mmlu/{path.relative_to(root).as_posix()}"
            rows = read_rows(path, label, lambda path, label: iter_csv_rows(path, label, header=False))
            collector.add_rows(rows, label, _csv_normalizer(subject))
    raise_if_nothing_read("mmlu", result)
    if not result.records and not result.errors and limit != 0:
        raise DatasetReadError(f"mmlu: the CSV files under {root / 'data'} hold no rows")
    return result
