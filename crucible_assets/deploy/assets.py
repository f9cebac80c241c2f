"""Deployment assets: a registered version rolled out on this machine (``deployment/local``) or rendered for a
target that runs elsewhere (``deployment/manifests``), each with lineage to ``registry/registered_model``."""

import dagster as dg
from pydantic import Field

from crucible_assets.metadata import table_definition_metadata
from crucible_assets.registry import MODEL_NAME
from crucible_assets.registry.assets import registered_model
from resources.deploy import DeploymentResource
from resources.lake import LakeResource
from schemas import DEPLOYMENTS


class DeployConfig(dg.Config):
    """Which registered version to serve; the promotion sensor fills these from the promotion event."""

    model_name: str = Field(MODEL_NAME, description="The registered model.")
    ref: str = Field("production", description="A version number, a stage (production), an alias or latest.")


def _spec(lake: LakeResource, config: DeployConfig, deploy: DeploymentResource):
    from crucible.deploy.targets import ServeSpec
    from crucible.registry.registry import VersionNotFound, read_version

    store = lake.lake()
    try:
        version = read_version(store, config.model_name, config.ref)
    except VersionNotFound as error:
        raise dg.Failure(f"deployment: {error}") from None
    return store, ServeSpec.from_version(version, lake_root=str(store.root), extra_args=tuple(deploy.serve_args))


@dg.asset(
    metadata=table_definition_metadata(DEPLOYMENTS),
    key=["deployment", "local"], deps=[registered_model], group_name="deployment", kinds={"deltalake"},
    owners=["team:ml-platform"],
    description="Rolls a registered version out on this machine: `crucible serve` next to the serving version, "
                "traffic moved by the model's router with the configured strategy (replace, blue-green, canary, "
                "A/B), automatic rollback on error rate or p99 latency; a row of deployment/deployments.",
)
def local_deployment(context: dg.AssetExecutionContext, config: DeployConfig, lake: LakeResource,
                     deployment: DeploymentResource) -> dg.MaterializeResult:
    from crucible.deploy.deployments import deploy_local

    store, spec = _spec(lake, config, deployment)
    try:
        result = deploy_local(store, spec, target=deployment.local_target(), strategy=deployment.strategy_plan(),
                              thresholds=deployment.thresholds(), candidate_timeout_s=deployment.candidate_timeout_s,
                              drain_s=deployment.drain_s, judge_alpha=deployment.ab_alpha,
                              config={"run_id": context.run_id}, on_event=context.log.info)
    except RuntimeError as error:
        raise dg.Failure(f"deployment/local: {error}") from None
    metadata = {"deployment_id": result.deployment_id, "model": spec.served_name, "state": result.state,
                "strategy": result.strategy, "traffic_percent": result.traffic_percent,
                "previous_version": result.previous_version or 0, "reason": result.reason or "",
                "endpoint": dg.MetadataValue.url(result.endpoint) if result.endpoint else "",
                "history": dg.MetadataValue.json(list(result.history))}
    if result.state == "failed":
        raise dg.Failure(f"deployment/local: {spec.served_name} failed: {result.reason}", metadata=metadata)
    context.log.info("%s %s: %s", result.deployment_id, result.state, result.reason)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=["deployment", "manifests"], deps=[registered_model], group_name="deployment", kinds={"kubernetes"},
    owners=["team:ml-platform"],
    description="Renders a registered version for a target that runs elsewhere (vLLM or TGI launch command, "
                "Kubernetes Deployment + Service with probes and GPU resources), validated, written under the "
                "deployment workdir and recorded as a pending deployment.",
)
def rendered_deployment(context: dg.AssetExecutionContext, config: DeployConfig, lake: LakeResource,
                        deployment: DeploymentResource) -> dg.MaterializeResult:
    from crucible.deploy.deployments import render_deployment
    from crucible.deploy.targets import TargetConfigError

    store, spec = _spec(lake, config, deployment)
    target = "kubernetes" if deployment.target == "local" else deployment.target
    try:
        record, path = render_deployment(store, spec, target, f"{deployment.workdir}/{target}",
                                         **({} if target != deployment.target else deployment.rendered_options()))
    except TargetConfigError as error:
        raise dg.Failure(f"deployment/manifests: {error}") from None
    context.log.info("rendered %s for %s at %s", spec.served_name, target, path)
    return dg.MaterializeResult(metadata={"deployment_id": record.deployment_id, "model": spec.served_name,
                                          "target": target, "path": dg.MetadataValue.path(str(path)),
                                          "rendered": dg.MetadataValue.md(f"```\n{path.read_text()}\n```")})
