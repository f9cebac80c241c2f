"""Schemas of the model registry: models, versions, artifacts, lineage edges, aliases, principals and the audit log.

Columns added after the first release are nullable, so a lake written by older code gains them on its
next write (Delta schema evolution) and its old rows read as null.
"""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp

STAGES = ("experiment", "staging", "production", "archived")
ARTIFACT_TYPES = ("checkpoint", "tokenizer", "config", "merged_weights", "lora_adapter", "gguf")
# Every edge points downstream: ``source`` is the input, ``target`` what was made from it.
RELATIONSHIPS = {
    "fine_tuned_from": "the target model was fine-tuned (SFT) from the source model",
    "dpo_trained_from": "the target model was trained with DPO starting from the source model",
    "rl_trained_from": "the target model was trained with RL starting from the source model",
    "distilled_from": "the target (student) model was distilled from the source (teacher) model",
    "evaluated_on": "the target model was evaluated on the source dataset version",
    "trained_on": "the target model or run was trained on the source dataset version",
    "curated_from": "the target dataset version was curated from the source feedback window",
    "produced": "the source training run produced the target (a checkpoint or a model version)",
    "registered_as": "the source training checkpoint was registered as the target model version",
}
ROLES = ("viewer", "trainer", "approver", "admin")


class ModelsSchema(pa.DataFrameModel):
    model_name: Series[str] = pa.Field(str_matches=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    description: Series[str] = pa.Field(nullable=True)
    owner: Series[str] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["model_name"]


class ModelVersionsSchema(pa.DataFrameModel):
    """One row per committed version: writing this row is what makes a registration visible.

    ``artifact_uri`` and ``sha256`` repeat the weights artifact (checkpoint first) so that old readers
    and the duplicate check need no join.
    """

    model_name: Series[str] = pa.Field(str_length={"min_value": 1})
    version: Series[int] = pa.Field(ge=1)
    artifact_uri: Series[str] = pa.Field(str_length={"min_value": 1})
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    metrics: Series[str]
    training_run_id: Series[str]
    dataset: Series[str]
    dataset_version: Series[int] = pa.Field(ge=0)
    stage: Series[str] = pa.Field(isin=list(STAGES))
    created_at: Series[UtcTimestamp]
    recipe_name: Series[str] = pa.Field(nullable=True)
    recipe_hash: Series[str] = pa.Field(nullable=True)
    base_model: Series[str] = pa.Field(nullable=True)
    training_config: Series[str] = pa.Field(nullable=True)
    tags: Series[str] = pa.Field(nullable=True)
    parent_version: Series[int] = pa.Field(ge=1, nullable=True)
    created_by: Series[str] = pa.Field(nullable=True)
    registration_id: Series[str] = pa.Field(nullable=True)
    updated_at: Series[UtcTimestamp] = pa.Field(nullable=True)
    deleted_at: Series[UtcTimestamp] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["model_name", "version"]


class ArtifactsSchema(pa.DataFrameModel):
    """Files of a version, written before its version row and visible only once that row exists."""

    registration_id: Series[str] = pa.Field(str_length={"min_value": 1})
    model_name: Series[str] = pa.Field(str_length={"min_value": 1})
    version: Series[int] = pa.Field(ge=1)
    artifact_type: Series[str] = pa.Field(isin=list(ARTIFACT_TYPES))
    backend: Series[str] = pa.Field(str_length={"min_value": 1})
    uri: Series[str] = pa.Field(str_length={"min_value": 1})
    sha256: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    size: Series[int] = pa.Field(ge=0)
    created_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["registration_id", "artifact_type"]


class LineageEdgesSchema(pa.DataFrameModel):
    """``source`` -> ``target``; an edge with a ``registration_id`` is visible once that version row exists."""

    source: Series[str] = pa.Field(str_length={"min_value": 1})
    target: Series[str] = pa.Field(str_length={"min_value": 1})
    relation: Series[str] = pa.Field(isin=list(RELATIONSHIPS))
    registration_id: Series[str] = pa.Field(nullable=True)
    created_by: Series[str] = pa.Field(nullable=True)
    created_at: Series[UtcTimestamp] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["source", "target", "relation", "registration_id"]


class AliasesSchema(pa.DataFrameModel):
    model_name: Series[str] = pa.Field(str_length={"min_value": 1})
    alias: Series[str] = pa.Field(str_matches=r"^[a-z][a-z0-9_-]{0,63}$")
    version: Series[int] = pa.Field(ge=1)
    updated_by: Series[str]
    updated_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["model_name", "alias"]


class PrincipalsSchema(pa.DataFrameModel):
    """Who may act on the registry; the token itself is never stored, only a salted scrypt hash."""

    name: Series[str] = pa.Field(str_matches=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
    roles: Series[str]
    token_id: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{16}$")
    token_hash: Series[str] = pa.Field(str_length={"min_value": 1})
    created_by: Series[str]
    created_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["name"]


class AuditLogSchema(pa.DataFrameModel):
    """Append-only: every registry change, and every refusal (``allowed`` false, with the reason)."""

    event_id: Series[str] = pa.Field(str_length={"min_value": 1})
    at: Series[UtcTimestamp]
    principal: Series[str]
    action: Series[str] = pa.Field(str_length={"min_value": 1})
    model_name: Series[str] = pa.Field(nullable=True)
    version: Series[int] = pa.Field(nullable=True)
    details: Series[str]
    allowed: Series[bool]
    reason: Series[str] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
        unique = ["event_id"]
