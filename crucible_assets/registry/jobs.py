"""Promotion from the UI: a launchpad job that moves a version to a stage and/or points an alias at it."""

import dagster as dg
from pydantic import Field

from crucible.registry.access import AccessDenied, AuthenticationError
from crucible.registry.registry import VersionNotFound
from crucible.registry.versions import InvalidTransition
from crucible_assets.registry import MODEL_NAME
from resources.lake import LakeResource
from resources.registry import RegistryResource
from schemas.registry import STAGES


class PromotionConfig(dg.Config):
    """Which version to move and where: a stage, an alias, or both (the stage first)."""

    model_name: str = Field(MODEL_NAME, description="The registered model.")
    version: int = Field(..., ge=1, description="The version number to promote.")
    stage: str | None = Field("production", description=f"Target stage ({', '.join(STAGES)}), or null for none; "
                                                        "production needs the approver role.")
    alias: str | None = Field(None, description="An alias to point at the version, e.g. champion.")


@dg.op(description="Moves a registered version to a stage and/or sets an alias, as the service principal; each "
                   "change (and any refusal) is a row of registry/audit_log.")
def promote_model(context: dg.OpExecutionContext, config: PromotionConfig, lake: LakeResource,
                  registry: RegistryResource) -> dict:
    if config.stage is None and config.alias is None:
        raise dg.Failure("promote_model: nothing to do; give a target stage, an alias, or both")
    store = lake.lake()
    events = []
    try:
        service = registry.registry(store)
        if config.stage is not None:
            events.append(service.transition(config.model_name, config.version, config.stage))
        if config.alias is not None:
            events.append(service.set_alias(config.model_name, config.alias, config.version))
    except (AccessDenied, AuthenticationError, VersionNotFound, InvalidTransition, ValueError) as error:
        # The refusal is already in the audit log; the launchpad user needs the reason, not a traceback.
        raise dg.Failure(f"promote_model: {error}") from None
    for event in events:
        context.log.info("%s %s v%s: %s (audit event %s)", event.action, event.model_name, event.version,
                         event.details, event.event_id)
    version = service.get(config.model_name, config.version)
    context.add_output_metadata({"model_name": version.model_name, "version": version.version,
                                 "stage": version.stage, "aliases": dg.MetadataValue.json(list(version.aliases)),
                                 "audit_events": dg.MetadataValue.json([e.event_id for e in events]),
                                 "by": service.principal.name})
    return {"model_name": version.model_name, "version": version.version, "stage": version.stage,
            "aliases": list(version.aliases), "events": [e.event_id for e in events]}


@dg.job(description="Promote a registered model version from the launchpad: a stage (production by default) and/or "
                    "an alias. A move to production archives the previous production version and emits the "
                    "'promote' event that model_promotion_sensor hands to deployment.")
def promote_model_job():
    promote_model()
