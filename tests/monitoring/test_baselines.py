"""Baseline snapshots in a real lake: what each feature is taken from, the Delta versions they are pinned
to, and that taking one again on unchanged tables stores nothing new."""

import datetime as dt
import json

import pytest

from crucible.monitoring.baselines import latest_snapshot, take_snapshot
from crucible.monitoring.report import report_day
from schemas import BASELINES, EXAMPLES, INFERENCE_EVENTS, QUALITY, SIGNALS
from tests.monitoring.traffic import write_day, write_examples, write_quality, write_signals

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)


def test_prompt_features_come_from_training_prompts_and_the_rest_from_served_traffic(lake):
    write_examples(lake, count=300)
    events = write_day(lake, D1)
    write_quality(lake, events, pass_share=0.9)
    write_signals(lake, events, ["thumbs_up", "thumbs_down"])
    snapshot, stored = take_snapshot(lake, "prompts", embedding_sample=100)
    features = snapshot.features
    assert features["prompt_length_words"].size == 300 and features["prompt_embedding"].size == 100
    versions = {spec.path: lake.version(spec) for spec in (EXAMPLES, INFERENCE_EVENTS, QUALITY, SIGNALS)}
    assert snapshot.table_versions == versions
    assert features["prompt_length_words"].source == f"datasets/examples@v{versions[EXAMPLES.path]}: prompts/train"
    assert features["latency_ms"].source == (f"feedback/inference_events@v{versions[INFERENCE_EVENTS.path]}: "
                                             f"2026-11-01..2026-11-01")
    assert features["pass_rate"].values[1] == 80 and features["thumbs_down_rate"].values == (40, 80)
    rows = lake.read(BASELINES)
    assert stored.accepted == len(rows) == len(features)
    assert {json.loads(v) == snapshot.table_versions for v in rows["table_versions"]} == {True}


def test_same_tables_same_snapshot_new_tables_new_snapshot(lake):
    write_examples(lake)
    write_day(lake, D1)
    first, _ = take_snapshot(lake, "prompts")
    again, _ = take_snapshot(lake, "prompts", trigger="refresh")
    assert again.snapshot_id == first.snapshot_id and len(lake.read(BASELINES)) == len(first.features)
    write_day(lake, D2)
    newer, _ = take_snapshot(lake, "prompts")
    assert newer.snapshot_id != first.snapshot_id
    assert latest_snapshot(lake).snapshot_id == newer.snapshot_id
    # The pinned version still reads what the snapshot saw, whatever came after.
    seen = lake.read(INFERENCE_EVENTS, version=first.table_versions[INFERENCE_EVENTS.path])
    assert sorted(seen["day"].astype(str).unique()) == [str(D1)]


def test_traffic_of_one_model_version_before_a_day(lake):
    write_examples(lake)
    write_day(lake, D1, model_version=1, count=30)
    write_day(lake, D2, model_version=2, count=40)
    write_day(lake, D3, model_version=2, count=50)
    only_v2, _ = take_snapshot(lake, "prompts", reference_version=2)
    assert only_v2.features["latency_ms"].size == 90
    before_d3, _ = take_snapshot(lake, "prompts", before=D3)
    assert before_d3.features["latency_ms"].size == 70
    last_day, _ = take_snapshot(lake, "prompts", traffic_days=1)
    assert last_day.features["latency_ms"].size == 50


def test_without_training_prompts_the_prompt_features_come_from_traffic(lake):
    write_day(lake, D1, count=30)
    snapshot, _ = take_snapshot(lake, "absent")
    assert snapshot.features["prompt_length_words"].source.startswith(INFERENCE_EVENTS.path)
    assert EXAMPLES.path not in snapshot.table_versions


def test_nothing_to_snapshot_says_what_to_load(lake):
    with pytest.raises(ValueError, match="dataset 'gsm8k' has no 'train' split .* run dataset_ingest_job"):
        take_snapshot(lake, "gsm8k")


def test_a_day_report_flags_the_planted_drift_only(lake):
    write_examples(lake)
    write_day(lake, D1, count=400)  # a baseline several days large, as in production: less PSI noise
    snapshot, _ = take_snapshot(lake, "prompts")
    write_day(lake, D2, seed=1)
    write_day(lake, D3, long_share=0.6, slow=150)
    quiet = report_day(lake, D2, snapshot, plots=False)
    assert not quiet.drifted() and not quiet.plots
    drifted = report_day(lake, D3, snapshot)
    assert {(r.feature, r.detector) for r in drifted.drifted()} == {
        ("prompt_length_words", "ks"), ("prompt_length_words", "psi"), ("latency_ms", "ks"), ("latency_ms", "psi")}
    assert set(drifted.plots) == {"prompt_length_words", "response_length_words", "latency_ms", "deployment"}
    assert all(png.startswith(b"\x89PNG") for png in drifted.plots.values())
    assert drifted.rows()[0]["baseline_id"].startswith(snapshot.snapshot_id + "/")
