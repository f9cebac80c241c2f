"""The whole asset graph, end to end, on real Delta tables and a real Dagster instance."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

import schemas
from crucible_assets.definitions import defs as default_defs


def test_definitions_load_and_everything_resolves():
    for job in ("retrain_job", "daily_feedback_job", "dataset_ingest_job"):
        assert default_defs.resolve_job_def(job) is not None
    for sensor in ("drift_retraining_sensor", "dataset_drop_sensor"):
        assert default_defs.get_sensor_def(sensor) is not None
    assert default_defs.get_schedule_def("daily_feedback_job_schedule") is not None
    assert len(default_defs.resolve_all_asset_specs()) >= 6


def test_loading_definitions_imports_neither_torch_nor_transformers():
    code = ("import sys, crucible_assets.definitions; "
            "print(json.dumps([m for m in ('torch', 'transformers', 'peft') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_lineage_edges_are_as_designed():
    graph = default_defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}

    assert parents("training/sft_checkpoint") == {"datasets/examples"}
    assert parents("evaluation/eval_results") == {"training/sft_checkpoint"}
    assert parents("registry/registered_model") == {"evaluation/eval_results"}
    assert parents("feedback/inference_events") == {"registry/registered_model"}
    assert parents("monitoring/drift_report") == {"feedback/inference_events"}
    for key in ("datasets/examples", "training/sft_checkpoint", "monitoring/drift_report"):
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert node.group_name == key.split("/")[0]
        assert node.description


def test_every_table_has_rows_that_satisfy_its_schema(lifecycle):
    lake = lifecycle.lake
    expected_rows = {
        "datasets/examples": 7473 + 1319,
        "training/runs": 2,  # the first training, then the drift-triggered retraining
        "evaluation/results": 2 * 16,  # GSM8K only (the one dataset loaded here), its demo limit of 16
        "registry/versions": 1,  # retraining on the same data reproduces the same weights (same sha256)
        "feedback/inference_events": 3 * 64,
        "monitoring/drift_reports": 3 * 2,
        "monitoring/baselines": 1,
    }
    for spec in schemas.ALL_TABLES:
        if spec.path in expected_rows:
            frame = lake.read(spec)
            assert len(frame) == expected_rows[spec.path], spec.path
            spec.model.validate(frame)


def test_checkpoint_is_a_loadable_hugging_face_model(lifecycle):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = lifecycle.lake.read(schemas.TRAINING_RUNS).sort_values("finished_at").iloc[0]
    folder = Path(run["checkpoint_uri"])
    assert any(folder.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.vocab_size >= len(tokenizer)
    metrics = lifecycle.lake.read(schemas.TRAINING_METRICS, where={"run_id": run["run_id"]})
    losses = metrics[metrics["name"] == "loss"].sort_values("step")["value"].tolist()
    assert len(losses) == run["steps"] and losses[-1] < losses[0]


def test_registered_version_records_its_lineage(lifecycle):
    lake = lifecycle.lake
    version = lake.read(schemas.MODEL_VERSIONS).iloc[0]
    from crucible.registry.versions import artifact_sha256

    assert artifact_sha256(version["artifact_uri"]) == version["sha256"]
    assert set(json.loads(version["metrics"])) >= {"gsm8k/exact_match_flexible", "gsm8k/exact_match_strict"}
    assert version["dataset"] == "gsm8k" and version["dataset_version"] >= 0
    edges = lake.read(schemas.LINEAGE_EDGES)
    assert {"trained_on", "produced", "registered_as", "fine_tuned_from"} <= set(edges["relation"])


def test_feedback_is_scrubbed_and_partitioned_by_day(lifecycle):
    events = lifecycle.lake.read(schemas.INFERENCE_EVENTS)
    assert sorted(events["day"].astype(str).unique()) == lifecycle.days
    assert events["pii_redactions"].sum() > 0
    text = " ".join(events["prompt"]) + " ".join(events["response"])
    assert "@" not in text and "[EMAIL]" in text
    materialized = lifecycle.instance.get_materialized_partitions(dg.AssetKey(["feedback", "inference_events"]))
    assert materialized == set(lifecycle.days)


def test_drift_sensor_retrained_only_for_the_planted_day(lifecycle):
    days = lifecycle.days
    reports = lifecycle.lake.read(schemas.DRIFT_REPORTS)
    drifted_days = sorted(reports[reports["drifted"]]["day"].astype(str).unique())
    assert drifted_days == [days[-1]]
    runs = lifecycle.lake.read(schemas.TRAINING_RUNS).sort_values("finished_at")
    assert runs["trigger_reason"].tolist()[0] == "manual"
    retrain = runs.iloc[-1]
    assert retrain["trigger_reason"].startswith(f"drift on {days[-1]}")
    assert retrain["data_window"] == f"{(dt.date.fromisoformat(days[-1]) - dt.timedelta(days=6))}..{days[-1]}"
    assert lifecycle.produced["retraining_runs"] == 1


def test_sensor_skips_without_drift_and_requests_with_it(lifecycle):
    days = lifecycle.days
    sensor = lifecycle.defs.get_sensor_def("drift_retraining_sensor")
    instance, resources = lifecycle.instance, lifecycle.resources
    newest = instance.fetch_materializations(dg.AssetKey(["monitoring", "drift_report"]), limit=1).records[0]
    quiet_day = days[0]

    def tick_after(storage_id: int, day: str) -> dg.SensorResult:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(["monitoring", "drift_report"]), asset_partitions=[day]), limit=1)
        before = records.records[0].storage_id - 1
        context = dg.build_sensor_context(instance=instance, cursor=str(before), definitions=lifecycle.defs,
                                          resources=resources)
        return sensor.evaluate_tick(context)

    quiet = tick_after(newest.storage_id, quiet_day)
    requested_days = {r.tags["crucible/drift_day"] for r in quiet.run_requests}
    assert quiet_day not in requested_days
    drifted = tick_after(newest.storage_id, days[-1])
    assert [r.tags["crucible/drift_day"] for r in drifted.run_requests] == [days[-1]]
    config = drifted.run_requests[0].run_config["ops"]["training__sft_checkpoint"]["config"]
    assert "psi" in config["trigger_reason"] and config["data_window_end"] == days[-1]
    caught_up = dg.build_sensor_context(instance=instance, cursor=str(newest.storage_id),
                                        definitions=lifecycle.defs, resources=resources)
    assert not sensor.evaluate_tick(caught_up).run_requests


def test_three_day_backfill_is_exact_and_rerunning_it_changes_nothing(lifecycle):
    job = lifecycle.defs.resolve_job_def("daily_feedback_job")
    days = ["2026-11-10", "2026-11-11", "2026-11-12"]
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    lake = lifecycle.lake

    def counts() -> dict:
        events = lake.read(schemas.INFERENCE_EVENTS, where={"day": [dt.date.fromisoformat(d) for d in days]})
        reports = lake.read(schemas.DRIFT_REPORTS, where={"day": [dt.date.fromisoformat(d) for d in days]})
        return {"events": events.groupby(events["day"].astype(str)).size().to_dict(),
                "reports": len(reports), "all_events": len(lake.read(schemas.INFERENCE_EVENTS))}

    assert job.execute_in_process(instance=lifecycle.instance, tags=tags).success
    first = counts()
    assert first["events"] == {d: 64 for d in days} and first["reports"] == 6
    materialized = lifecycle.instance.get_materialized_partitions(dg.AssetKey(["monitoring", "drift_report"]))
    assert set(days) <= materialized
    assert job.execute_in_process(instance=lifecycle.instance, tags=tags).success
    assert counts() == first


@pytest.mark.parametrize("table", ["feedback/inference_events", "monitoring/drift_reports"])
def test_no_rows_were_quarantined_on_the_happy_path(lifecycle, table):
    quarantined = lifecycle.lake.read(schemas.QUARANTINE)
    assert (quarantined["table"] == table).sum() == 0
