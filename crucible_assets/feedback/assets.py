"""Feedback assets: each day's answered requests (ingested, or simulated for the demo) and their user signals."""

import dagster as dg
from pydantic import Field

from crucible.feedback.events import event_records, simulated_requests, simulated_signals
from crucible.feedback.ingest import SIMULATION_SOURCE, day_summary, ingest_events, remove_simulated_day
from crucible.feedback.traffic import served_chat
from crucible.inference import InferenceEngine
from crucible.registry.store import serving_version
from crucible_assets.automation import after_new_feedback
from crucible_assets.metadata import column_schema_metadata, metric, table_definition_metadata
from crucible_assets.partitions import daily_partitions, single_day
from crucible_assets.registry import MODEL_NAME
from resources.feedback import FeedbackResource
from resources.lake import LakeResource
from schemas import EXAMPLES, INFERENCE_EVENTS, SIGNALS


class InferenceTrafficConfig(dg.Config):
    """A day with no real traffic is simulated (the demo's users); a day with real events is only reported."""

    simulate: bool = Field(True, description="Simulate the day with the registered model when it holds no real "
                                             "(ingested) events.")
    events_per_day: int = Field(64, ge=1, description="Simulated requests per day.")
    long_prompt_share: float = Field(0.0, ge=0.0, le=1.0, description="Share of prompts made long (drift).")
    pii_share: float = Field(0.1, ge=0.0, le=1.0, description="Share of prompts carrying contact details.")
    max_new_tokens: int = Field(16, ge=1, description="Longest simulated answer, in tokens.")
    clients: int = Field(8, ge=1, description="Concurrent simulated users calling the inference server.")
    prompt_dataset: str = Field("gsm8k", description="Dataset of datasets/examples the prompts are drawn from.")
    prompt_split: str = Field("test", description="Split of prompt_dataset the prompts are drawn from.")


def _simulate(context: dg.AssetExecutionContext, config: InferenceTrafficConfig, store, feedback, day):
    version = serving_version(store, MODEL_NAME)
    if version is None:
        raise dg.Failure(f"no registered version of {MODEL_NAME}: materialize registry/registered_model first")
    examples = store.read(EXAMPLES, where={"dataset": config.prompt_dataset, "split": config.prompt_split},
                          columns=["input", "target"])
    if examples.empty:
        raise dg.Failure(f"feedback/inference_events: no prompts in {EXAMPLES.path} for dataset "
                         f"{config.prompt_dataset!r} split {config.prompt_split!r}; run dataset_ingest_job for "
                         f"partition {config.prompt_dataset!r} first, or set prompt_dataset/prompt_split")
    requests = simulated_requests(examples["input"].tolist(), day, config.events_per_day, config.long_prompt_share,
                                  config.pii_share)
    prompts = [r.prompt for r in requests]
    engine = InferenceEngine.from_checkpoint(version["artifact_uri"])
    # The simulated users call the inference server over HTTP, as real ones would (batched answers).
    answers = served_chat(engine, prompts, config.max_new_tokens, model_id=f"{MODEL_NAME}/v{version['version']}",
                          clients=config.clients)
    refused = sum(answer is None for answer in answers)
    if refused:  # too long for the model's context: the server refused them, as it would a real user's
        context.log.warning(f"{refused} of {len(prompts)} simulated requests on {day} were refused as longer than "
                            f"the model's context")
        requests = [r for r, answer in zip(requests, answers, strict=True) if answer is not None]
        prompts = [r.prompt for r in requests]
        answers = [answer for answer in answers if answer is not None]
    records = event_records(day, prompts, answers, MODEL_NAME, int(version["version"]))
    references = [examples["target"].iat[r.pool_index] for r in requests]
    for record, signals in zip(records, simulated_signals(records, references), strict=True):
        record["signals"] = signals
    remove_simulated_day(store, day)  # a re-run replaces the simulated day (real events are never touched)
    result = ingest_events(store, records, source=SIMULATION_SOURCE, scrubber=feedback.scrubber(), user_key=None)
    context.log.info(f"simulated {result.accepted} events and {result.signals} signals on {day}")
    return result, int(version["version"])


@dg.asset(
    # No dependency on registry/registered_model: served traffic is observed from outside the graph
    # (which version answered is a column). The loop closes through data instead: curated examples
    # feed the next training run, and an asset edge back to the model would make the graph cyclic.
    metadata=table_definition_metadata(INFERENCE_EVENTS),
    key=["feedback", "inference_events"], partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(1), group_name="feedback", kinds={"deltalake", "pytorch"},
    owners=["team:ml-platform"],
    description="One row per answered request, scrubbed of personal data. Real events arrive from files "
                "(feedback_inbox_sensor), HTTP and the serving layer; a day that holds them is reported as it is. "
                "A day without them is simulated with the registered model (config simulate), signals included; "
                "a re-run replaces only the simulated rows.",
)
def inference_events(context: dg.AssetExecutionContext, config: InferenceTrafficConfig, lake: LakeResource,
                     feedback: FeedbackResource) -> dg.MaterializeResult:
    day = single_day(context)
    store = lake.lake()
    summary = day_summary(store, day)
    metadata: dict = {}
    if summary.real:
        mode = "ingested"
        context.log.info(f"{day} holds {summary.real} ingested events: reported, not simulated")
    elif config.simulate:
        mode = "simulated"
        result, version = _simulate(context, config, store, feedback, day)
        metadata = {"rows_in": result.rows_in, "quarantined": result.quarantined, "model_version": version}
        summary = day_summary(store, day)
    else:
        mode = "empty"
        context.log.warning(f"{day} holds no ingested events and simulate is off: nothing to report")
    return dg.MaterializeResult(metadata={
        "mode": mode, "table": INFERENCE_EVENTS.path, **column_schema_metadata(INFERENCE_EVENTS), "dagster/row_count": summary.events,
        "real_events": summary.real, "per_source": dg.MetadataValue.json(summary.per_source),
        "per_deployment": dg.MetadataValue.json(summary.per_deployment), "pii_redactions": summary.pii_redactions,
        "signals": summary.signals, "delta_version": store.version(INFERENCE_EVENTS), **metadata,
    })


@dg.asset(
    metadata=table_definition_metadata(SIGNALS),
    key=["feedback", "signals"], deps=[inference_events], partitions_def=daily_partitions,
    automation_condition=after_new_feedback(),
    backfill_policy=dg.BackfillPolicy.multi_run(1), group_name="feedback", kinds={"deltalake"},
    owners=["team:ml-platform"],
    description="User signals (thumbs, edits, copies, ...) on each day's events, weighted by SIGNAL_WEIGHTS. "
                "They are written by ingestion (attached to events or posted later by event id); this asset "
                "reports the day's counts and scores.",
)
def signals(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    from crucible.feedback.signals import aggregate_signals

    day = single_day(context)
    store = lake.lake()
    rows = store.read(SIGNALS, where={"day": day}) if store.exists(SIGNALS) else SIGNALS.arrow_schema().empty_table() \
        .to_pandas()
    per_event = aggregate_signals(rows)
    return dg.MaterializeResult(metadata={
        "table": SIGNALS.path, **column_schema_metadata(SIGNALS), "dagster/row_count": len(rows), "events_with_signals": len(per_event),
        "per_signal": dg.MetadataValue.json({k: int(v) for k, v in rows["signal"].value_counts().sort_index().items()}),
        "edits": int((rows["signal"] == "edit").sum()),
        "mean_event_score": metric(per_event["score"].mean() if len(per_event) else 0.0),
        "delta_version": store.version(SIGNALS),
    })
