"""Schemas of the feedback group: what the deployed model was asked and answered."""

import pandas as pd
import pandera.pandas as pa
from pandera.engines.pandas_engine import Date
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp

EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


class InferenceEventsSchema(pa.DataFrameModel):
    """One answered request of a deployed model, scrubbed of personal data before it was stored.

    Version history (``INFERENCE_EVENTS.schema_version``; steps in ``crucible/migrations.py``):
    1. simulated traffic only: tokens and latency required, no deployment, user, session or source;
    2. adds ``deployment``, ``user_id`` (a keyed pseudonym), ``session_id``, ``source`` and
       ``ingested_at``; tokens and latency become optional, since not every producer measures them.
    """

    event_id: Series[str] = pa.Field(str_length={"min_value": 1})
    day: Series[Date]
    timestamp: Series[UtcTimestamp]
    deployment: Series[str] = pa.Field(str_length={"min_value": 1})
    model_name: Series[str]
    model_version: Series[int] = pa.Field(ge=1)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    response: Series[str]
    prompt_tokens: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    response_tokens: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    latency_ms: Series[float] = pa.Field(ge=0, nullable=True)
    pii_redactions: Series[int] = pa.Field(ge=0)
    user_id: Series[str] = pa.Field(nullable=True)
    session_id: Series[str] = pa.Field(nullable=True)
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    ingested_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["event_id"]

    @pa.check("prompt", "response", name="no_unscrubbed_email")
    def no_email(cls, text: Series[str]) -> Series[bool]:
        return ~text.str.contains(EMAIL_PATTERN, regex=True)


# The weight of each user signal; an event's feedback score is the sum of its signals' weights.
SIGNAL_WEIGHTS = {"thumbs_up": 3.0, "thumbs_down": -2.0, "regenerate": -1.0, "edit": 5.0, "copy": 2.0,
                  "share": 2.0, "report": -3.0}


class SignalsSchema(pa.DataFrameModel):
    """One user signal on one answered request (thumbs, edit with the edited text, copy, ...)."""

    signal_id: Series[str] = pa.Field(str_length={"min_value": 1})
    event_id: Series[str] = pa.Field(str_length={"min_value": 1})
    day: Series[Date]
    timestamp: Series[UtcTimestamp]
    signal: Series[str] = pa.Field(isin=list(SIGNAL_WEIGHTS))
    weight: Series[float]
    edited_text: Series[str] = pa.Field(nullable=True)
    source: Series[str]
    ingested_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["event_id", "signal_id"]


class QualitySchema(pa.DataFrameModel):
    """Automatic quality checks of one answered request; scores in 0..1, 1 is best."""

    event_id: Series[str] = pa.Field(str_length={"min_value": 1})
    day: Series[Date]
    model_version: Series[int] = pa.Field(ge=1)
    format_score: Series[float] = pa.Field(ge=0, le=1)
    length_score: Series[float] = pa.Field(ge=0, le=1)
    refusal_score: Series[float] = pa.Field(ge=0, le=1)
    repetition_score: Series[float] = pa.Field(ge=0, le=1)
    judge_score: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    quality_score: Series[float] = pa.Field(ge=0, le=1)
    passed: Series[bool]
    failed_checks: Series[str]
    checked_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["event_id"]


class EmbeddingsSchema(pa.DataFrameModel):
    """A cache of text embeddings keyed by the hash of (model, text); ``vector`` is little-endian float32."""

    text_hash: Series[str] = pa.Field(str_length={"min_value": 1})
    model: Series[str]
    dim: Series[int] = pa.Field(ge=1)
    vector: Series[bytes]
    created_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["text_hash"]


# In priority order: an event goes to the first strategy that picks it.
CURATION_STRATEGIES = ("user_edit", "high_quality", "hard_example", "active_learning", "diverse")


class CuratedSchema(pa.DataFrameModel):
    """An example picked from production traffic for training: ``response`` is the target (a user's
    edit when there is one); ``status`` follows the human review (pending, approved, rejected, edited)."""

    example_id: Series[str] = pa.Field(str_length={"min_value": 1})
    event_id: Series[str] = pa.Field(str_length={"min_value": 1})
    day: Series[Date]
    strategy: Series[str] = pa.Field(isin=list(CURATION_STRATEGIES))
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    response: Series[str] = pa.Field(str_length={"min_value": 1})
    score: Series[float]
    reason: Series[str]
    model_version: Series[int] = pa.Field(ge=1)
    window_start: Series[Date]
    window_end: Series[Date]
    status: Series[str] = pa.Field(isin=["pending", "approved", "rejected", "edited"])
    curated_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["example_id"]


class FeedbackPairsSchema(pa.DataFrameModel):
    """Preference pairs from feedback: an edit is chosen over the original answer; a thumbs-up answer
    over a thumbs-down answer to the same prompt."""

    pair_id: Series[str] = pa.Field(str_length={"min_value": 1})
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    chosen: Series[str] = pa.Field(str_length={"min_value": 1})
    rejected: Series[str] = pa.Field(str_length={"min_value": 1})
    source: Series[str] = pa.Field(isin=["edit", "thumbs"])
    chosen_event_id: Series[str]
    rejected_event_id: Series[str]
    day: Series[Date]
    created_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["pair_id"]


class ReviewsSchema(pa.DataFrameModel):
    """A reviewer's decision on one curated example; the latest decision per example wins."""

    example_id: Series[str] = pa.Field(str_length={"min_value": 1})
    reviewer: Series[str] = pa.Field(str_length={"min_value": 1})
    decision: Series[str] = pa.Field(isin=["approve", "reject", "edit"])
    edited_response: Series[str] = pa.Field(nullable=True)
    note: Series[str] = pa.Field(nullable=True)
    decided_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["example_id", "reviewer"]
