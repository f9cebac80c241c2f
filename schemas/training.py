"""Schemas of the training group: runs, their metric history and their checkpoints."""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp


class TrainingRunsSchema(pa.DataFrameModel):
    run_id: Series[str] = pa.Field(str_length={"min_value": 1})
    method: Series[str] = pa.Field(isin=["sft", "dpo", "rl", "distill"])
    recipe_name: Series[str]
    recipe_hash: Series[str]
    base_model: Series[str]
    dataset: Series[str]
    dataset_version: Series[int] = pa.Field(ge=0)
    trigger_reason: Series[str]
    data_window: Series[str]
    steps: Series[int] = pa.Field(ge=0)
    final_loss: Series[float] = pa.Field(nullable=True)
    tokens_per_second: Series[float] = pa.Field(ge=0)
    checkpoint_uri: Series[str]
    started_at: Series[UtcTimestamp]
    finished_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["run_id"]


class TrainingMetricsSchema(pa.DataFrameModel):
    run_id: Series[str] = pa.Field(str_length={"min_value": 1})
    step: Series[int] = pa.Field(ge=0)
    name: Series[str] = pa.Field(str_length={"min_value": 1})
    value: Series[float] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["run_id", "step", "name"]
