"""Schema migrations on a lake written by the previous schema: writes wait, migrate applies in order, re-runs are no-ops."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from crucible.lake import DeltaLake, MigrationRequiredError
from crucible.migrations import STEPS, migrate, pending_steps
from crucible.quarantine import quarantine_rows, store_quarantined, store_validated
from schemas import ALL_TABLES, EXAMPLES, LAKE_MIGRATIONS, QUARANTINE

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lake_v1"


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
    assert [o.step_id for o in migrate(old_lake, dry_run=True)] == ["quarantine/rows@1->2", "quarantine/rows@2->3"]
    assert old_lake.stored_schema_version(QUARANTINE) == 1

    applied = migrate(old_lake)
    assert [(o.step_id, o.status) for o in applied] == [("quarantine/rows@1->2", "applied"),
                                                        ("quarantine/rows@2->3", "applied")]
    assert old_lake.stored_schema_version(QUARANTINE) == 3
    after = old_lake.read(QUARANTINE).set_index("source")
    assert after["origin"].to_dict() == {
        "gsm8k/train.jsonl:2": "datasets/examples[dataset=gsm8k]",
        "gsm8k/train.jsonl:3": "datasets/examples[source=gsm8k/train.jsonl:3]",
        "inference 2026-11-01": "feedback/inference_events[day=2026-11-01]",
    }
    assert after["row_hash"].to_dict() == before.set_index("source")["row_hash"].to_dict()
    recorded = old_lake.read(LAKE_MIGRATIONS).sort_values("from_version")
    assert recorded["step_id"].tolist() == ["quarantine/rows@1->2", "quarantine/rows@2->3"]

    version = old_lake.version(QUARANTINE)
    assert migrate(old_lake) == []
    assert old_lake.version(QUARANTINE) == version and len(old_lake.read(LAKE_MIGRATIONS)) == 2

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
    assert len(old_lake.read(LAKE_MIGRATIONS)) == 2


def test_an_additive_step_alone_applies_on_write(old_lake):
    """With only additive steps pending (the code at v2), a write evolves the table by itself."""
    import dataclasses

    at_v2 = dataclasses.replace(QUARANTINE, schema_version=2)
    old_lake.upsert(at_v2, quarantine_rows("t/x", [({"a": 1}, "s", "bad")]))
    assert old_lake.stored_schema_version(QUARANTINE) == 2
    assert old_lake.read(LAKE_MIGRATIONS)["step_id"].tolist() == ["quarantine/rows@1->2"]
    assert len(old_lake.read(QUARANTINE)) == 4
