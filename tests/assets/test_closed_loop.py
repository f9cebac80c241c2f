"""The closed loop on a temporary lake and a real Dagster instance: feedback ingested through the API is
curated, a retraining on its window trains on the recipe's data plus the curated examples (a new examples-table
version), registers a model with a different sha256, and lineage reads window -> curated -> run -> version."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

import schemas
from crucible.feedback.curation import is_training_target
from crucible.registry.lineage import feedback_node, model_node, path_between
from crucible.registry.registry import lineage_edges
from crucible_assets.registry import MODEL_NAME

DAYS = ["2026-11-01", "2026-11-02"]
EVAL = {"evaluation__eval_results": {"config": {"benchmarks": ["gsm8k"], "limit": 4, "max_new_tokens": 8}}}


def retraining_config(start: str, end: str) -> dict:
    """The run config a retraining sensor builds (see the feedback contract)."""
    return {"ops": {
        "feedback__curated_examples": {"config": {"window_start": start, "window_end": end, "active_count": 2}},
        "training__sft_checkpoint": {"config": {"trigger_reason": f"drift on {end}", "data_window_start": start,
                                                "data_window_end": end}},
        **EVAL,
    }}


def feedback_records(lake, day: str) -> list[dict]:
    """A day of answered GSM8K questions: a quarter edited by users (the edit is the reference answer), a
    quarter liked, a quarter disliked, a quarter without signals (for active learning and diversity)."""
    tests = lake.read(schemas.EXAMPLES, where={"dataset": "gsm8k", "split": "test"}).sort_values("example_id")
    offset = 0 if day == DAYS[0] else 12
    records = []
    for i, row in enumerate(tests.iloc[offset:offset + 12].itertuples()):
        stamp = f"{day}T{10 + i // 6:02d}:{i % 6 * 7:02d}:00Z"
        signals = [[{"signal": "edit", "timestamp": stamp, "edited_text": row.target}],
                   [{"signal": "thumbs_up", "timestamp": stamp}], [{"signal": "thumbs_down", "timestamp": stamp}],
                   []][i % 4]
        records.append({"deployment": "demo", "model_version": 1, "model_name": MODEL_NAME, "prompt": row.input,
                        "response": f"The answer is {i * 7}.", "timestamp": stamp, "user": f"user-{i % 4}",
                        "latency_ms": 12.0, "prompt_tokens": 40, "response_tokens": 6,
                        **({"signals": signals} if signals else {})})
    return records


@pytest.fixture(scope="module")
def loop(tmp_path_factory, resources_for):
    from crucible.feedback.embeddings import offline_minilm_path
    from crucible.feedback.ingest import ingest_events
    from crucible.feedback.pii import Scrubber
    from crucible_assets.definitions import build_defs
    from crucible_assets.feedback.quality import quality
    from crucible_assets.partitions import datasets_partitions
    from resources.embedder import EmbedderResource

    root = tmp_path_factory.mktemp("closed_loop")
    resources = {**resources_for(root), "embedder": EmbedderResource(model=offline_minilm_path())}
    defs = build_defs(resources)
    lake = resources["lake"].lake()
    retrain = defs.resolve_job_def("retrain_job")
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, ["gsm8k"])
        assert defs.resolve_job_def("dataset_ingest_job").execute_in_process(instance=instance,
                                                                             partition_key="gsm8k").success
        manual = retrain.execute_in_process(instance=instance, run_config={"ops": EVAL})
        assert manual.success
        for day in DAYS:
            ingested = ingest_events(lake, feedback_records(lake, day), source=f"test {day}", scrubber=Scrubber(),
                                     user_key=b"k" * 32)
            assert ingested.accepted == 12 and ingested.signals == 9
            assert dg.materialize([quality], partition_key=day, resources=resources, instance=instance).success
        windowed = retrain.execute_in_process(instance=instance, run_config=retraining_config(*DAYS))
        assert windowed.success
        yield {"lake": lake, "manual": manual, "windowed": windowed, "defs": defs, "instance": instance,
               "resources": resources}


def materialization(result: dg.ExecuteInProcessResult, key: str) -> dict:
    [event] = result.asset_materializations_for_node(key.replace("/", "__"))
    return {name: value.value for name, value in event.metadata.items()}


@pytest.mark.slow
def test_a_window_retraining_trains_on_recipe_data_plus_its_curated_examples(loop):
    lake = loop["lake"]
    curated = lake.read(schemas.CURATED)
    targets = curated[is_training_target(curated)]
    assert set(curated["strategy"]) == {"user_edit", "high_quality", "hard_example", "active_learning", "diverse"}
    assert (curated["strategy"] == "active_learning").sum() == 2 and len(targets) >= 8
    assert set(curated[curated["strategy"] == "user_edit"]["response"]) <= set(
        lake.read(schemas.EXAMPLES, where={"dataset": "gsm8k", "split": "test"})["target"])
    feedback = lake.read(schemas.EXAMPLES, where={"dataset": "feedback", "split": "train"})
    assert set(feedback["example_id"]) == set(targets["example_id"])
    assert set(feedback["source"]) == {feedback_node(*map(dt.date.fromisoformat, DAYS))}

    manual = materialization(loop["manual"], "training/sft_checkpoint")
    windowed = materialization(loop["windowed"], "training/sft_checkpoint")
    assert manual["feedback_examples"] == 0 and manual["train_examples"] + manual["eval_examples"] == 64
    assert windowed["feedback_examples"] == len(targets)
    assert windowed["train_examples"] + windowed["eval_examples"] == 64 + len(targets)
    assert windowed["dataset_table_version"] > manual["dataset_table_version"]  # a new training-table version
    runs = lake.read(schemas.TRAINING_RUNS).sort_values("finished_at")
    assert runs["data_window"].tolist() == ["", f"{DAYS[0]}..{DAYS[1]}"]
    assert runs["trigger_reason"].tolist() == ["manual", f"drift on {DAYS[1]}"]


@pytest.mark.slow
def test_the_new_version_differs_and_its_lineage_reads_window_curated_run_version(loop):
    lake = loop["lake"]
    versions = lake.read(schemas.MODEL_VERSIONS).sort_values("version")
    assert versions["version"].tolist() == [1, 2]
    assert versions["sha256"].nunique() == 2
    run = lake.read(schemas.TRAINING_RUNS).sort_values("finished_at").iloc[-1]
    curated_version = materialization(loop["windowed"], "feedback/curated_examples")["examples_table_version"]
    window = feedback_node(*map(dt.date.fromisoformat, DAYS))
    path = path_between(lineage_edges(lake), window, model_node(MODEL_NAME, 2))
    assert path == [window, f"dataset:feedback@v{curated_version}", f"run:{run['run_id']}",
                    model_node(MODEL_NAME, 2)]
    assert path_between(lineage_edges(lake), window, model_node(MODEL_NAME, 1)) is None


@pytest.mark.slow
def test_preference_pairs_from_the_window_feed_dpo(loop):
    from crucible_assets.feedback.curation import preference_pairs
    from crucible_assets.training.dpo import dpo_checkpoint

    lake, resources, instance = loop["lake"], loop["resources"], loop["instance"]
    window = {"window_start": DAYS[0], "window_end": DAYS[1]}
    result = dg.materialize([preference_pairs], resources=resources, instance=instance, selection=[preference_pairs],
                            run_config={"ops": {"feedback__preference_pairs": {"config": window}}})
    assert result.success
    pairs = lake.read(schemas.FEEDBACK_PAIRS)
    assert (pairs["source"] == "edit").sum() == 6  # every edited answer (3 a day) is a pair
    again = dg.materialize([preference_pairs], resources=resources, instance=instance, selection=[preference_pairs],
                           run_config={"ops": {"feedback__preference_pairs": {"config": window}}})
    assert again.success and len(lake.read(schemas.FEEDBACK_PAIRS)) == len(pairs)
    dpo = dg.materialize([dpo_checkpoint], resources=resources, instance=instance, selection=[dpo_checkpoint],
                         run_config={"ops": {"training__dpo_checkpoint": {"config": {
                             "dpo": {"pairs_table": "feedback/preference_pairs"},
                             "hyperparameters": {"max_steps": 1}, "dataset_limit": 4}}}})
    assert dpo.success
    run = lake.read(schemas.TRAINING_RUNS).sort_values("finished_at").iloc[-1]
    assert run["method"] == "dpo" and run["dataset"] == "feedback/preference_pairs"


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2026-11-02", "", "data_window_start='2026-11-02' and data_window_end='': set both days of the window, or "
                       "neither"),
    ("2026-11-03", "2026-11-01", "data_window_start=2026-11-03 comes after data_window_end=2026-11-01"),
    ("11/02/2026", "2026-11-03", "data_window_start='11/02/2026' / data_window_end='2026-11-03': expected "
                                 "YYYY-MM-DD dates"),
])
def test_a_bad_window_fails_before_training_saying_what_to_fix(tmp_path, resources_for, start, end, message):
    from crucible_assets.training.assets import sft_checkpoint

    config = {"ops": {"training__sft_checkpoint": {"config": {"data_window_start": start, "data_window_end": end}}}}
    result = dg.materialize([sft_checkpoint], resources=resources_for(tmp_path), run_config=config,
                            raise_on_error=False, selection=[sft_checkpoint])
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"training/sft_checkpoint: {message}" in failure.step_failure_data.error.message
