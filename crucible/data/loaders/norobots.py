"""NoRobots (Hugging Face H4): human-written instruction/response chats, ``{prompt, prompt_id, messages, category}``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from crucible.data.loaders.base import (
    Example,
    LoadResult,
    RawRow,
    RecordProblem,
    check_root,
    discover_split_files,
    load_split_files,
    parse_messages,
    require_text,
)


def normalize_norobots(row: RawRow, split: str) -> Example:
    prompt = require_text(row.value, "prompt")
    prompt_id = require_text(row.value, "prompt_id")
    category = require_text(row.value, "category")
    messages = parse_messages(row.value.get("messages"))
    replies = [message["content"] for message in messages if message["role"] == "assistant"]
    if not replies:
        raise RecordProblem("messages", "has no assistant message")
    return Example(prompt_id, prompt, replies[-1], messages, {"prompt_id": prompt_id, "category": category})


def load_norobots(root: str | Path, splits: Iterable[str] | None = None, limit: int | None = None) -> LoadResult:
    """Load ``<split>.jsonl`` (or the hub's Parquet shards) under ``root``.

    Example ids are the prompt ids; the target is the last assistant message.
    """
    root = check_root("norobots", Path(root))
    return load_split_files("norobots", root, discover_split_files(root), splits, limit, normalize_norobots)
