"""Schemas of the model registry: versions and the lineage edges between artifacts."""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp


class ModelVersionsSchema(pa.DataFrameModel):
    model_name: Series[str] = pa.Field(str_length={"min_value": 1})
    version: Series[int] = pa.Field(ge=1)
    artifact_uri: Series[str] = pa.Field(str_length={"min_value": 1})
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    metrics: Series[str]
    training_run_id: Series[str]
    dataset: Series[str]
    dataset_version: Series[int] = pa.Field(ge=0)
    stage: Series[str] = pa.Field(isin=["candidate", "staging", "production", "archived"])
    created_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["model_name", "version"]


class LineageEdgesSchema(pa.DataFrameModel):
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    target: Series[str] = pa.Field(str_length={"min_value": 1})
    relation: Series[str] = pa.Field(str_length={"min_value": 1})

    class Config:
        strict = True
        coerce = True
        unique = ["source", "target", "relation"]
