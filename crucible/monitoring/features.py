"""The monitored features of served traffic (lengths, latency, deployment, quality, signals, prompt
embeddings), computed the same way for a baseline and for a day."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from crucible.monitoring.drift import Feature, category_counts

PROMPT_LENGTH = "prompt_length_words"
RESPONSE_LENGTH = "response_length_words"
LATENCY = "latency_ms"
DEPLOYMENT = "deployment"
QUALITY_SCORE = "quality_score"
FAILED_CHECKS = "failed_checks"
PASS_RATE = "pass_rate"
SIGNAL_TYPE = "signal_type"
THUMBS_DOWN_RATE = "thumbs_down_rate"
PROMPT_EMBEDDING = "prompt_embedding"
# Features of the prompts alone: a baseline takes them from the training prompts.
PROMPT_FEATURES = (PROMPT_LENGTH, PROMPT_EMBEDDING)


def word_counts(texts: Sequence[str] | pd.Series) -> np.ndarray:
    """Length in whitespace-separated words of each text."""
    return np.fromiter((len(str(t).split()) for t in texts), dtype=np.int64, count=len(texts))


def prompt_features(prompts: Sequence[str] | pd.Series, source: str) -> dict[str, Feature]:
    """Prompt length and the prompts themselves (embedded when drift is measured)."""
    prompts = [str(p) for p in prompts]
    if not prompts:
        return {}
    return {PROMPT_LENGTH: Feature("numeric", word_counts(prompts), source),
            PROMPT_EMBEDDING: Feature("embedding", prompts, source)}


def traffic_features(events: pd.DataFrame, quality: pd.DataFrame | None = None,
                     signals: pd.DataFrame | None = None, source: str = "traffic") -> dict[str, Feature]:
    """Every monitored feature of served events, with their quality rows and user signals when given."""
    if events.empty:
        return {}
    features = prompt_features(events["prompt"], source)
    features[RESPONSE_LENGTH] = Feature("numeric", word_counts(events["response"].fillna("")), source)
    latency = events["latency_ms"].dropna() if "latency_ms" in events else pd.Series(dtype=float)
    if len(latency):  # optional since schema v2: not every producer measures it
        features[LATENCY] = Feature("numeric", latency.to_numpy(np.float64), source)
    if "deployment" in events and events["deployment"].notna().any():
        features[DEPLOYMENT] = Feature("categorical", category_counts(events["deployment"].fillna("unknown")), source)
    if quality is not None and len(quality):
        features[QUALITY_SCORE] = Feature("numeric", quality["quality_score"].to_numpy(np.float64), source)
        import pyarrow as pa
        import pyarrow.compute as pc

        # Split in Arrow: a day of quality rows never becomes a list of Python strings.
        listed = pa.array(quality["failed_checks"].fillna(""), type=pa.string())
        checks = pc.list_flatten(pc.split_pattern(pc.if_else(pc.equal(listed, ""), "none", listed), ","))
        features[FAILED_CHECKS] = Feature("categorical", category_counts(checks), source)
        features[PASS_RATE] = Feature("rate", (int(quality["passed"].sum()), len(quality)), source)
    if signals is not None and len(signals):
        features[SIGNAL_TYPE] = Feature("categorical", category_counts(signals["signal"]), source)
        # Signals may arrive for other days' events: the rate counts this frame's events only.
        down = signals.loc[signals["signal"] == "thumbs_down", "event_id"]
        thumbs_down = down[down.isin(events["event_id"])].nunique()
        features[THUMBS_DOWN_RATE] = Feature("rate", (int(thumbs_down), len(events)), source)
    return features
