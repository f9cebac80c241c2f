"""Each retraining sensor alone with build_sensor_context + evaluate_tick, every rule included, and at most one
retraining per window across triggers and across runs started elsewhere (the demo, the UI)."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from crucible.quarantine import store_validated
from crucible.registry.audit import record
from crucible_assets.definitions import build_defs
from crucible_assets.monitoring.assets import QUALITY_KEY, SIGNALS_KEY, drift_report
from resources.monitoring import DriftPolicyResource
from schemas import BASELINES, DRIFT_REPORTS
from tests.monitoring.traffic import write_day, write_examples, write_quality, write_signals

DAY = dt.date(2026, 11, 10)
WINDOW = "2026-11-04..2026-11-10"


def drift_rows(day: dt.date, *drifted: bool) -> pd.DataFrame:
    detectors = [("ks", "prompt_length_words"), ("psi", "prompt_length_words"), ("ks", "latency_ms")]
    return pd.DataFrame([{"day": day, "detector": d, "feature": f, "statistic": 0.9, "p_value": None if d == "psi"
                          else 1e-9, "threshold": 0.25 if d == "psi" else 0.001, "drifted": flag,
                          "baseline_id": "b/x", "num_current": 80, "num_baseline": 300, "explanation": "why"}
                         for (d, f), flag in zip(detectors, drifted, strict=False)])


def materialized(instance: dg.DagsterInstance, key: dg.AssetKey, day: dt.date) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=day.isoformat()))


def tick(defs, resources, instance, sensor: str, cursor: str | None = None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=resources)
    return defs.get_sensor_def(sensor).evaluate_tick(context)


def launch_like_the_demo(instance: dg.DagsterInstance, tags: dict) -> str:
    """A real run on the instance carrying a retraining request's tags, as the demo's in-process runs do."""
    @dg.op
    def noop() -> None:
        return None

    @dg.job(name="demo_retraining")
    def demo_retraining():
        noop()

    return demo_retraining.execute_in_process(instance=instance, tags=tags).run_id


@pytest.fixture
def setup(resources, instance):
    resources = {**resources, "drift_policy": DriftPolicyResource(
        baseline_dataset="prompts", rule="min", min_drifted=2, min_pass_rate=0.7, min_quality_events=20,
        min_curated=30, retrain_window_days=7)}
    return build_defs(resources), resources, instance, resources["lake"].lake()


def report_day(store, instance, day: dt.date, *drifted: bool) -> None:
    store_validated(store, DRIFT_REPORTS, drift_rows(day, *drifted), source="test", replace_where={"day": day})
    materialized(instance, drift_report.key, day)


def test_drift_sensor_requests_one_retraining_with_the_contract_run_config(setup):
    defs, resources, instance, store = setup
    report_day(store, instance, DAY, True, True, False)
    result = tick(defs, resources, instance, "drift_retraining_sensor")
    [request] = result.run_requests
    assert request.run_key == "retrain-2026-11-04-2026-11-10"
    assert request.tags["crucible/retrain_window"] == WINDOW and request.tags["crucible/trigger"] == "drift"
    assert request.tags["crucible/drift_day"] == DAY.isoformat()
    ops = request.run_config["ops"]
    assert ops["feedback__curated_examples"]["config"] == {"window_start": "2026-11-04", "window_end": "2026-11-10"}
    training = ops["training__sft_checkpoint"]["config"]
    assert training["data_window_start"] == "2026-11-04" and training["data_window_end"] == "2026-11-10"
    assert training["trigger_reason"].startswith(f"drift on {DAY}: 2 of 3 detectors drifted")
    assert "psi prompt_length_words 0.900 > 0.25" in training["trigger_reason"]
    # The request's config is valid for retrain_job as defined (raises DagsterInvalidConfigError otherwise).
    dg.validate_run_config(defs.resolve_job_def("retrain_job"), request.run_config)
    caught_up = tick(defs, resources, instance, "drift_retraining_sensor", result.cursor)
    assert not caught_up.run_requests and caught_up.skip_message == "no new drift reports"


@pytest.mark.parametrize("rule,min_drifted,flags,requested", [
    ("min", 2, (True, False, False), False),
    ("any", 1, (True, False, False), True),
    ("all", 1, (True, True, False), False),
    ("all", 1, (True, True, True), True),
])
def test_drift_sensor_follows_the_policy_rule(setup, rule, min_drifted, flags, requested):
    defs, resources, instance, store = setup
    resources = {**resources, "drift_policy": DriftPolicyResource(rule=rule, min_drifted=min_drifted)}
    report_day(store, instance, DAY, *flags)
    result = tick(defs, resources, instance, "drift_retraining_sensor")
    assert bool(result.run_requests) is requested
    if not requested:
        assert result.skip_message.startswith(f"no drift on {DAY}: {sum(flags)} of 3 detectors drifted")


def test_drift_sensor_reads_every_new_day_in_order(setup):
    defs, resources, instance, store = setup
    quiet, drifted = DAY - dt.timedelta(days=1), DAY
    report_day(store, instance, quiet, False, False, False)
    report_day(store, instance, drifted, True, True, True)
    result = tick(defs, resources, instance, "drift_retraining_sensor")
    assert [r.tags["crucible/drift_day"] for r in result.run_requests] == [DAY.isoformat()]


def quality_day(store, instance, day: dt.date, pass_share: float, count: int = 40) -> pd.DataFrame:
    events = write_day(store, day, count=count)
    write_quality(store, events, pass_share, seed=day.day)
    materialized(instance, QUALITY_KEY, day)
    return events


def test_quality_sensor_requests_when_the_window_pass_rate_is_low(setup):
    defs, resources, instance, store = setup
    quality_day(store, instance, DAY, pass_share=0.3)
    result = tick(defs, resources, instance, "quality_retraining_sensor")
    [request] = result.run_requests
    assert request.tags["crucible/trigger"] == "quality" and request.run_key == "retrain-2026-11-04-2026-11-10"
    assert "low quality over 2026-11-04..2026-11-10: pass rate" in \
        request.run_config["ops"]["training__sft_checkpoint"]["config"]["trigger_reason"]


def test_quality_sensor_skips_a_good_window_and_a_window_too_small_to_judge(setup):
    defs, resources, instance, store = setup
    quality_day(store, instance, DAY, pass_share=1.0)
    good = tick(defs, resources, instance, "quality_retraining_sensor")
    assert not good.run_requests and "pass rate 100.0% of 40 answers >= 70%" in good.skip_message
    later = DAY + dt.timedelta(days=30)
    quality_day(store, instance, later, pass_share=0.0, count=10)
    small = tick(defs, resources, instance, "quality_retraining_sensor", good.cursor)
    assert not small.run_requests and "only 10 checked answers, 20 needed" in small.skip_message


def test_curated_volume_sensor_counts_vouched_examples_in_the_window(setup):
    defs, resources, instance, store = setup
    events = quality_day(store, instance, DAY - dt.timedelta(days=1), pass_share=1.0, count=20)
    write_signals(store, events, ["thumbs_up", "edit"])
    materialized(instance, SIGNALS_KEY, DAY - dt.timedelta(days=1))
    few = tick(defs, resources, instance, "curated_volume_retraining_sensor")
    assert not few.run_requests and "20 curatable examples < 30" in few.skip_message
    events = quality_day(store, instance, DAY, pass_share=1.0, count=20)
    write_signals(store, events, ["copy", "thumbs_down"])
    materialized(instance, SIGNALS_KEY, DAY)
    enough = tick(defs, resources, instance, "curated_volume_retraining_sensor", few.cursor)
    [request] = enough.run_requests
    assert request.tags["crucible/trigger"] == "curated_volume" and request.tags["crucible/retrain_window"] == WINDOW
    assert "30 curatable examples >= 30" in \
        request.run_config["ops"]["training__sft_checkpoint"]["config"]["trigger_reason"]


def test_one_retraining_per_window_across_triggers(setup):
    defs, resources, instance, store = setup
    report_day(store, instance, DAY, True, True, True)
    quality_day(store, instance, DAY, pass_share=0.2)
    [request] = tick(defs, resources, instance, "drift_retraining_sensor").run_requests
    run_id = launch_like_the_demo(instance, request.tags)  # what the daemon (or the demo) then starts
    quality = tick(defs, resources, instance, "quality_retraining_sensor")
    assert not quality.run_requests
    assert f"{WINDOW}: retraining run {run_id} exists already, quality does not request another" in \
        quality.skip_message


def test_a_window_the_demo_already_retrained_is_skipped_when_the_sensor_is_switched_on(setup):
    defs, resources, instance, store = setup
    run_id = launch_like_the_demo(instance, {"crucible/retrain_window": WINDOW, "crucible/trigger": "drift"})
    report_day(store, instance, DAY, True, True, True)
    result = tick(defs, resources, instance, "drift_retraining_sensor")  # a fresh cursor: reads every report
    assert not result.run_requests and f"retraining run {run_id} exists already" in result.skip_message
    other_window = DAY + dt.timedelta(days=1)
    report_day(store, instance, other_window, True, True, True)
    assert len(tick(defs, resources, instance, "drift_retraining_sensor", result.cursor).run_requests) == 1


def test_a_promotion_to_production_takes_a_baseline_of_the_replaced_versions_traffic(setup):
    defs, resources, instance, store = setup
    write_examples(store)
    write_day(store, DAY - dt.timedelta(days=1), model_version=1, count=30)
    write_day(store, DAY, model_version=2, count=50)
    event = record(store, "alice", "promote", "m", 2, {"from": "staging", "to": "production", "archived": [1]})
    result = tick(defs, resources, instance, "baseline_promotion_sensor")
    [request] = result.run_requests
    assert request.job_name == "refresh_baseline_job" and request.run_key == f"promote-{event.event_id}"
    config = request.run_config["ops"]["monitoring__baseline"]["config"]
    assert config == {"trigger": f"promotion of m v2 ({event.event_id})", "reference_model_version": 1}
    run = defs.resolve_job_def("refresh_baseline_job").execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags)
    assert run.success
    latency = store.read(BASELINES, where={"feature": "latency_ms"}).iloc[0]
    assert latency["num_values"] == 30 and latency["trigger"] == config["trigger"]
    assert not tick(defs, resources, instance, "baseline_promotion_sensor", result.cursor).run_requests
