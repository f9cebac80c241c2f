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

    assert parents("training/sft_checkpoint") == {"datasets/examples", "feedback/curated_examples"}
    assert parents("evaluation/eval_results") == {"training/sft_checkpoint"}
    assert parents("registry/registered_model") == {"evaluation/eval_results"}
    # Served traffic is observed, not derived: no edge back to the model (the graph stays acyclic);
    # the loop closes through curated examples feeding the next training run.
    assert parents("feedback/inference_events") == set()
    assert parents("feedback/curated_examples") >= {"feedback/inference_events", "feedback/signals"}
    assert parents("monitoring/drift_report") >= {"feedback/inference_events", "feedback/quality",
                                                  "feedback/embeddings", "feedback/signals"}
    for key in ("datasets/examples", "training/sft_checkpoint", "monitoring/drift_report"):
        node = graph.get(dg.AssetKey.from_user_string(key))
        assert node.group_name == key.split("/")[0]
        assert node.description


def test_every_table_has_rows_that_satisfy_its_schema(lifecycle):
    lake = lifecycle.lake
    expected_rows = {
        "training/runs": 2,  # the first training, then the drift-triggered retraining
        "evaluation/results": 2 * 16,  # GSM8K only (the one dataset loaded here), its demo limit of 16
        "registry/versions": 2,  # the retraining adds curated feedback, so its weights (sha256) differ
        "feedback/inference_events": 3 * 64 + 3 + 3,  # simulated days, then 3 events from a file, 3 over HTTP
    }
    for spec in schemas.ALL_TABLES:
        if spec.path in expected_rows:
            assert len(lake.read(spec)) == expected_rows[spec.path], spec.path
        if lake.exists(spec):
            spec.model.validate(lake.read(spec))
    curated = lake.read(schemas.EXAMPLES, where={"dataset": "feedback"})
    assert len(lake.read(schemas.EXAMPLES)) == 7473 + 1319 + len(curated) and len(curated) > 0
    reports = lake.read(schemas.DRIFT_REPORTS)
    assert sorted(reports["day"].astype(str).unique()) == lifecycle.days


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
    real_day = (dt.date.fromisoformat(lifecycle.days[-1]) + dt.timedelta(days=1)).isoformat()
    assert sorted(events["day"].astype(str).unique()) == [*lifecycle.days, real_day]
    assert events["pii_redactions"].sum() > 0
    text = " ".join(events["prompt"]) + " ".join(events["response"])
    assert "@" not in text and "[EMAIL]" in text
    real = events[events["day"].astype(str) == real_day]
    assert sorted(real["source"].str.split(":").str[0].unique()) == ["file", "http"]
    real_text = " ".join(real["prompt"])
    for planted in ("4111 1111 1111 1111", "jane.doe@example.com", "203.0.113.7", "415-555-01"):
        assert planted not in real_text
    assert "INV-2024-000123" in real_text and "#20231140" in real_text  # look-alikes are left alone
    materialized = lifecycle.instance.get_materialized_partitions(dg.AssetKey(["feedback", "inference_events"]))
    assert materialized == {*lifecycle.days, real_day}


def test_drift_sensor_retrained_only_for_the_planted_day(lifecycle):
    days = lifecycle.days
    runs = lifecycle.lake.read(schemas.TRAINING_RUNS).sort_values("finished_at")
    assert runs["trigger_reason"].tolist()[0] == "manual"
    retrain = runs.iloc[-1]
    assert f"{days[-1]}" in retrain["trigger_reason"]
    assert retrain["data_window"] == f"{(dt.date.fromisoformat(days[-1]) - dt.timedelta(days=6))}..{days[-1]}"
    assert lifecycle.produced["retraining_runs"] == 1


def test_the_retraining_closed_the_loop_through_curated_feedback(lifecycle):
    from crucible.registry.lineage import feedback_node, model_node, path_between
    from crucible_assets.registry import MODEL_NAME

    lake = lifecycle.lake
    versions = lake.read(schemas.MODEL_VERSIONS).sort_values("version")
    assert versions["version"].tolist() == [1, 2] and versions["sha256"].nunique() == 2
    end = dt.date.fromisoformat(lifecycle.days[-1])
    path = path_between(lake.read(schemas.LINEAGE_EDGES), feedback_node(end - dt.timedelta(days=6), end),
                        model_node(MODEL_NAME, 2))
    assert path is not None and path[1].startswith("dataset:feedback@v") and path[2].startswith("run:")
    assert path_between(lake.read(schemas.LINEAGE_EDGES), feedback_node(end - dt.timedelta(days=6), end),
                        model_node(MODEL_NAME, 1)) is None
    pairs = lake.read(schemas.FEEDBACK_PAIRS)
    assert len(pairs) > 0 and set(pairs["source"]) <= {"edit", "thumbs"}


def test_sensors_skip_a_window_that_already_has_its_retraining(lifecycle):
    days = lifecycle.days
    instance, resources = lifecycle.instance, lifecycle.resources
    for name in ("drift_retraining_sensor", "quality_retraining_sensor", "curated_volume_retraining_sensor"):
        sensor = lifecycle.defs.get_sensor_def(name)
        # A sensor switched on later (no cursor, as in the UI after the demo) reads every day again.
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=lifecycle.defs,
                                                            resources=resources))
        assert not tick.run_requests, name
    drift = lifecycle.defs.get_sensor_def("drift_retraining_sensor").evaluate_tick(
        dg.build_sensor_context(instance=instance, definitions=lifecycle.defs, resources=resources))
    assert "exists already" in drift.skip_message and days[-1] in drift.skip_message


def test_one_run_per_day_backfill_is_exact_and_rerunning_it_changes_nothing(lifecycle):
    job = lifecycle.defs.resolve_job_def("daily_feedback_job")
    days = ["2026-11-10", "2026-11-11"]
    lake = lifecycle.lake

    def counts() -> dict:
        events = lake.read(schemas.INFERENCE_EVENTS, where={"day": [dt.date.fromisoformat(d) for d in days]})
        reports = lake.read(schemas.DRIFT_REPORTS, where={"day": [dt.date.fromisoformat(d) for d in days]})
        return {"events": events.groupby(events["day"].astype(str)).size().to_dict(),
                "reports": len(reports), "all_events": len(lake.read(schemas.INFERENCE_EVENTS))}

    for day in days:  # a backfill of these days runs one run per day (BackfillPolicy.multi_run(1))
        assert job.execute_in_process(instance=lifecycle.instance, partition_key=day).success
    first = counts()
    assert first["events"] == {d: 64 for d in days} and first["reports"] > 0
    records = {day: lifecycle.instance.fetch_materializations(dg.AssetRecordsFilter(
        dg.AssetKey(["feedback", "inference_events"]), asset_partitions=[day]), limit=1).records[0]
        for day in days}
    for day, record in records.items():  # each day's materialization carries its own figures
        assert record.asset_materialization.metadata["dagster/row_count"].value == 64, day
    for day in days:
        assert job.execute_in_process(instance=lifecycle.instance, partition_key=day).success
    assert counts() == first
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    ranged = job.execute_in_process(instance=lifecycle.instance, tags=tags, raise_on_error=False)
    assert not ranged.success and counts() == first


@pytest.mark.parametrize("table", ["feedback/inference_events", "monitoring/drift_reports"])
def test_no_rows_were_quarantined_on_the_happy_path(lifecycle, table):
    quarantined = lifecycle.lake.read(schemas.QUARANTINE)
    rows = quarantined[quarantined["table"] == table]
    # The demo's inbox file carries one record without a prompt, on purpose: it is the only one.
    expected = 1 if table == "feedback/inference_events" else 0
    assert len(rows) == expected, rows["reason"].tolist()
