"""Deployment jobs: a rollout of a registered version on this machine."""

import dagster as dg

from crucible_assets.deploy.assets import local_deployment

deploy_job = dg.define_asset_job(
    "deploy_job", selection=[local_deployment],
    description="Roll a registered version (production by default) out on this machine with the configured "
                "strategy; started by deployment_promotion_sensor when a version is promoted to production.")
