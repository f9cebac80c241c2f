"""Evaluation through Dagster: the promotion gate blocks a planted regression and passes an
improvement, and the model-version x benchmark partitions re-run exactly their own slice."""

import dagster as dg
import pytest

import schemas
from crucible.evaluate.runner import results_of


@pytest.fixture(scope="module")
def world(tmp_path_factory, resources_for):
    from crucible_assets.definitions import build_defs
    from crucible_assets.partitions import datasets_partitions

    root = tmp_path_factory.mktemp("evaluation")
    resources = resources_for(root)
    defs = build_defs(resources)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, ["gsm8k", "mmlu"])
        for name in ("gsm8k", "mmlu"):
            assert defs.resolve_job_def("dataset_ingest_job").execute_in_process(
                instance=instance, partition_key=name).success
        yield defs, instance, resources["lake"].lake()


def retrain(defs, instance, steps: int):
    config = {"ops": {
        "training__sft_checkpoint": {"config": {"hyperparameters": {"max_steps": steps}}},
        "evaluation__eval_results": {"config": {"benchmarks": ["gsm8k"], "limit": 10, "max_new_tokens": 8}},
    }}
    return defs.resolve_job_def("retrain_job").execute_in_process(instance=instance, run_config=config,
                                                                  raise_on_error=False)


def plant_production_scores(lake, score: float) -> str:
    """Overwrite the production version's GSM8K rows: every item right (1.0) or wrong (0.0)."""
    production = lake.read(schemas.MODEL_VERSIONS).sort_values("version").iloc[-1]["training_run_id"]
    rows = results_of(lake, production, ["gsm8k"])
    assert len(rows) == 10
    rows["score"] = score
    lake.replace_where(schemas.EVAL_RESULTS, rows, {"model_version": production, "benchmark": "gsm8k"})
    return production


def gate_result(result) -> dg.AssetCheckEvaluation:
    [evaluation] = [e.event_specific_data for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return evaluation


def test_gate_blocks_a_planted_regression_and_passes_an_improvement(world):
    defs, instance, lake = world
    first = retrain(defs, instance, steps=2)
    assert first.success and gate_result(first).passed
    assert len(lake.read(schemas.MODEL_VERSIONS)) == 1

    production = plant_production_scores(lake, 1.0)
    blocked = retrain(defs, instance, steps=3)
    check = gate_result(blocked)
    assert not check.passed
    reasons = check.metadata["reasons"].value
    assert "gsm8k" in reasons and "p" in reasons
    [entry] = check.metadata["blocked"].value
    assert entry["benchmark"] == "gsm8k" and entry["difference"] < -0.5 and entry["adjusted_p"] < 0.05
    assert "| gsm8k" in check.metadata["comparison"].value
    assert len(lake.read(schemas.MODEL_VERSIONS)) == 1, "a blocked candidate must not be registered"
    assert check.metadata["production"].value == production

    plant_production_scores(lake, 0.0)
    improved = retrain(defs, instance, steps=4)
    assert improved.success and gate_result(improved).passed
    assert len(lake.read(schemas.MODEL_VERSIONS)) == 2


def test_version_by_benchmark_partitions_replace_only_their_slice(world):
    from crucible_assets.evaluation.assets import benchmark_results

    defs, instance, lake = world
    if lake.version(schemas.TRAINING_RUNS) < 0:
        assert retrain(defs, instance, steps=2).success
    version = lake.read(schemas.TRAINING_RUNS).sort_values("finished_at").iloc[-1]["run_id"]
    assert version in instance.get_dynamic_partitions("model_versions")
    resources = {k: v for k, v in defs.resources.items() if k == "lake"}

    def run(benchmark: str):
        key = dg.MultiPartitionKey({"model_version": version, "benchmark": benchmark})
        return dg.materialize([benchmark_results], partition_key=key, instance=instance, resources=resources,
                              run_config={"ops": {"evaluation__benchmark_results": {"config": {"limit": 6}}}})

    assert run("mmlu").success
    before = lake.read(schemas.EVAL_RESULTS)
    mmlu = before[(before["model_version"] == version) & (before["benchmark"] == "mmlu")]
    assert len(mmlu) == 6 and set(mmlu["variant"]) == {"5-shot"}
    assert run("mmlu").success
    after = lake.read(schemas.EVAL_RESULTS)
    key = ["model_version", "benchmark", "example_id", "sample"]
    assert after.sort_values(key).reset_index(drop=True).equals(before.sort_values(key).reset_index(drop=True))
    summaries = lake.read(schemas.EVAL_SUMMARIES, where={"model_version": version, "benchmark": "mmlu"})
    assert {"accuracy"} <= set(summaries["metric"]) and (summaries["ci_low"] <= summaries["ci_high"]).all()
    materialized = instance.get_materialized_partitions(benchmark_results.key)
    assert dg.MultiPartitionKey({"model_version": version, "benchmark": "mmlu"}) in materialized


def test_an_unknown_version_partition_is_refused_before_any_work(world):
    from crucible_assets.evaluation.assets import benchmark_results

    defs, instance, lake = world
    resources = {k: v for k, v in defs.resources.items() if k == "lake"}
    key = dg.MultiPartitionKey({"model_version": "no-such-run", "benchmark": "gsm8k"})
    with pytest.raises(Exception, match="no-such-run"):
        dg.materialize([benchmark_results], partition_key=key, instance=instance, resources=resources)
