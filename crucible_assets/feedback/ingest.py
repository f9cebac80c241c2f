"""Feedback files dropped in the inbox: a sensor requests one ingestion run per new file content."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from crucible.feedback.ingest import (
    FeedbackFileError,
    UserKeyMissing,
    file_sha256,
    ingest_file,
    is_signals_file,
    scan_inbox,
)
from crucible_assets.feedback.assets import inference_events, signals
from crucible_assets.partitions import daily_partitions
from resources.feedback import FeedbackResource
from resources.lake import LakeResource

# Run tags naming the file a run ingests, and the inbox entries skipped when it was requested.
FILE_TAG = "crucible/feedback_file"
SKIPPED_TAG = "crucible/feedback_inbox_skipped"


class FeedbackFileConfig(dg.Config):
    """The file to ingest and the content hash the sensor saw (the run's key)."""

    path: str = Field(description="The feedback file to ingest (in the inbox folder).")
    sha256: str = Field(description="Its content hash when the sensor saw it (a changed file is a new run).")


@dg.op(out={}, description="Ingest one feedback file (events, or signals for *.signals.*) into the feedback tables: "
                           "validated, scrubbed, insert-only by id; bad rows go to quarantine with the reason.")
def ingest_feedback_file(context: dg.OpExecutionContext, config: FeedbackFileConfig, lake: LakeResource,
                         feedback: FeedbackResource):
    path = Path(config.path)
    if not path.is_file():
        raise dg.Failure(f"feedback file {path} is gone (moved or deleted after the sensor saw it); drop it in the "
                         f"inbox again to ingest it")
    if file_sha256(path) != config.sha256:
        context.log.warning(f"{path.name} changed since the sensor saw it (sha256 {config.sha256[:12]}...): "
                            f"ingesting its current content; the sensor requests a run for the new content too, "
                            f"which then adds nothing")
    try:
        result = ingest_file(lake.lake(), path, scrubber=feedback.scrubber(), user_key=feedback.user_key_if_set())
    except UserKeyMissing as error:
        raise dg.Failure(f"{path.name}: {error} (resource feedback.pii_key_env = {feedback.pii_key_env!r})") from error
    except FeedbackFileError as error:
        raise dg.Failure(str(error)) from error
    for reason in result.reasons[:20]:
        context.log.warning(f"quarantined: {reason}")
    context.log.info(f"{path.name}: {result.summary()}")
    target = signals if is_signals_file(path) else inference_events
    valid_days = set(daily_partitions.get_partition_keys())
    for day, count in sorted(result.per_day.items()):
        key = day.isoformat() if isinstance(day, dt.date) else str(day)
        if key not in valid_days:
            context.log.warning(f"{path.name}: {count} rows dated {key}, outside the daily partitions; stored, "
                                f"but no partition of {target.key.to_user_string()} records them")
            continue
        yield dg.AssetMaterialization(asset_key=target.key, partition=key, metadata={
            "file": path.name, "sha256": config.sha256, "accepted": count, "rows_in_file": result.rows_in,
            "quarantined_in_file": result.quarantined, "duplicates_in_file": result.duplicates})


@dg.job(description="Ingest one feedback file from the inbox (requested by feedback_inbox_sensor, one run per "
                    "file content).")
def feedback_ingest_job():
    ingest_feedback_file()


@dg.sensor(job=feedback_ingest_job, minimum_interval_seconds=30,
           description="Watches the feedback inbox (FeedbackResource.inbox) and requests one ingestion run per new "
                       "file content (run key = the file's sha256, so the same content twice runs once). Entries "
                       "that cannot be ingested (folders, other types, empty or unreadable files) are logged as "
                       "warnings with what to do; the valid files beside them are still ingested.")
def feedback_inbox_sensor(context: dg.SensorEvaluationContext, feedback: FeedbackResource):
    known: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
    scan = scan_inbox(feedback.inbox, {name: tuple(seen) for name, seen in known.items()})
    for problem in scan.problems:
        context.log.warning(problem)
    new = [f for f in scan.files if (known.get(f.path.name) or [None] * 3)[2] != f.sha256]
    cursor = json.dumps({f.path.name: [f.size, f.mtime_ns, f.sha256] for f in scan.files}, sort_keys=True)
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            "no new feedback files" + (f"; {len(scan.problems)} inbox entries skipped: " + "; ".join(scan.problems)
                                       if scan.problems else "")), cursor=cursor)
    tags = {SKIPPED_TAG: "; ".join(scan.problems)[:2000]} if scan.problems else {}
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=f"feedback-file-{f.sha256}",
            run_config={"ops": {ingest_feedback_file.name: {"config": {"path": str(f.path), "sha256": f.sha256}}}},
            tags={FILE_TAG: f.path.name, **tags}) for f in new],
        cursor=cursor)
