"""The registry through Dagster: registered_model as the service principal (bootstrapped or configured, local or
S3 artifacts), promotion from the launchpad job, the promotion sensor, and registry lineage matching Dagster's."""

import json
import stat
import uuid

import dagster as dg
import pandas as pd
import pytest

import schemas
from crucible.quarantine import store_validated
from crucible.registry import access
from crucible.registry.access import Principal
from crucible.registry.audit import AuditEvent, read_events, write_events
from crucible.registry.registry import Registry, committed_versions
from crucible.train.runs import record_run
from crucible_assets.registry import MODEL_NAME
from crucible_assets.registry.assets import registered_model
from crucible_assets.registry.jobs import promote_model_job
from crucible_assets.registry.sensors import build_promotion_sensor, promotions_after
from resources.lake import LakeResource
from resources.registry import RegistryResource

ADMIN = Principal("ada", frozenset({"admin"}))


def record_trained_run(resources: dict, seed: int) -> dict:
    """A finished SFT run as the training asset leaves it (run row, checkpoint folder, recipe.yaml) and its
    GSM8K summary, without the minutes of training: the registry only reads these."""
    lake: LakeResource = resources["lake"]
    run_id = f"sft-test-{seed}"
    folder = lake.artifact_dir("runs", run_id)
    checkpoint = folder / "final"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(seed.to_bytes(8, "little") * 16)
    (checkpoint / "config.json").write_text('{"model_type": "llama"}')
    (checkpoint / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "recipe.yaml").write_text(f"name: sft_tiny_gsm8k\nhyperparameters:\n  lr: 0.001\n  max_steps: {seed}\n")
    now = pd.Timestamp.now(tz="UTC")
    run = {"run_id": run_id, "method": "sft", "recipe_name": "sft_tiny_gsm8k", "recipe_hash": f"hash{seed}",
           "base_model": "tiny-llama", "dataset": "gsm8k", "dataset_version": 2, "trigger_reason": "manual",
           "data_window": "", "steps": seed, "final_loss": 1.0, "tokens_per_second": 10.0,
           "checkpoint_uri": str(checkpoint), "started_at": now, "finished_at": now}
    store = lake.lake()
    record_run(store, run, [{"step": 1, "loss": 1.0}])
    summary = pd.DataFrame([{"model_version": run_id, "benchmark": "gsm8k", "metric": "exact_match_flexible",
                             "value": 0.1 * seed, "ci_low": 0.0, "ci_high": 0.5, "ci_method": "wilson",
                             "ci_level": 0.95, "n": 10, "split": "test", "variant": "8-shot"}])
    store_validated(store, schemas.EVAL_SUMMARIES, summary, source="test",
                    replace_where={"model_version": run_id, "benchmark": "gsm8k"})
    return run


def register(resources: dict, instance: dg.DagsterInstance | None = None, stage: str = "experiment"):
    return dg.materialize([registered_model], resources=resources, instance=instance, raise_on_error=False,
                          run_config={"ops": {"registry__registered_model": {"config": {"stage": stage,
                                                                                      "tags": ["math"]}}}})


def promote(resources: dict, version: int, stage: str | None = "production", alias: str | None = None):
    from crucible_assets.definitions import build_defs

    config = {"version": version, "stage": stage, "alias": alias}
    return build_defs(resources).resolve_job_def(promote_model_job.name).execute_in_process(
        run_config={"ops": {"promote_model": {"config": config}}}, raise_on_error=False)


def with_registry(resources: dict, **settings) -> dict:
    """``resources`` with its registry resource reconfigured (same store and token file unless given)."""
    current = resources["registry"]
    base = {"artifact_store": current.artifact_store, "token_file": current.token_file}
    return {**resources, "registry": RegistryResource(**{**base, **settings})}


def failure_message(result) -> str:
    assert not result.success
    return result.get_step_failure_events()[0].step_failure_data.user_failure_data.description


def test_registered_model_bootstraps_the_service_principal_and_records_everything(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    run = record_trained_run(resources, seed=1)
    result = register(resources)
    assert result.success
    [materialization] = result.asset_materializations_for_node("registry__registered_model")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert (metadata["version"], metadata["registered_by"], metadata["duplicate_of"]) == (1, "dagster", 0)
    assert metadata["training_run_id"] == run["run_id"] and metadata["dataset"] == "gsm8k@v2"
    assert metadata["metrics"] == {"gsm8k/exact_match_flexible": pytest.approx(0.1)}

    token_file, admin_file = tmp_path / "registry_token", tmp_path / "registry_admin_token"
    for secret in (token_file, admin_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    store = resources["lake"].lake()
    assert access.authenticate(store, token_file.read_text()) == Principal("dagster", frozenset({"trainer", "approver"}))
    assert access.authenticate(store, admin_file.read_text()).roles == frozenset({"admin"})

    version = Registry(store, ADMIN).get(MODEL_NAME, 1)
    assert version.created_by == "dagster" and version.tags == ("gsm8k", "math", "sft")
    assert version.training_config == {"name": "sft_tiny_gsm8k", "hyperparameters": {"lr": 0.001, "max_steps": 1}}
    assert (version.recipe_name, version.recipe_hash, version.base_model) == ("sft_tiny_gsm8k", "hash1", "tiny-llama")
    [artifact] = version.artifacts
    assert artifact.artifact_type == "checkpoint" and artifact.uri.startswith(str(tmp_path / "registry_artifacts"))
    edges = {(hop.source, hop.relation) for hop in Registry(store, ADMIN).ancestors(version)}
    assert edges == {(f"run:{run['run_id']}", "produced"), ("dataset:gsm8k@v2", "trained_on"),
                     ("base:tiny-llama", "fine_tuned_from"), (f"checkpoint:{run['checkpoint_uri']}", "registered_as")}

    # The next run reuses the stored token: no second bootstrap, same principal.
    record_trained_run(resources, seed=2)
    assert register(resources).success
    assert sorted(access.principals(store)["name"]) == ["dagster", "local-admin"]
    assert committed_versions(store, MODEL_NAME)["created_by"].tolist() == ["dagster", "dagster"]


def test_production_version_is_the_promoted_one_else_the_newest(tmp_path, resources_for):
    from crucible_assets.evaluation.assets import production_version

    resources = resources_for(tmp_path)
    store = resources["lake"].lake()
    assert production_version(store) is None
    first, second = (record_trained_run(resources, seed) for seed in (1, 2))
    registry = Registry(store, ADMIN)
    for run in (first, second):
        registry.register(MODEL_NAME, {"checkpoint": run["checkpoint_uri"]}, training_run_id=run["run_id"],
                          dataset="gsm8k", dataset_version=2, stage="staging")
    assert production_version(store) == second["run_id"]
    registry.transition(MODEL_NAME, 1, "production")
    assert production_version(store) == first["run_id"]


def test_promotion_job_moves_the_stage_sets_the_alias_and_audits_it(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    record_trained_run(resources, seed=1)
    assert register(resources, stage="staging").success

    result = promote(resources, 1, "production", alias="champion")
    assert result.success
    assert result.output_for_node("promote_model")["stage"] == "production"
    store = resources["lake"].lake()
    version = Registry(store, ADMIN).get(MODEL_NAME, "champion")
    assert (version.version, version.stage) == (1, "production")
    [event] = read_events(store, MODEL_NAME, "promote")
    assert (event.principal, event.version, event.details["from"], event.allowed) == ("dagster", 1, "staging", True)
    assert [e.action for e in read_events(store, MODEL_NAME)][-2:] == ["promote", "set_alias"]

    wrong = failure_message(promote(resources, 1, "experiment"))
    assert wrong == ("promote_model: crucible-sft v1: cannot move from production to experiment; from production it "
                     "can move to archived or staging")
    assert failure_message(promote(resources, 1, None)) == ("promote_model: nothing to do; give a target stage, an "
                                                            "alias, or both")
    assert "unknown stage 'prod'; stages are experiment, staging, production, archived" in failure_message(
        promote(resources, 1, "prod"))


def test_a_viewer_service_token_is_refused_with_the_reason_and_an_audit_row(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    store = resources["lake"].lake()
    ada = access.authenticate(store, access.create_principal(store, "ada", ["admin"]))
    viewer_token = access.create_principal(store, "viewer-bot", ["viewer"], by=ada)
    run = record_trained_run(resources, seed=1)
    Registry(store, ada).register(MODEL_NAME, {"checkpoint": run["checkpoint_uri"]}, training_run_id=run["run_id"],
                                  dataset="gsm8k", dataset_version=2)
    viewer = with_registry(resources, token=viewer_token)

    message = failure_message(promote(viewer, 1, "staging"))
    assert message == ("promote_model: principal 'viewer-bot' may not move crucible-sft v1 from experiment to "
                       "staging: needs role trainer or admin; has viewer")
    [refusal] = [e for e in read_events(store, MODEL_NAME) if not e.allowed]
    assert (refusal.principal, refusal.action, refusal.version) == ("viewer-bot", "transition", 1)
    assert refusal.reason == "needs role trainer or admin; has viewer"
    assert Registry(store, ada).get(MODEL_NAME, 1).stage == "experiment"
    assert "needs role trainer or admin" in failure_message(register(viewer))

    # A configured token that opens nothing is named by its variable; no bootstrap happens behind it.
    unknown = with_registry(resources, token="crt_0123456789abcdef.x")
    assert failure_message(promote(unknown, 1, "staging")).startswith(
        "promote_model: CRUCIBLE_REGISTRY_TOKEN (the registry's service token): registry token crt_0123456789abcdef")
    # With principals made by someone else and no token anywhere, the error says what to set.
    assert "CRUCIBLE_REGISTRY_TOKEN is not set" in failure_message(promote(resources, 1, "staging"))
    assert not (tmp_path / "registry_token").exists()


# -- the promotion sensor ------------------------------------------------------------------------------


@pytest.fixture
def promoted(tmp_path, resources_for):
    """Two versions in staging; ``promote(v)`` moves one to production as an admin."""
    resources = resources_for(tmp_path)
    store = resources["lake"].lake()
    registry = Registry(store, ADMIN)
    for seed in (1, 2):
        run = record_trained_run(resources, seed)
        registry.register(MODEL_NAME, {"checkpoint": run["checkpoint_uri"]}, training_run_id=run["run_id"],
                          dataset="gsm8k", dataset_version=2, stage="staging")
    return resources, lambda version: registry.transition(MODEL_NAME, version, "production")


def tick(sensor: dg.SensorDefinition, defs: dg.Definitions, resources: dict, instance, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources)
    return sensor.evaluate_tick(context)


def test_sensor_without_a_deployment_job_records_each_promotion_once(promoted):
    from crucible_assets.definitions import build_defs

    resources, promote_version = promoted
    defs = build_defs(resources)
    sensor = defs.get_sensor_def("model_promotion_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        empty = tick(sensor, defs, resources, instance, None)
        assert not empty.run_requests and not empty.asset_events and empty.cursor is None

        first = promote_version(1)
        data = tick(sensor, defs, resources, instance, None)
        assert not data.run_requests
        [observation] = data.asset_events
        assert observation.asset_key == registered_model.key
        assert observation.metadata["crucible/promote_event"].value == first.event_id
        assert observation.metadata["promoted"].value == f"{MODEL_NAME} v1"
        assert json.loads(data.cursor)["seen"] == [first.event_id]

        again = tick(sensor, defs, resources, instance, data.cursor)
        assert not again.asset_events and again.cursor == data.cursor and again.skip_message == "no new promotions"

        second = promote_version(2)  # archives v1 in the same commit: one promote event
        later = tick(sensor, defs, resources, instance, data.cursor)
        [observation] = later.asset_events
        assert observation.metadata["crucible/promote_event"].value == second.event_id
        assert observation.metadata["archived"].value == [1]


class DeployConfig(dg.Config):
    version: int


@dg.op
def deploy(context: dg.OpExecutionContext, config: DeployConfig) -> None:
    context.log.info("deploying v%s", config.version)


@dg.job
def deploy_model_job():
    """Stands in for the deployment layer's job: the sensor's target is pluggable."""
    deploy()


def test_sensor_with_a_deployment_job_requests_one_run_per_promotion(promoted):
    resources, promote_version = promoted

    sensor = build_promotion_sensor(deploy_model_job, name="deploy_on_promotion", run_config_for=lambda event: {
        "ops": {"deploy": {"config": {"version": event.version}}}})
    defs = dg.Definitions(jobs=[deploy_model_job], sensors=[sensor], resources={"lake": resources["lake"]})
    events = [promote_version(1), promote_version(2)]
    with dg.DagsterInstance.ephemeral() as instance:
        data = tick(defs.get_sensor_def("deploy_on_promotion"), defs, resources, instance, None)
        assert [r.run_key for r in data.run_requests] == [f"promote-{e.event_id}" for e in events]
        assert [r.tags["crucible/version"] for r in data.run_requests] == ["1", "2"]
        assert data.run_requests[1].run_config == {"ops": {"deploy": {"config": {"version": 2}}}}
        assert {r.job_name for r in data.run_requests} == {"deploy_model_job"}
        assert not tick(defs.get_sensor_def("deploy_on_promotion"), defs, resources, instance,
                        data.cursor).run_requests


def test_cursor_picks_up_a_later_event_with_the_same_timestamp_exactly_once(lake):
    at = pd.Timestamp("2026-11-05T10:00:00.123456Z")

    def promotion(version: int, allowed: bool = True) -> AuditEvent:
        return AuditEvent("promote", "amy", MODEL_NAME, version, {"from": "staging", "to": "production"},
                          allowed=allowed, event_id=uuid.uuid4().hex, at=at)

    first = [promotion(1), promotion(2, allowed=False)]
    write_events(lake, first)
    events, cursor = promotions_after(lake, None)
    assert [e.event_id for e in events] == [first[0].event_id]  # a refused promotion is no promotion
    late = promotion(3)
    write_events(lake, [late])
    events, cursor = promotions_after(lake, cursor)
    assert [e.event_id for e in events] == [late.event_id]
    assert promotions_after(lake, cursor) == ([], cursor)


# -- artifacts on S3 ---------------------------------------------------------------------------------


def test_registered_model_stores_its_artifact_on_s3(tmp_path, resources_for, s3_endpoint):
    import boto3

    from crucible.registry.versions import artifact_sha256

    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials)
    bucket = f"crucible-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    resources = with_registry(resources_for(tmp_path), artifact_store=f"s3://{bucket}/models",
                              s3_endpoint_url=s3_endpoint, s3_region="us-east-1", **credentials)
    run = record_trained_run(resources, seed=1)
    assert register(resources).success

    version = Registry(resources["lake"].lake(), ADMIN).get(MODEL_NAME, 1)
    [artifact] = version.artifacts
    assert artifact.backend == "s3" and artifact.uri.startswith(f"s3://{bucket}/models/{MODEL_NAME}/")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert [key.rsplit("/", 1)[1] for key in keys] == ["config.json", "model.safetensors", "tokenizer.json"]
    fetched = resources["registry"].store().get(artifact.uri, tmp_path / "fetched", artifact.sha256)
    assert artifact_sha256(fetched) == artifact_sha256(run["checkpoint_uri"]) == version.sha256


# -- the registry's lineage agrees with Dagster's ------------------------------------------------------


def test_registry_lineage_matches_the_dagster_run_that_registered(lifecycle):
    """For every retrain_job run that registered a new version, the registry's ancestors of that version hold
    the dataset@version and the training run that training/sft_checkpoint recorded in the same Dagster run,
    and the datasets of the benchmarks evaluation/eval_results scored it on."""
    from crucible.evaluate.benchmarks import BENCHMARKS

    instance = lifecycle.instance
    registry = Registry(lifecycle.lake, ADMIN)

    def metadata(key: str, run_id: str) -> dict:
        records = instance.fetch_materializations(dg.AssetKey.from_user_string(key), limit=100).records
        [record] = [r for r in records if r.run_id == run_id]
        return {k: v.value for k, v in record.asset_materialization.metadata.items()}

    registered = instance.fetch_materializations(registered_model.key, limit=100).records
    new = [r for r in registered if not r.asset_materialization.metadata["duplicate_of"].value]
    # The retraining adds curated feedback to the recipe's data, so it registers a new version too.
    assert len(new) == 2 and len(registered) == 2
    for record in new:
        dagster_run = record.run_id
        trained = metadata("training/sft_checkpoint", dagster_run)
        evaluated = metadata("evaluation/eval_results", dagster_run)
        version = registry.get(MODEL_NAME, metadata("registry/registered_model", dagster_run)["version"])

        ancestors = {(hop.source, hop.relation, hop.target) for hop in registry.ancestors(version)}
        dataset = trained["dataset"].split("/")[0]
        assert (f"dataset:{dataset}@v{trained['dataset_table_version']}", "trained_on", version.node) in ancestors
        assert (f"run:{trained['run_id']}", "produced", version.node) in ancestors
        assert (f"checkpoint:{trained['checkpoint']}", "registered_as", version.node) in ancestors
        assert version.training_run_id == trained["run_id"] == evaluated["model_version"]
        evaluated_on = {source.split("@")[0] for source, relation, _ in ancestors if relation == "evaluated_on"}
        assert evaluated_on == {f"dataset:{BENCHMARKS[b].dataset}" for b in evaluated["benchmarks"]}
        assert version.recipe_hash == trained["recipe_hash"] and version.created_by == "dagster"
