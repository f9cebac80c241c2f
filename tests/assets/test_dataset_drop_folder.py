"""The drop folder under hostile contents: dangling links, folders named like data files, unreadable
files and clashing names are each reported with what to do, the sensor tick never fails, the valid
files beside them are still ingested, and a file that cannot be read is quarantined, not lost."""

import gzip
import json
import logging
import os

import dagster as dg
import pytest

from crucible_assets.datasets.assets import examples
from crucible_assets.datasets.sensors import SKIPPED_TAG, dataset_drop_sensor
from resources.datasets import DatasetSourcesResource, name_problem
from schemas import EXAMPLES, QUARANTINE

BENCHMARKS = ["gsm8k", "humaneval", "mmlu", "norobots"]
SEEN_BUILTINS = json.dumps(dict.fromkeys(BENCHMARKS, 0.0))


def qa_lines(count: int, prefix: str = "q") -> str:
    return "".join(json.dumps({"input": f"{prefix}{n}", "target": str(n)}) + "\n" for n in range(count))


@pytest.fixture
def hostile_drop(tmp_path):
    """A drop folder holding two valid datasets and one of each kind of bad entry."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "good.jsonl").write_text(qa_lines(3))
    (drop / "other.csv").write_text("input,target\nhi,hello\n")
    (drop / "dangling.jsonl").symlink_to(drop / "moved-away.jsonl")
    (drop / "x.jsonl").mkdir()
    (drop / "twin.jsonl").write_text(qa_lines(1))
    (drop / "twin.csv").write_text("input,target\nhi,hello\n")
    (drop / "gsm8k.jsonl").write_text(qa_lines(1))
    (drop / ".jsonl").write_text(qa_lines(1))
    (drop / "my data.jsonl").write_text(qa_lines(1))
    (drop / "mapped.jsonl").write_text(qa_lines(1))
    (drop / "mapped.yaml").write_text("input: [unclosed\n")
    (drop / "notes.txt").write_text("not a data file: ignored without a word")
    return drop


EXPECTED_PROBLEMS = {
    "dangling.jsonl": "is a link to", "x.jsonl": "is a folder, not a data file; rename it or move it out",
    "twin.csv": "twin.csv and twin.jsonl both name the dataset 'twin'; rename or remove all but one of them",
    "gsm8k.jsonl": "has the name of the built-in benchmark 'gsm8k'", ".jsonl": "has no name before its suffix",
    "my data.jsonl": "cannot be a partition key: rename the file", "mapped.jsonl": "cannot read the field mapping",
}


def sensor_tick(instance: dg.DagsterInstance, drop, cursor: str | None):
    """One tick of the sensor, called directly (it adds dynamic partitions), with its warnings."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "dataset_sources": DatasetSourcesResource(drop_folder=str(drop))})
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    context.log.addHandler(handler)
    return dataset_drop_sensor(context), warnings


def test_scan_reports_every_bad_entry_with_what_to_do(hostile_drop):
    scan = DatasetSourcesResource(drop_folder=str(hostile_drop)).scan()
    assert sorted(scan.files) == ["good", "other"]
    problems = {problem.path.name: problem.problem for problem in scan.problems}
    assert set(problems) == set(EXPECTED_PROBLEMS)
    for name, expected in EXPECTED_PROBLEMS.items():
        assert expected in problems[name], (name, problems[name])
    assert "moved-away.jsonl, which does not exist; fix or remove the link" in problems["dangling.jsonl"]


def test_sensor_tick_survives_the_bad_entries_and_ingests_the_valid_files(hostile_drop):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", BENCHMARKS)
    result, warnings = sensor_tick(instance, hostile_drop, SEEN_BUILTINS)
    assert isinstance(result, dg.SensorResult)
    assert [request.partition_key for request in result.run_requests] == ["good", "other"]
    assert [request.partition_keys for request in result.dynamic_partitions_requests] == [["good", "other"]]
    assert len(warnings) == len(EXPECTED_PROBLEMS)
    for name, expected in EXPECTED_PROBLEMS.items():
        assert any(f"{name!r} skipped: " in warning and expected in warning for warning in warnings), name
    tag = result.run_requests[0].tags[SKIPPED_TAG]
    assert all(f"{name!r} skipped" in tag for name in EXPECTED_PROBLEMS)

    instance.add_dynamic_partitions("datasets", ["good", "other"])
    again, _ = sensor_tick(instance, hostile_drop, result.cursor)
    assert isinstance(again, dg.SkipReason)
    assert again.skip_message.startswith(f"no new or changed datasets; {len(EXPECTED_PROBLEMS)} drop folder entries "
                                         "skipped: drop folder entry")
    assert "'dangling.jsonl' skipped" in again.skip_message


def test_a_changed_field_mapping_loads_the_dataset_again(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "good.jsonl").write_text(qa_lines(2))
    instance = dg.DagsterInstance.ephemeral()
    first, _ = sensor_tick(instance, drop, SEEN_BUILTINS)
    mapping = drop / "good.yaml"
    mapping.write_text("target: target\n")
    os.utime(mapping, (mapping.stat().st_atime, mapping.stat().st_mtime + 10))
    changed, _ = sensor_tick(instance, drop, first.cursor)
    assert [request.partition_key for request in changed.run_requests] == ["good"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key


@pytest.mark.parametrize(("name", "problem"), [
    ("", "has no name"), ("my data", "cannot be a partition key"), ("a...b", "cannot be a partition key"),
    ("-x", "cannot be a partition key"), ("_tmp", "cannot be a partition key"), ("tab\tname", "partition key"),
    ("mmlu", "built-in benchmark"), ("ok-name_v2.1", None), ("Café", "cannot be a partition key"),
])
def test_dataset_names_must_be_usable_as_partition_keys(name, problem):
    found = name_problem(name)
    assert (found is None) if problem is None else (problem in found), found
    if problem is None:
        dg.DagsterInstance.ephemeral().add_dynamic_partitions("datasets", [name])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its permissions")
def test_an_unreadable_file_is_reported(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "locked.jsonl").write_text(qa_lines(1))
    (drop / "locked.jsonl").chmod(0)
    scan = DatasetSourcesResource(drop_folder=str(drop)).scan()
    assert scan.files == {} and "cannot be read" in scan.problems[0].problem


def test_a_colliding_name_is_refused_naming_both_files(hostile_drop):
    sources = DatasetSourcesResource(drop_folder=str(hostile_drop))
    with pytest.raises(ValueError, match=r"dataset 'twin': .*twin.csv and .*twin.jsonl both name it, and Crucible "
                                         r"will not pick one; rename or remove all but one of them"):
        sources.load("twin")
    with pytest.raises(FileNotFoundError, match=r"dataset 'dangling': .*does not exist; fix or remove the link"):
        sources.load("dangling")
    assert len(sources.load("good").records) == 3


def materialize(drop, root, partition: str, instance: dg.DagsterInstance):
    """datasets/examples for one partition in a lake under ``root``; the run result and that lake."""
    from resources.lake import LakeResource

    lake = LakeResource(root=str(root / "lake"), artifacts_root=str(root / "artifacts"))
    result = dg.materialize([examples], partition_key=partition, instance=instance, raise_on_error=False,
                            resources={"lake": lake, "dataset_sources": DatasetSourcesResource(drop_folder=str(drop))})
    return result, lake.lake()


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict:
    event = result.asset_materializations_for_node("datasets__examples")[0]
    return {key: value.value for key, value in event.metadata.items()}


def test_an_unreadable_row_group_is_quarantined_as_one_row_and_the_rest_ingests(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    drop = tmp_path / "drop"
    drop.mkdir()
    path = drop / "grouped.parquet"
    pq.write_table(pa.Table.from_pylist([{"input": f"q{n}", "target": str(n)} for n in range(9)]), path,
                   row_group_size=3)
    column = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start:start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(data))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["grouped"])

    result, lake = materialize(drop, tmp_path, "grouped", instance)
    assert result.success
    metadata = materialization_metadata(result)
    assert (metadata["rows_in"], metadata["dagster/row_count"], metadata["quarantined"]) == (7, 6, 1)
    assert len(metadata["file_errors"]) == 1
    assert metadata["file_errors"][0].startswith("grouped.parquet row group 2: cannot be read, so its 3 rows")
    assert sorted(lake.read(EXAMPLES, where={"dataset": "grouped"})["input"]) == ["q0", "q1", "q2", "q6", "q7", "q8"]
    quarantined = lake.read(QUARANTINE)
    assert list(quarantined["source"]) == ["grouped.parquet:rg2"]
    assert quarantined["reason"].iloc[0] == metadata["file_errors"][0]
    assert json.loads(quarantined["record"].iloc[0])["file"] == "grouped.parquet"


def test_a_file_that_became_unreadable_fails_the_run_is_quarantined_and_keeps_the_stored_rows(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    path = drop / "notes.jsonl.gz"
    path.write_bytes(gzip.compress(qa_lines(20).encode()))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["notes"])
    first, lake = materialize(drop, tmp_path, "notes", instance)
    assert first.success and len(lake.read(EXAMPLES, where={"dataset": "notes"})) == 20

    path.write_bytes(path.read_bytes()[:-12])  # cut short: the gzip trailer is gone
    failed, lake = materialize(drop, tmp_path, "notes", instance)
    assert not failed.success
    failure = failed.get_step_failure_events()[0].step_failure_data.error
    assert "datasets/examples notes: notes: no data could be read: notes.jsonl.gz: not a complete gzip file" \
        in failure.message
    assert len(lake.read(EXAMPLES, where={"dataset": "notes"})) == 20  # an empty read never wipes a partition
    quarantined = lake.read(QUARANTINE)
    assert list(quarantined["source"]) == ["notes.jsonl.gz"]
    assert quarantined["reason"].iloc[0].startswith("notes.jsonl.gz: not a complete gzip file (truncated or corrupt")


def test_reingesting_a_fixed_file_leaves_no_stale_quarantine_rows(tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    path = drop / "fixed.jsonl"
    path.write_text(qa_lines(2) + '{"input": "\\ud800", "target": "t"}\n{"input": "cut\n')
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["fixed"])
    first, lake = materialize(drop, tmp_path, "fixed", instance)
    assert first.success
    assert sorted(lake.read(QUARANTINE)["source"]) == ["fixed.jsonl:3", "fixed.jsonl:4"]
    assert (materialization_metadata(first)["rows_in"], materialization_metadata(first)["quarantined"]) == (4, 2)

    path.write_text(qa_lines(3))
    second, lake = materialize(drop, tmp_path, "fixed", instance)
    assert second.success and materialization_metadata(second)["quarantined"] == 0
    assert lake.read(QUARANTINE).empty
    assert len(lake.read(EXAMPLES, where={"dataset": "fixed"})) == 3
