"""Declarative automation: drift follows the same day's feedback, and a new model version is scored on every
benchmark once its training run is over. Conditions are evaluated by ``dg.evaluate_automation_conditions`` on the
whole asset graph and a real instance, whose runs record what the daemon would see."""

import datetime as dt
import threading
import time

import dagster as dg
import pytest

from crucible.evaluate.benchmarks import BENCHMARKS
from crucible_assets.automation import after_new_feedback, evaluate_new_versions
from crucible_assets.evaluation.assets import benchmark_results
from crucible_assets.feedback.assets import inference_events, signals
from crucible_assets.feedback.quality import embeddings, quality
from crucible_assets.monitoring.assets import baseline, drift_report
from crucible_assets.partitions import model_versions_partitions
from crucible_assets.training.assets import sft_checkpoint

# During 2026-11-03 (UTC): the latest daily partition is that day (daily partitions end today).
NOW = dt.datetime(2026, 11, 3, 12, tzinfo=dt.timezone.utc)
TODAY, YESTERDAY = "2026-11-03", "2026-11-02"

# The conditions the lead applies in the asset definitions (see docs/backfills_and_automation.md).
CONDITIONS = {
    signals.key: after_new_feedback(),
    quality.key: after_new_feedback(),
    embeddings.key: after_new_feedback(),
    drift_report.key: after_new_feedback(baseline.key),
    benchmark_results.key: evaluate_new_versions(),
}


def with_conditions(defs: dg.Definitions, conditions: dict) -> dg.Definitions:
    """``defs`` with ``conditions`` on their assets; an asset whose file already declares the same condition
    keeps it, one that declares another is an error (this test would no longer test what ships)."""
    assets = []
    for asset in defs.assets:
        wanted = conditions.get(asset.key)
        declared = asset.automation_conditions_by_key.get(asset.key) if isinstance(asset, dg.AssetsDefinition) else None
        if wanted is not None and declared is None:
            asset = asset.with_attributes(automation_condition=wanted)
        elif wanted is not None and declared != wanted:
            raise AssertionError(f"{asset.key.to_user_string()} declares {declared.get_label() or declared}; "
                                 f"this test expects {wanted.get_label()} from crucible_assets.automation")
        assets.append(asset)
    return dg.Definitions(assets=assets, asset_checks=defs.asset_checks, resources=defs.resources)


@pytest.fixture(scope="module")
def base_defs(tmp_path_factory, resources_for) -> dg.Definitions:
    from crucible_assets.definitions import build_defs

    return build_defs(resources_for(tmp_path_factory.mktemp("automation")))


@pytest.fixture(scope="module")
def crucible_defs(base_defs) -> dg.Definitions:
    """Crucible's definitions with the automation conditions applied (whether or not the asset files do yet)."""
    return with_conditions(base_defs, CONDITIONS)


def recorded_run(instance: dg.DagsterInstance, assets: list[dg.AssetsDefinition], partition_key: str | None = None,
                 wait: threading.Event | None = None) -> dg.ExecuteInProcessResult:
    """One run that materializes ``assets``' keys (with their partitions and deps) without their work: the
    instance records exactly what a real run records (planned materializations, run status, materializations),
    which is all a condition reads. ``wait`` holds the run STARTED until it is set."""
    def stand_in(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
        spec = next(iter(asset.specs)).replace_attributes(automation_condition=None)

        @dg.multi_asset(specs=[spec], name=spec.key.to_python_identifier())
        def _materialize() -> dg.MaterializeResult:
            if wait is not None:
                assert wait.wait(timeout=60), "the test never released the run"
            return dg.MaterializeResult(asset_key=spec.key)

        return _materialize

    result = dg.materialize([stand_in(asset) for asset in assets], partition_key=partition_key, instance=instance)
    assert result.success
    return result


class Ticks:
    """Successive evaluations of every condition, each continuing from the cursor of the one before, as the
    automation sensor's ticks do."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance,
                 evaluation_time: dt.datetime | None = NOW) -> None:
        self.defs, self.instance, self.cursor, self.evaluation_time = defs, instance, None, evaluation_time

    def tick(self) -> dict[str, list[str]]:
        """Requested partitions by asset key (user string), for the assets with any."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor,
                                                   evaluation_time=self.evaluation_time)
        self.cursor = result.cursor
        return {key.to_user_string(): sorted(result.get_requested_partitions(key)) for key in CONDITIONS
                if result.get_num_requested(key)}


def test_the_first_tick_requests_nothing_for_the_days_already_missing(crucible_defs):
    with dg.DagsterInstance.ephemeral() as instance:
        recorded_run(instance, [inference_events], TODAY)  # today's feedback, before automation is switched on
        ticks = Ticks(crucible_defs, instance)
        assert ticks.tick() == {}  # switching automation on must not backfill history
        assert ticks.tick() == {}


def test_a_day_of_new_feedback_brings_its_signals_checks_embeddings_and_drift_report_in_one_tick(crucible_defs):
    day = [TODAY]
    whole_day = {"feedback/signals": day, "feedback/quality": day, "feedback/embeddings": day,
                 "monitoring/drift_report": day}
    with dg.DagsterInstance.ephemeral() as instance:
        ticks = Ticks(crucible_defs, instance)
        assert ticks.tick() == {}
        recorded_run(instance, [inference_events], TODAY)
        # Same tick, same day: the drift report goes with the signals, quality and embeddings it reads, and it
        # does not wait for a baseline snapshot, which is missing (it takes its own).
        assert ticks.tick() == whole_day
        assert ticks.tick() == {}, "requested once, not on every tick"

        recorded_run(instance, [inference_events], TODAY)  # the day's traffic is written again
        assert ticks.tick() == whole_day


def test_past_days_and_the_schedules_own_runs_request_nothing(crucible_defs):
    with dg.DagsterInstance.ephemeral() as instance:
        ticks = Ticks(crucible_defs, instance)
        assert ticks.tick() == {}
        recorded_run(instance, [inference_events], YESTERDAY)
        assert ticks.tick() == {}, "older days are a backfill's business, not automation's"
        # The daily schedule's run writes the day's feedback and its drift report together: nothing is left to do.
        recorded_run(instance, [inference_events, signals, quality, embeddings, drift_report], TODAY)
        assert ticks.tick() == {}


def test_plain_eager_would_never_report_drift_before_a_baseline_exists(base_defs):
    """Why drift_report ignores monitoring/baseline: eager() waits for every dependency to exist."""
    if base_defs.resolve_assets_def(drift_report.key).automation_conditions_by_key.get(drift_report.key):
        pytest.skip("monitoring/drift_report declares its condition already: nothing to compare against")
    defs = with_conditions(base_defs, {**CONDITIONS, drift_report.key: dg.AutomationCondition.eager()})
    with dg.DagsterInstance.ephemeral() as instance:
        ticks = Ticks(defs, instance)
        assert ticks.tick() == {}
        recorded_run(instance, [inference_events], TODAY)
        assert "monitoring/drift_report" not in ticks.tick()


def test_a_new_version_is_scored_on_every_benchmark_once_its_training_run_is_over(crucible_defs):
    def partitions(version: str) -> list[str]:
        return sorted(str(dg.MultiPartitionKey({"benchmark": name, "model_version": version})) for name in BENCHMARKS)

    with dg.DagsterInstance.ephemeral() as instance:
        recorded_run(instance, [sft_checkpoint])
        instance.add_dynamic_partitions(model_versions_partitions.name, ["sft-old"])
        # At the real time: an evaluation "before" a dynamic partition was added does not see the partition.
        ticks = Ticks(crucible_defs, instance, evaluation_time=None)
        assert ticks.tick() == {}, "versions that predate the condition are left to a backfill"

        # A retraining run: its evaluation adds the version while the run (and so training/sft_checkpoint) is
        # still in progress; scoring it then would race the run's own writes to the same evaluation slices.
        release, failures = threading.Event(), []
        retraining = threading.Thread(target=lambda: _run_or_record(failures, instance, release))
        retraining.start()
        try:
            _wait_until_started(instance)
            instance.add_dynamic_partitions(model_versions_partitions.name, ["sft-new"])
            assert ticks.tick() == {}
            assert ticks.tick() == {}
        finally:
            release.set()
            retraining.join(timeout=60)
        assert not failures, failures

        assert ticks.tick() == {"evaluation/benchmark_results": partitions("sft-new")}
        assert ticks.tick() == {}


def _run_or_record(failures: list, instance: dg.DagsterInstance, release: threading.Event) -> None:
    try:
        recorded_run(instance, [sft_checkpoint], wait=release)
    except Exception as error:  # surfaced by the test thread, which asserts on it
        failures.append(repr(error))


def _wait_until_started(instance: dg.DagsterInstance, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            return
        time.sleep(0.05)
    raise AssertionError(f"the stand-in training run did not start within {timeout}s")
