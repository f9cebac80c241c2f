"""monitoring/baseline and monitoring/drift_report through real materializations: each day's run carries its
own figures and plots, a multi-day range is refused, and a baseline snapshot is what the report uses."""

import base64
import datetime as dt
import re
from pathlib import Path

import dagster as dg
import pytest

from crucible_assets.monitoring.assets import baseline, drift_report
from resources.monitoring import DriftPolicyResource
from schemas import BASELINES, DRIFT_REPORTS
from tests.monitoring.traffic import write_day, write_examples

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.fixture
def served(resources):
    store = resources["lake"].lake()
    write_examples(store)
    write_day(store, dt.date.fromisoformat(DAYS[0]))
    write_day(store, dt.date.fromisoformat(DAYS[1]), long_share=0.7, slow=200)
    return store


def materialization(instance, key: str) -> dg.AssetMaterialization:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(drift_report.key, asset_partitions=[key]), limit=1).records
    return records[0].asset_materialization


def test_two_days_materialized_separately_carry_their_own_figures(served, resources, instance):
    for key in DAYS[:2]:
        assert dg.materialize([drift_report], partition_key=key, instance=instance, resources=resources).success
    stored = served.read(DRIFT_REPORTS)
    for key, drifted in zip(DAYS[:2], (False, True), strict=True):
        metadata = materialization(instance, key).metadata
        rows = stored.loc[stored["day"].astype(str) == key].set_index(["detector", "feature"])
        assert metadata["day"].value == key and metadata["drifted"].value is drifted
        assert "detectors drifted" in metadata["verdict"].value  # the policy's reading, as the sensor applies it
        assert metadata["dagster/row_count"].value == len(rows)
        # The first report took the snapshot from the training prompts alone (no earlier traffic).
        assert "psi/latency_ms" not in metadata and "latency_ms: no baseline" in metadata["detectors"].value
        for name in ("ks/prompt_length_words", "psi/prompt_length_words"):
            detector, feature = name.split("/")
            assert metadata[name].value == pytest.approx(rows.loc[(detector, feature), "statistic"], rel=1e-3)  # shown to 4 digits
        assert ("| prompt_length_words | ks |" in metadata["detectors"].value
                and ("**DRIFT**" in metadata["detectors"].value) is drifted)
    first, second = (materialization(instance, key).metadata for key in DAYS[:2])
    assert first["ks/prompt_length_words"].value != second["ks/prompt_length_words"].value
    assert first["distribution_plots"].value != second["distribution_plots"].value


def test_plots_are_inline_pngs_and_files_under_the_artifacts(served, resources, instance):
    assert dg.materialize([drift_report], partition_key=DAYS[1], instance=instance, resources=resources).success
    metadata = materialization(instance, DAYS[1]).metadata
    images = re.findall(r"!\[(\w+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", metadata["distribution_plots"].value)
    # The lazily taken snapshot holds the day before: every feature of the events is compared.
    assert {name for name, _ in images} == {"prompt_length_words", "response_length_words", "latency_ms",
                                            "deployment"}
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for _, data in images)
    folder = Path(metadata["plots_folder"].value)
    assert folder == Path(resources["lake"].artifacts_root, "monitoring", "drift", DAYS[1])
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"{name}.png" for name, _ in images)


def test_a_range_is_refused_with_the_backfill_to_launch(served, resources, instance):
    result = dg.materialize([drift_report], instance=instance, resources=resources, raise_on_error=False,
                            tags={"dagster/asset_partition_range_start": DAYS[0],
                                  "dagster/asset_partition_range_end": DAYS[1]})
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "handles one day per run, but this run asks for 2 days" in message
    assert "launch a backfill: one run per day" in message
    assert not served.exists(DRIFT_REPORTS)
    assert drift_report.backfill_policy == dg.BackfillPolicy.multi_run(1)


def test_the_first_report_takes_a_baseline_from_the_days_before_it(served, resources, instance):
    assert dg.materialize([drift_report], partition_key=DAYS[1], instance=instance, resources=resources).success
    snapshots = served.read(BASELINES)
    assert snapshots["trigger"].unique().tolist() == [f"first drift report ({DAYS[1]})"]
    latency = snapshots.loc[snapshots["feature"] == "latency_ms"].iloc[0]
    assert latency["num_values"] == 80 and latency["source"].endswith(f"{DAYS[0]}..{DAYS[0]}")


def test_a_refreshed_baseline_is_the_one_the_next_report_uses(served, resources, instance):
    config = {"ops": {"monitoring__baseline": {"config": {"trigger": "manual", "reference_model_version": 1}}}}
    result = dg.materialize([baseline], instance=instance, resources=resources, run_config=config)
    assert result.success
    snapshot_id = result.asset_materializations_for_node("monitoring__baseline")[0].metadata["snapshot_id"].value
    assert dg.materialize([drift_report], partition_key=DAYS[1], instance=instance, resources=resources).success
    assert materialization(instance, DAYS[1]).metadata["baseline"].value == snapshot_id
    # Every row of the report points at a feature of that snapshot.
    assert set(served.read(DRIFT_REPORTS)["baseline_id"].str.split("/").str[0]) == {snapshot_id}


def test_no_traffic_on_the_day_fails_with_what_to_do(served, resources, instance):
    result = dg.materialize([drift_report], partition_key=DAYS[2], instance=instance, resources=resources,
                            raise_on_error=False)
    message = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert f"no inference events on {DAYS[2]}" in message and "feedback/inference_events" in message


@pytest.mark.slow
def test_embedding_drift_with_the_real_minilm(served, resources, instance):
    resources = {**resources, "drift_policy": DriftPolicyResource(baseline_dataset="prompts", embedding_sample=96)}
    for key in DAYS[:2]:
        assert dg.materialize([drift_report], partition_key=key, instance=instance, resources=resources).success
    mmd = served.read(DRIFT_REPORTS, where={"detector": "mmd"}).set_index(served.read(
        DRIFT_REPORTS, where={"detector": "mmd"})["day"].astype(str))
    assert not mmd.loc[DAYS[0], "drifted"] and mmd.loc[DAYS[1], "drifted"]
    assert "prompt_embedding" in materialization(instance, DAYS[1]).metadata["distribution_plots"].value
