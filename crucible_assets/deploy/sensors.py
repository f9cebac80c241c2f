"""Deployment sensors: promotions to production start a rollout, and live deployments are probed for health."""

from typing import Any

import dagster as dg

from crucible.registry.audit import AuditEvent
from crucible_assets.deploy.assets import local_deployment
from crucible_assets.deploy.jobs import deploy_job
from crucible_assets.registry.sensors import build_promotion_sensor
from resources.lake import LakeResource


def deploy_run_config(event: AuditEvent) -> dict[str, Any]:
    """Run config of deploy_job for a promotion: exactly the promoted version."""
    op_name = local_deployment.op.name
    return {"ops": {op_name: {"config": {"model_name": str(event.model_name), "ref": str(event.version)}}}}


deployment_promotion_sensor = build_promotion_sensor(deploy_job, deploy_run_config,
                                                     name="deployment_promotion_sensor")


@dg.sensor(minimum_interval_seconds=60, description="Probes every live deployment (/healthz, /readyz, latency, "
                                                    "/metrics counters) and writes a row of deployment/health "
                                                    "for each; an observation of deployment/local per probe.")
def deployment_health_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
    from crucible.deploy.health import probe_live_deployments

    rows = probe_live_deployments(lake.lake())
    if rows.empty:
        return dg.SensorResult(skip_reason="no live local deployments")
    unhealthy = rows.loc[~rows["ready"]]
    for row in unhealthy.itertuples():
        context.log.warning("deployment %s (%s) is not ready: %s", row.deployment_id, row.url, row.error)
    observations = [dg.AssetObservation(asset_key=local_deployment.key, metadata={
        "deployment_id": row.deployment_id, "state": row.state, "live": bool(row.live), "ready": bool(row.ready),
        "latency_ms": float(row.latency_ms) if row.latency_ms == row.latency_ms else -1.0,
        "error": row.error if isinstance(row.error, str) else ""}) for row in rows.itertuples()]
    return dg.SensorResult(asset_events=observations,
                           skip_reason=f"probed {len(rows)} deployment(s), {len(unhealthy)} not ready")
