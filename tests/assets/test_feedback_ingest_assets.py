"""The feedback inbox sensor, the ingestion job and the daily feedback assets, on a real instance and lake."""

import datetime as dt
import json

import dagster as dg
import pytest

from crucible_assets.feedback.assets import inference_events, signals
from crucible_assets.feedback.ingest import FILE_TAG, feedback_inbox_sensor, feedback_ingest_job
from resources.feedback import FeedbackResource
from resources.lake import LakeResource
from schemas import INFERENCE_EVENTS, SIGNALS


def event(n: int, day: str = "2026-11-02", **fields) -> dict:
    return {"deployment": "prod", "model_version": 1, "prompt": f"question {n}", "response": f"answer {n}",
            "timestamp": f"{day}T09:{n % 60:02d}:00Z", **fields}


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("CRUCIBLE_PII_KEY", "asset-test-key")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    resources = {"lake": LakeResource(root=str(tmp_path / "lake"), artifacts_root=str(tmp_path / "artifacts")),
                 "feedback": FeedbackResource(inbox=str(inbox))}
    with dg.DagsterInstance.ephemeral() as instance:
        yield {"inbox": inbox, "resources": resources, "instance": instance, "lake": resources["lake"].lake()}


def tick(setup, cursor=None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=setup["instance"], cursor=cursor,
                                      resources={"feedback": setup["resources"]["feedback"]})
    return feedback_inbox_sensor(context)


def test_sensor_requests_one_run_per_file_content_and_reports_what_it_skips(setup, caplog):
    inbox = setup["inbox"]
    write_jsonl(inbox / "a.jsonl", [event(0)])
    write_jsonl(inbox / "copy-of-a.jsonl", [event(0)])
    write_jsonl(inbox / "b.jsonl", [event(1)])
    (inbox / "notes.txt").write_text("not feedback")
    (inbox / "empty.csv").write_text("")
    (inbox / "folder").mkdir()
    (inbox / "partial.jsonl.part").write_text("{")
    first = tick(setup)
    keys = {r.tags[FILE_TAG]: r.run_key for r in first.run_requests}
    assert set(keys) == {"a.jsonl", "copy-of-a.jsonl", "b.jsonl"}
    assert keys["a.jsonl"] == keys["copy-of-a.jsonl"] != keys["b.jsonl"]  # same content, same run key
    config = next(r for r in first.run_requests if r.tags[FILE_TAG] == "b.jsonl").run_config
    assert config["ops"]["ingest_feedback_file"]["config"]["path"] == str(inbox / "b.jsonl")
    skipped = first.run_requests[0].tags["crucible/feedback_inbox_skipped"]
    assert "'notes.txt' skipped: unsupported type .txt" in skipped and "'empty.csv' skipped: the file is empty" in \
        skipped and "'folder' skipped: a folder" in skipped and "partial" not in skipped

    second = tick(setup, first.cursor)
    assert not second.run_requests and "no new feedback files" in second.skip_reason.skip_message
    write_jsonl(inbox / "b.jsonl", [event(1), event(2)])  # new content under the same name
    third = tick(setup, second.cursor)
    assert [r.tags[FILE_TAG] for r in third.run_requests] == ["b.jsonl"] and third.run_requests[0].run_key != keys[
        "b.jsonl"]


def test_the_job_ingests_a_file_and_records_each_day_it_touched(setup):
    path = setup["inbox"] / "batch.jsonl"
    write_jsonl(path, [event(0, user="alice"), event(1, day="2026-11-03"), event(2, latency_ms=-1),
                       event(3, day="2026-11-03", signals=[{"signal": "thumbs_up"}])])
    [request] = tick(setup).run_requests
    job = dg.Definitions(jobs=[feedback_ingest_job], resources=setup["resources"]).resolve_job_def(
        feedback_ingest_job.name)
    result = job.execute_in_process(run_config=request.run_config, instance=setup["instance"])
    assert result.success
    materialized = {m.partition: m.metadata["accepted"].value for m in result.asset_materializations_for_node(
        "ingest_feedback_file")}
    assert materialized == {"2026-11-02": 1, "2026-11-03": 2}
    stored = setup["lake"].read(INFERENCE_EVENTS)
    assert len(stored) == 3 and stored["user_id"].notna().sum() == 1 and set(stored["source"]) == {"file:batch.jsonl"}
    assert len(setup["lake"].read(SIGNALS)) == 1
    again = job.execute_in_process(run_config=request.run_config, instance=setup["instance"])
    assert again.success and len(setup["lake"].read(INFERENCE_EVENTS)) == 3  # the same file twice adds nothing


def test_the_job_fails_clearly_when_user_ids_arrive_without_a_key(setup, monkeypatch):
    monkeypatch.delenv("CRUCIBLE_PII_KEY")
    write_jsonl(setup["inbox"] / "users.jsonl", [event(0, user="alice")])
    [request] = tick(setup).run_requests
    job = dg.Definitions(jobs=[feedback_ingest_job], resources=setup["resources"]).resolve_job_def(
        feedback_ingest_job.name)
    result = job.execute_in_process(run_config=request.run_config, instance=setup["instance"], raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("ingest_feedback_file").error.message
    assert "users.jsonl line 1 carries a user id" in message and "'CRUCIBLE_PII_KEY'" in message
    assert not setup["lake"].exists(INFERENCE_EVENTS)


def test_daily_assets_report_each_days_own_ingested_events_without_simulating(setup):
    from crucible.feedback.ingest import ingest_events
    from crucible.feedback.pii import Scrubber

    lake = setup["lake"]
    ingest_events(lake, [event(n, deployment="canary" if n % 2 else "prod") for n in range(5)]
                  + [event(n, day="2026-11-03", signals=[{"signal": "copy"}]) for n in range(3)],
                  source="http", scrubber=Scrubber(), user_key=None)
    figures = {}
    for day in ("2026-11-02", "2026-11-03"):
        # No registered model exists here: reporting a day with real events must not need one.
        result = dg.materialize([inference_events, signals], partition_key=day, resources=setup["resources"],
                                instance=setup["instance"])
        assert result.success
        metadata = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
        events_meta, signals_meta = metadata[inference_events.key], metadata[signals.key]
        figures[day] = (events_meta["mode"].value, events_meta["dagster/row_count"].value,
                        events_meta["per_deployment"].value, signals_meta["dagster/row_count"].value)
    assert figures == {"2026-11-02": ("ingested", 5, {"canary": 2, "prod": 3}, 0),
                       "2026-11-03": ("ingested", 3, {"prod": 3}, 3)}


def test_a_multi_day_range_is_refused_before_anything_runs(setup):
    with pytest.raises(dg.Failure, match="handles one day per run.*launch a backfill"):
        dg.materialize([inference_events], resources=setup["resources"], instance=setup["instance"],
                       tags={"dagster/asset_partition_range_start": "2026-11-02",
                             "dagster/asset_partition_range_end": "2026-11-03"})
    assert not setup["lake"].exists(INFERENCE_EVENTS)


@pytest.mark.slow  # builds and serves a tiny model
def test_a_day_without_real_events_is_simulated_through_ingestion_with_signals(setup, tmp_path):
    import pandas as pd

    from crucible.feedback.ingest import day_summary, ingest_events
    from crucible.feedback.pii import Scrubber
    from crucible.quarantine import store_validated
    from crucible_assets.registry import MODEL_NAME
    from schemas import EXAMPLES
    from tests.deploy.tiny_model import make_tiny_checkpoint, register_tiny

    lake = setup["lake"]
    register_tiny(lake, make_tiny_checkpoint(tmp_path / "ckpt"), model=MODEL_NAME)
    store_validated(lake, EXAMPLES, pd.DataFrame([
        {"dataset": "gsm8k", "split": "test", "example_id": str(i), "input": f"What is {i} + {i}? Mail a@b.example.com",
         "target": f"#### {2 * i}", "messages": "[]", "metadata": "{}", "source": "test"} for i in range(20)]),
        source="test")
    config = {"ops": {"feedback__inference_events": {"config": {"events_per_day": 12, "max_new_tokens": 4,
                                                                "pii_share": 0.5}}}}

    def run() -> dict:
        result = dg.materialize([inference_events], partition_key="2026-11-05", resources=setup["resources"],
                                instance=setup["instance"], run_config=config)
        assert result.success
        return {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}

    first = run()
    assert (first["mode"], first["dagster/row_count"], first["real_events"]) == ("simulated", 12, 0)
    stored = lake.read(INFERENCE_EVENTS)
    assert set(stored["source"]) == {"simulation"} and not stored["prompt"].str.contains("@").any()
    signals_before = lake.read(SIGNALS)
    assert first["signals"] == len(signals_before) > 0 and set(signals_before["source"]) == {"simulation"}
    second = run()  # a re-run replaces the simulated day: same rows, same signals, nothing doubled
    assert second["dagster/row_count"] == 12 and len(lake.read(SIGNALS)) == len(signals_before)
    assert sorted(lake.read(INFERENCE_EVENTS)["event_id"]) == sorted(stored["event_id"])
    ingest_events(lake, [event(0, day="2026-11-05")], source="http", scrubber=Scrubber(), user_key=None)
    third = run()  # real traffic arrived: the day is reported, not simulated again
    assert (third["mode"], third["real_events"], third["dagster/row_count"]) == ("ingested", 1, 13)
    assert day_summary(lake, dt.date(2026, 11, 5)).per_source == {"http": 1, "simulation": 12}
