"""Operations: every failed run is recorded in the lake and, when a webhook is configured, alerted."""

import dagster as dg
import pandas as pd

from crucible.operations.alerts import AlertError, RunFailure, record_failure, send_webhook
from resources.alerts import AlertsResource
from resources.lake import LakeResource


def failure_of(context: dg.RunFailureSensorContext, dagster_url: str | None) -> RunFailure:
    run = context.dagster_run
    error = context.failure_event.message or "run failed"
    steps = [event.step_key for event in context.get_step_failure_events() if event.step_key]
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        if data and data.error:
            cause = data.error
            while cause.cause is not None:  # Dagster wraps the user's exception: report the user's
                cause = cause.cause
            error = f"{cause.cls_name}: {cause.message.strip().splitlines()[0]}"
            break
    return RunFailure(run.run_id, run.job_name, pd.Timestamp.now(tz="UTC"), error, steps,
                      {k: v for k, v in run.tags.items() if not k.startswith(".dagster")}, dagster_url)


@dg.run_failure_sensor(
    name="run_failure_alerts", monitor_all_code_locations=True, minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run (job, failed steps, first error) in operations/run_failures and "
                "posts it to the alerts webhook when one is configured.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, lake: LakeResource, alerts: AlertsResource) -> None:
    failure = failure_of(context, alerts.dagster_url)
    alerted, problem = False, None
    if alerts.webhook_url:
        try:
            send_webhook(alerts.webhook_url, failure, alerts.timeout_s)
            alerted = True
        except AlertError as error:  # the record still lands; the UI shows why no alert went out
            problem = str(error)
            context.log.warning(problem)
    record_failure(lake.lake(), failure, alerted, problem)
    context.log.info(failure.message())
