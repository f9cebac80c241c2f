"""HumanEval (Chen et al.): Python functions to complete from their signature and docstring."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from crucible.data.loaders.base import (
    Example,
    LoadResult,
    RawRow,
    chat,
    check_root,
    discover_split_files,
    load_split_files,
    require_text,
)


def normalize_humaneval(row: RawRow, split: str) -> Example:
    task_id, prompt, solution, test, entry_point = (
        require_text(row.value, field) for field in ("task_id", "prompt", "canonical_solution", "test", "entry_point"))
    return Example(task_id, prompt, solution, chat(prompt, solution), {"test": test, "entry_point": entry_point})


def load_humaneval(root: str | Path, splits: Iterable[str] | None = None, limit: int | None = None) -> LoadResult:
    """Load ``HumanEval.jsonl[.gz]`` (the split "test") or split-named JSONL/Parquet files under ``root``.

    Example ids are the task ids (``HumanEval/0``); metadata keeps ``test`` and ``entry_point``.
    """
    root = check_root("humaneval", Path(root))
    files = discover_split_files(root, aliases={"humaneval": "test"})
    return load_split_files("humaneval", root, files, splits, limit, normalize_humaneval)
