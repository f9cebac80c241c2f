"""Curated examples written to a real lake for the review page tests (HTTP and browser)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from crucible.lake import DeltaLake
from schemas import CURATED

XSS_PROMPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & "quotes"'


def curated_rows(count: int, *, day: dt.date = dt.date(2024, 5, 2)) -> pd.DataFrame:
    """``count`` pending examples ``ex-00``.. with distinct scores (ex-00 scores highest, so it is listed first)."""
    strategies = ["user_edit", "high_quality", "hard_example", "diverse", "active_learning"]
    rows = [{
        "example_id": f"ex-{i:02d}", "event_id": f"ev-{i:02d}", "day": day, "strategy": strategies[i % 5],
        "prompt": f"Question {i}: how do I rotate a log file?", "response": f"Answer {i}: use logrotate.",
        "score": float(count - i), "reason": f"picked by {strategies[i % 5]}", "model_version": 1,
        "window_start": day, "window_end": day, "status": "pending",
        "curated_at": pd.Timestamp("2024-05-03T00:00:00Z"),
    } for i in range(count)]
    return pd.DataFrame(rows, columns=CURATED.columns)


def write_curated(lake: DeltaLake, frame: pd.DataFrame) -> None:
    lake.upsert(CURATED, frame)
