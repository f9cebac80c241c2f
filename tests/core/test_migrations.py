"""Schema migrations on a lake written by the previous schema: writes wait, migrate applies in order, re-runs are no-ops."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from crucible.lake import DeltaLake, MigrationRequiredError
from crucible.migrations import STEPS, eval_summaries_v1_to_v2, migrate, pending_steps, rewrite_eval_results
from crucible.quarantine import quarantine_rows, store_quarantined, store_validated
from schemas import ALL_TABLES, EVAL_RESULTS, EVAL_SUMMARIES, EXAMPLES, LAKE_MIGRATIONS, QUARANTINE

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lake_v1"
EVAL_STEPS = ["evaluation/results@1->2", "evaluation/summaries@1->2"]
QUARANTINE_STEPS = ["quarantine/rows@1->2", "quarantine/rows@2->3"]


@pytest.fixture
def old_lake(tmp_path) -> DeltaLake:
    shutil.copytree(FIXTURE, tmp_path / "lake")
    return DeltaLake(tmp_path / "lake")


def test_every_table_has_a_chain_of_steps_up_to_its_schema_version():
    for spec in [*ALL_TABLES, LAKE_MIGRATIONS]:
        assert [s.to_version for s in pending_steps(spec, 1)] == list(range(2, spec.schema_version + 1)), spec.path
    assert {s.table for s in STEPS} <= {spec.path for spec in ALL_TABLES}


def test_writes_to_an_unmigrated_table_refuse_and_name_the_command(old_lake):
    assert old_lake.stored_schema_version(QUARANTINE) == 1
    with pytest.raises(MigrationRequiredError, match=r"quarantine/rows has schema version 1.*"
                                                      r"quarantine/rows@2->3.*crucible lake migrate"):
        store_quarantined(old_lake, quarantine_rows("t/x", [({"a": 1}, "s", "bad")]))
    assert old_lake.version(QUARANTINE) == 2  # nothing was written
    assert len(old_lake.read(QUARANTINE)) == 3  # reads still work


def test_migrate_backfills_origin_and_a_rerun_is_a_noop(old_lake):
    before = old_lake.read(QUARANTINE)
    assert [o.step_id for o in migrate(old_lake, dry_run=True)] == EVAL_STEPS + QUARANTINE_STEPS
    assert old_lake.stored_schema_version(QUARANTINE) == 1

    applied = migrate(old_lake)
    assert [(o.step_id, o.status) for o in applied] == [(step, "applied") for step in EVAL_STEPS + QUARANTINE_STEPS]
    assert old_lake.stored_schema_version(QUARANTINE) == 3
    after = old_lake.read(QUARANTINE).set_index("source")
    assert after["origin"].to_dict() == {
        "gsm8k/train.jsonl:2": "datasets/examples[dataset=gsm8k]",
        "gsm8k/train.jsonl:3": "datasets/examples[source=gsm8k/train.jsonl:3]",
        "inference 2026-11-01": "feedback/inference_events[day=2026-11-01]",
    }
    assert after["row_hash"].to_dict() == before.set_index("source")["row_hash"].to_dict()
    recorded = old_lake.read(LAKE_MIGRATIONS)
    assert sorted(recorded["step_id"]) == EVAL_STEPS + QUARANTINE_STEPS

    version = old_lake.version(QUARANTINE)
    assert migrate(old_lake) == []
    assert old_lake.version(QUARANTINE) == version and len(old_lake.read(LAKE_MIGRATIONS)) == 4

    # Time travel to before the migration still reads the old schema's rows.
    old = old_lake.read(QUARANTINE, version=2)
    assert "origin" not in old.columns and len(old) == 3


def test_migrated_old_rows_are_replaced_by_their_scope(old_lake):
    migrate(old_lake)
    fixed = pd.DataFrame([{"dataset": "gsm8k", "split": "train", "example_id": "2", "input": "q", "target": "a",
                           "messages": "[]", "metadata": "{}", "source": "gsm8k/train.jsonl:2"}])
    store_validated(old_lake, EXAMPLES, fixed, source=fixed["source"], replace_where={"dataset": "gsm8k"})
    assert sorted(old_lake.read(QUARANTINE)["source"]) == ["gsm8k/train.jsonl:3", "inference 2026-11-01"]


def test_a_step_interrupted_before_its_version_bump_reruns_cleanly(old_lake):
    """Crash after the back-fill and its record, before the version bump: migrate runs the step again."""
    from crucible.migrations import backfill_quarantine_origin

    migrate(old_lake)
    old_lake.set_schema_version(QUARANTINE, 2)  # as if the bump to 3 never happened
    with old_lake.migrating(QUARANTINE):
        backfill_quarantine_origin(old_lake, QUARANTINE)
    assert [o.step_id for o in migrate(old_lake)] == ["quarantine/rows@2->3"]
    assert old_lake.stored_schema_version(QUARANTINE) == 3
    assert old_lake.read(QUARANTINE)["origin"].notna().all() and len(old_lake.read(QUARANTINE)) == 3
    assert len(old_lake.read(LAKE_MIGRATIONS)) == 4


def test_an_additive_step_alone_applies_on_write(old_lake):
    """With only additive steps pending (the code at v2), a write evolves the table by itself."""
    import dataclasses

    at_v2 = dataclasses.replace(QUARANTINE, schema_version=2)
    old_lake.upsert(at_v2, quarantine_rows("t/x", [({"a": 1}, "s", "bad")]))
    assert old_lake.stored_schema_version(QUARANTINE) == 2
    assert old_lake.read(LAKE_MIGRATIONS)["step_id"].tolist() == ["quarantine/rows@1->2"]
    assert len(old_lake.read(QUARANTINE)) == 4


# -- evaluation/results and evaluation/summaries, v1 -> v2 (a non-additive rewrite) ---------------------


def test_eval_writes_refuse_until_migrated_and_check_lists_the_steps(old_lake):
    assert old_lake.health(EVAL_RESULTS).pending_migrations == ("evaluation/results@1->2",)
    assert old_lake.health(EVAL_SUMMARIES).pending_migrations == ("evaluation/summaries@1->2",)
    with pytest.raises(MigrationRequiredError, match=r"evaluation/results has schema version 1.*"
                                                      r"evaluation/results@1->2.*crucible lake migrate"):
        old_lake.replace_where(EVAL_RESULTS, new_result(), {"model_version": "run-2", "benchmark": "gsm8k"})
    assert old_lake.version(EVAL_RESULTS) == 2 and len(old_lake.read(EVAL_RESULTS)) == 3


def test_migrate_rewrites_eval_tables_in_the_new_shape_and_keeps_history(old_lake):
    migrate(old_lake)
    assert old_lake.stored_schema_version(EVAL_RESULTS) == 2 and old_lake.stored_schema_version(EVAL_SUMMARIES) == 2

    results = old_lake.read(EVAL_RESULTS).sort_values("example_id").reset_index(drop=True)
    assert list(results.columns) == EVAL_RESULTS.columns  # the v1 columns are gone from the stored schema
    EVAL_RESULTS.model.validate(results)
    assert results[["example_id", "output", "gold", "score", "extracted_answer"]].to_dict("records") == [
        {"example_id": "7", "output": "The answer is 4", "gold": "4", "score": 1.0, "extracted_answer": "4"},
        {"example_id": "8", "output": "no idea", "gold": "9", "score": 0.0, "extracted_answer": None},
        {"example_id": "n1", "output": "leaves fall", "gold": "autumn leaves fall", "score": 0.0,
         "extracted_answer": None},
    ]
    assert [json.loads(m) for m in results["item_metrics"]] == [
        {"correct": True, "rouge_l": 0.4}, {"correct": False, "rouge_l": 0.0}, {"correct": False, "rouge_l": 0.8}]
    assert set(results["split"]) == {"test"} and set(results["variant"]) == {"legacy"}
    assert results["subject"].isna().all() and results["finish_reason"].isna().all()
    assert (results["completion_tokens"] == 0).all()
    assert DeltaTable(old_lake.uri(EVAL_RESULTS)).metadata().partition_columns == ["benchmark"]

    summaries = old_lake.read(EVAL_SUMMARIES).set_index("metric")
    EVAL_SUMMARIES.model.validate(summaries.reset_index())
    assert summaries["n"].to_dict() == {"accuracy": 2, "rouge_l": 1, "pass@1": 1}  # v1's 0 examples -> 1
    assert (summaries["ci_low"] == summaries["value"]).all() and (summaries["ci_high"] == summaries["value"]).all()
    assert set(summaries["ci_method"]) == {"none"} and set(summaries["ci_level"]) == {0.95}

    # New rows go beside the migrated ones, and a re-run changes nothing.
    old_lake.replace_where(EVAL_RESULTS, new_result(), {"model_version": "run-2", "benchmark": "gsm8k"})
    assert len(old_lake.read(EVAL_RESULTS)) == 4
    versions = (old_lake.version(EVAL_RESULTS), old_lake.version(EVAL_SUMMARIES))
    assert migrate(old_lake) == []
    assert (old_lake.version(EVAL_RESULTS), old_lake.version(EVAL_SUMMARIES)) == versions

    # Time travel to before the rewrite still reads the v1 columns and rows.
    old = old_lake.read(EVAL_RESULTS, version=2)
    assert {"prediction", "target", "correct", "rouge_l"} <= set(old.columns) and "score" not in old.columns
    assert sorted(old["example_id"]) == ["7", "8", "n1"]
    assert old_lake.read(EVAL_SUMMARIES, version=1)["num_examples"].tolist() == [2, 1, 0]


def test_an_eval_rewrite_interrupted_before_its_record_reruns_without_writing_again(old_lake):
    """Crash after the rewrite, before the record and the version bump: migrate finishes the step only."""
    with old_lake.migrating(EVAL_RESULTS):
        rewrite_eval_results(old_lake, EVAL_RESULTS)
    rewritten = old_lake.version(EVAL_RESULTS)
    assert old_lake.stored_schema_version(EVAL_RESULTS) == 1

    assert [o.step_id for o in migrate(old_lake, [EVAL_RESULTS])] == ["evaluation/results@1->2"]
    assert old_lake.version(EVAL_RESULTS) == rewritten + 1  # only the version bump was committed
    assert old_lake.stored_schema_version(EVAL_RESULTS) == 2
    EVAL_RESULTS.model.validate(old_lake.read(EVAL_RESULTS))
    assert len(old_lake.read(EVAL_RESULTS)) == 3


def test_a_rewrite_that_loses_a_race_reads_again_and_keeps_the_concurrent_rows(old_lake):
    """An old-shape row committed while the rewrite plans is converted too, not left in the old shape."""
    calls = []

    def change(rows: pd.DataFrame) -> pd.DataFrame | None:
        calls.append(len(rows))
        if len(calls) == 1:
            stored = DeltaTable(old_lake.uri(EVAL_SUMMARIES))
            write_deltalake(stored, pa.Table.from_pylist(
                [{"model_version": "run-2", "benchmark": "gsm8k", "metric": "accuracy", "value": 0.25,
                  "num_examples": 4}], schema=pa.schema(stored.schema().to_arrow())), mode="append")
        return eval_summaries_v1_to_v2(rows)

    with old_lake.migrating(EVAL_SUMMARIES):
        written = old_lake.rewrite(EVAL_SUMMARIES, change)
    assert calls == [3, 4] and (written.rows_written, written.retries) == (4, 1)
    summaries = old_lake.read(EVAL_SUMMARIES)
    EVAL_SUMMARIES.model.validate(summaries)
    assert summaries.set_index("model_version").loc["run-2", "n"] == 4


def test_rewrite_refuses_outside_a_migration_step(old_lake):
    with pytest.raises(RuntimeError, match=r"evaluation/summaries: rewrite .* migration steps only"):
        old_lake.rewrite(EVAL_SUMMARIES, eval_summaries_v1_to_v2)
    assert old_lake.version(EVAL_SUMMARIES) == 1


def new_result() -> pd.DataFrame:
    return pd.DataFrame([{
        "model_version": "run-2", "benchmark": "gsm8k", "example_id": "7", "sample": 0, "split": "test",
        "subject": None, "variant": "8-shot", "prompt": "2+2?", "output": "4", "extracted_answer": "4", "gold": "4",
        "score": 1.0, "item_metrics": '{"strict": 1.0}', "finish_reason": "stop", "completion_tokens": 2}])
