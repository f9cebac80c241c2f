"""Registry assets: evaluated checkpoints become numbered model versions, registered by the service principal."""

import dagster as dg
from pydantic import Field

from crucible.registry.access import AccessDenied, AuthenticationError
from crucible.registry.service import evaluation_sources, register_training_run, training_config_of
from crucible.registry.versions import REGISTRATION_STAGES
from crucible.train.runs import latest_run
from crucible_assets.evaluation.assets import eval_results
from crucible_assets.metadata import table_definition_metadata
from crucible_assets.registry import MODEL_NAME
from resources.lake import LakeResource
from resources.registry import RegistryResource
from schemas import EVAL_SUMMARIES, MODEL_VERSIONS


class RegistrationConfig(dg.Config):
    stage: str = Field("experiment", description=f"Stage to register in: {' or '.join(REGISTRATION_STAGES)}; "
                                                 "production is reached by promote_model_job.")
    tags: list[str] = Field(default_factory=list, description="Tags besides the method and dataset, e.g. [\"math\"].")


@dg.asset(
    metadata=table_definition_metadata(MODEL_VERSIONS),
    key=["registry", "registered_model"], deps=[eval_results], group_name="registry", kinds={"deltalake"},
    owners=["team:ml-platform"],
    description="Registers the evaluated checkpoint as the next version of the model as the service principal: "
                "the checkpoint artifact (sha256), recipe, training config, metrics, tags and lineage edges "
                "(trained_on, fine_tuned_from, evaluated_on, produced, registered_as).",
)
def registered_model(context: dg.AssetExecutionContext, config: RegistrationConfig, lake: LakeResource,
                     registry: RegistryResource) -> dg.MaterializeResult:
    store = lake.lake()
    run = latest_run(store)
    summaries = store.read(EVAL_SUMMARIES, where={"model_version": run["run_id"]})
    metrics = {f"{r.benchmark}/{r.metric}": float(r.value) for r in summaries.itertuples()}
    try:
        service = registry.registry(store)
        version = register_training_run(
            service, MODEL_NAME, run, metrics, training_config=training_config_of(lake.artifact_dir("runs", run["run_id"])),
            evaluated_on=evaluation_sources(store, run["run_id"]), tags=config.tags, stage=config.stage)
    except (AccessDenied, AuthenticationError, ValueError) as error:
        raise dg.Failure(f"registry/registered_model: {error}") from None
    edges = [f"{hop.source} -[{hop.relation}]->" for hop in service.ancestors(version, depth=1)]
    context.log.info("%s %s v%s from run %s", "found already registered" if version.duplicate_of else "registered",
                     MODEL_NAME, version.version, run["run_id"])
    return dg.MaterializeResult(metadata={
        "model_name": MODEL_NAME, "version": version.version, "stage": version.stage,
        "duplicate_of": version.duplicate_of or 0, "registered_by": service.principal.name,
        "sha256": version.sha256, "artifact_uri": dg.MetadataValue.path(version.artifact_uri),
        "training_run_id": version.training_run_id, "recipe": version.recipe_name or "",
        "recipe_hash": version.recipe_hash or "", "base_model": version.base_model or "",
        "dataset": f"{version.dataset}@v{version.dataset_version}", "tags": dg.MetadataValue.json(list(version.tags)),
        "metrics": dg.MetadataValue.json(version.metrics), "lineage": dg.MetadataValue.json(edges),
    })
