"""Feedback assets: what users asked the registered model each day, scrubbed of personal data."""

import datetime as dt

import dagster as dg
from pydantic import Field

from crucible.feedback.events import event_rows, simulated_prompts
from crucible.inference import InferenceEngine
from crucible.quarantine import store_validated
from crucible.registry.store import serving_version
from crucible_assets.metadata import table_metadata
from crucible_assets.partitions import checked_partition_keys, daily_partitions
from crucible_assets.registry import MODEL_NAME
from crucible_assets.registry.assets import registered_model
from resources.lake import LakeResource
from schemas import EXAMPLES, INFERENCE_EVENTS


class InferenceTrafficConfig(dg.Config):
    """The demo's simulated users; a real deployment writes these events from its server instead."""

    events_per_day: int = Field(64, ge=1, description="Simulated requests per day.")
    long_prompt_share: float = Field(0.0, ge=0.0, le=1.0, description="Share of prompts made long (drift).")
    pii_share: float = Field(0.1, ge=0.0, le=1.0, description="Share of prompts carrying contact details.")
    max_new_tokens: int = Field(16, ge=1)
    prompt_dataset: str = Field("gsm8k", description="Dataset of datasets/examples the prompts are drawn from.")
    prompt_split: str = "test"


@dg.asset(
    key=["feedback", "inference_events"], deps=[registered_model], partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(), group_name="feedback", kinds={"deltalake", "pytorch"},
    owners=["team:ml-platform"],
    description="One row per answered request of the registered model; emails and phone numbers are scrubbed "
                "before the rows land. A re-run of a day replaces that day.",
)
def inference_events(context: dg.AssetExecutionContext, config: InferenceTrafficConfig,
                     lake: LakeResource) -> dg.MaterializeResult:
    days = checked_partition_keys(context)
    store = lake.lake()
    version = serving_version(store, MODEL_NAME)
    if version is None:
        raise dg.Failure(f"no registered version of {MODEL_NAME}: materialize registry/registered_model first")
    pool = store.read(EXAMPLES, where={"dataset": config.prompt_dataset, "split": config.prompt_split},
                      columns=["input"])["input"].tolist()
    if not pool:
        raise dg.Failure(f"feedback/inference_events: no prompts in {EXAMPLES.path} for dataset "
                         f"{config.prompt_dataset!r} split {config.prompt_split!r}; run dataset_ingest_job for "
                         f"partition {config.prompt_dataset!r} first, or set prompt_dataset/prompt_split")
    engine = InferenceEngine.from_checkpoint(version["artifact_uri"])
    totals = {"rows_in": 0, "accepted": 0, "quarantined": 0, "pii_redactions": 0}
    stored = None
    for key in days:
        day = dt.date.fromisoformat(key)
        prompts = simulated_prompts(pool, day, config.events_per_day, config.long_prompt_share, config.pii_share)
        events = event_rows(day, prompts, engine.chat(prompts, config.max_new_tokens), MODEL_NAME,
                            int(version["version"]))
        stored = store_validated(store, INFERENCE_EVENTS, events, source=f"inference {key}",
                                 replace_where={"day": day}, day=day)
        totals["rows_in"] += stored.rows_in
        totals["accepted"] += stored.accepted
        totals["quarantined"] += stored.quarantined
        totals["pii_redactions"] += int(events["pii_redactions"].sum())
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "dagster/row_count": totals["accepted"], "rows_in": totals["rows_in"],
        "quarantined": totals["quarantined"], "pii_redactions": totals["pii_redactions"],
        "model_version": int(version["version"]), "days": len(days),
    })

