"""A damaged table is an error naming it, never an empty read, and no write goes over it; restore brings it back."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from crucible.lake import DeltaLake, LakeTableError, TableVersionError
from schemas import EXAMPLES, TRAINING_METRICS


def examples(dataset: str, n: int = 2) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": dataset, "split": "train", "example_id": str(i), "input": f"q{i}",
                          "target": "a", "messages": "[]", "metadata": "{}", "source": f"{dataset}.jsonl:{i}"}
                         for i in range(n)])


def three_versions(lake: DeltaLake) -> Path:
    """datasets/examples at versions 0 (create), 1 (gsm8k), 2 (mmlu), 3 (gsm8k again, 3 rows)."""
    lake.replace_where(EXAMPLES, examples("gsm8k"), {"dataset": "gsm8k"})
    lake.replace_where(EXAMPLES, examples("mmlu"), {"dataset": "mmlu"})
    lake.replace_where(EXAMPLES, examples("gsm8k", 3), {"dataset": "gsm8k"})
    assert lake.version(EXAMPLES) == 3
    return Path(lake.root, EXAMPLES.path)


def data_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.parquet")}


def test_deleted_log_is_an_error_and_a_write_refuses_without_touching_data(lake):
    folder = three_versions(lake)
    shutil.rmtree(folder / "_delta_log")
    before = data_files(folder)
    with pytest.raises(LakeTableError, match=r"datasets/examples.*no Delta log.*crucible lake check.*"
                                             r"crucible lake restore datasets/examples --version N"):
        lake.read(EXAMPLES)
    with pytest.raises(LakeTableError, match="datasets/examples"):
        lake.replace_where(EXAMPLES, examples("gsm8k"), {"dataset": "gsm8k"})
    with pytest.raises(LakeTableError):
        lake.version(EXAMPLES)
    assert not (folder / "_delta_log").exists() and data_files(folder) == before
    assert lake.health(EXAMPLES).status == "broken"


def test_whole_folder_deleted_is_an_error_because_the_lake_remembers_the_table(lake):
    folder = three_versions(lake)
    shutil.rmtree(folder)
    with pytest.raises(LakeTableError, match="datasets/examples.*was created in this lake.*folder is gone"):
        lake.read(EXAMPLES)
    with pytest.raises(LakeTableError):
        lake.upsert(EXAMPLES, examples("gsm8k"))
    assert not folder.exists()
    # A table that was never created still reads as a typed empty frame.
    assert lake.read(TRAINING_METRICS).empty


def test_marker_is_backfilled_for_tables_written_before_markers(lake):
    folder = three_versions(lake)
    marker = Path(lake.root, "_crucible", "tables", "datasets.examples")
    marker.unlink()
    assert lake.health(EXAMPLES).status == "ok" and marker.exists()
    shutil.rmtree(folder)
    assert lake.health(EXAMPLES).status == "broken"


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty"])
def test_corrupted_newest_commit_is_an_error_naming_the_table(lake, damage):
    folder = three_versions(lake)
    newest = folder / "_delta_log" / "00000000000000000003.json"
    text = newest.read_text()
    newest.write_text({"truncate": text[: len(text) // 2], "garble": "\x00\x17garbage{", "empty": ""}[damage])
    with pytest.raises(LakeTableError, match=r"table datasets/examples .*00000000000000000003.json is corrupted"):
        lake.read(EXAMPLES)
    with pytest.raises(LakeTableError):
        lake.replace_where(EXAMPLES, examples("gsm8k"), {"dataset": "gsm8k"})
    assert newest.read_text() != text  # nothing rewrote the log behind our back


def test_a_gap_in_the_log_is_reraised_naming_the_table(lake):
    folder = three_versions(lake)
    (folder / "_delta_log" / "00000000000000000002.json").unlink()
    with pytest.raises(LakeTableError, match=r"table datasets/examples .*Delta log cannot be read"):
        lake.read(EXAMPLES)


def test_nonexistent_version_names_the_range(lake):
    three_versions(lake)
    with pytest.raises(TableVersionError, match=r"table datasets/examples has versions 0\.\.3; version 999 does "
                                                r"not exist"):
        lake.read(EXAMPLES, version=999)
    with pytest.raises(TableVersionError, match="version -1"):
        lake.read(EXAMPLES, version=-1)
    with pytest.raises(TableVersionError, match="does not exist yet"):
        lake.read(TRAINING_METRICS, version=0)
    assert len(lake.read(EXAMPLES, version=2)) == 4


def test_restore_a_readable_table_adds_a_commit_and_keeps_history(lake):
    three_versions(lake)
    result = lake.restore(EXAMPLES, 1)
    assert (result.restored_to, result.version, result.moved_aside) == (1, 4, ())
    assert sorted(lake.read(EXAMPLES)["dataset"]) == ["gsm8k", "gsm8k"]
    assert len(lake.read(EXAMPLES, version=3)) == 5


def test_restore_moves_corrupted_newest_commits_aside(lake):
    folder = three_versions(lake)
    (folder / "_delta_log" / "00000000000000000003.json").write_text("{truncated")
    result = lake.restore(EXAMPLES, 2)
    assert result.moved_aside == ("00000000000000000003.json",) and result.version == 2
    assert Path(result.moved_to).parent == folder and Path(result.moved_to).name.startswith(
        "_crucible_unreadable_commits_")
    assert (Path(result.moved_to) / "00000000000000000003.json").read_text() == "{truncated"
    assert len(lake.read(EXAMPLES)) == 4
    lake.replace_where(EXAMPLES, examples("gsm8k", 1), {"dataset": "gsm8k"})  # writable again, as version 3
    assert lake.version(EXAMPLES) == 3 and len(lake.read(EXAMPLES)) == 3


def test_restore_puts_files_back_when_the_version_is_still_unreadable(lake):
    folder = three_versions(lake)
    log = folder / "_delta_log"
    (log / "00000000000000000001.json").write_text("garbage")
    (log / "00000000000000000003.json").write_text("garbage")
    with pytest.raises(LakeTableError, match="still unreadable at version 2.*put back"):
        lake.restore(EXAMPLES, 2)
    assert sorted(p.name for p in log.iterdir()) == [f"{v:020d}.json" for v in range(4)]
    assert not list(folder.glob("_crucible_unreadable_commits_*"))
    assert lake.restore(EXAMPLES, 0).moved_aside == tuple(f"{v:020d}.json" for v in (1, 2, 3))
    assert lake.read(EXAMPLES).empty and lake.version(EXAMPLES) == 0


def test_restore_cannot_recover_a_deleted_log(lake):
    folder = three_versions(lake)
    shutil.rmtree(folder / "_delta_log")
    with pytest.raises(LakeTableError, match="no Delta log to restore from"):
        lake.restore(EXAMPLES, 1)


def test_new_nullable_columns_are_added_on_write(lake):
    """Additive evolution: a table stored without a nullable column of its model gains it on the next write."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from schemas import QUARANTINE

    stored = pa.schema([f for f in QUARANTINE.arrow_schema() if f.name != "origin"])
    DeltaTable.create(lake.uri(QUARANTINE), stored, partition_by=["day"],
                      configuration={"crucible.schema_version": "3"}, raise_if_key_not_exists=False)
    from crucible.quarantine import quarantine_rows, store_quarantined

    store_quarantined(lake, quarantine_rows("t/x", [({"a": 1}, "s", "bad")]), origin="t/x[s]")
    assert lake.read(QUARANTINE)["origin"].tolist() == ["t/x[s]"]
