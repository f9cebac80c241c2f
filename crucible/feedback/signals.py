"""User signals on answered requests (thumbs, edits, copies, ...) and their per-event aggregate."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from schemas.feedback import SIGNAL_WEIGHTS

AGGREGATE_COLUMNS = ("event_id", "score", "n_signals", *SIGNAL_WEIGHTS, "edited_text")


def aggregate_signals(signals: pd.DataFrame, weights: Mapping[str, float] = SIGNAL_WEIGHTS) -> pd.DataFrame:
    """One row per event: ``score`` (the sum of its signals' weights), ``n_signals``, a count column per
    signal type (``thumbs_up``, ``edit``, ...), and ``edited_text``, the latest edit (None without one).

    ``signals`` holds SIGNALS rows (at least event_id, signal, timestamp, edited_text). Weights come from
    ``weights`` by signal type, not from a stored ``weight`` column, so re-weighting needs no rewrite.
    """
    missing = {"event_id", "signal"} - set(signals.columns)
    if missing:
        raise ValueError(f"aggregate_signals: the signals lack columns {sorted(missing)}")
    unknown = sorted(set(signals["signal"]) - set(weights))
    if unknown:
        raise ValueError(f"aggregate_signals: unknown signal types {unknown}; known: {', '.join(weights)}")
    if signals.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("event_id", "edited_text") else
                                          float if c == "score" else int) for c in AGGREGATE_COLUMNS})
    frame = signals.assign(_weight=signals["signal"].map(weights).astype(float))
    counts = pd.crosstab(frame["event_id"], frame["signal"]).reindex(columns=list(weights), fill_value=0)
    grouped = frame.groupby("event_id")
    out = pd.DataFrame({"score": grouped["_weight"].sum(), "n_signals": grouped.size()}).join(counts)
    edits = frame.loc[frame["signal"] == "edit"]
    if "edited_text" in frame.columns and len(edits):
        order = ["timestamp", "signal_id"] if {"timestamp", "signal_id"} <= set(edits.columns) else []
        latest = (edits.sort_values(order, kind="stable") if order else edits).groupby("event_id")["edited_text"].last()
        out["edited_text"] = latest
    else:
        out["edited_text"] = None
    out["edited_text"] = out["edited_text"].astype(object).where(out["edited_text"].notna(), None)
    out = out.reset_index()
    return out[list(AGGREGATE_COLUMNS)].astype({c: int for c in (*SIGNAL_WEIGHTS, "n_signals")})
