"""datasets/examples, its checks and datasets/splits materialized for real: Delta tables in a temporary
lake, a real ephemeral Dagster instance, the shipped benchmarks and files in a drop folder."""

import json
import os
from collections import Counter

import dagster as dg
import pandas as pd
import pytest

from crucible.data import checks
from crucible.data.loaders import load_benchmark
from crucible.lake import DeltaLake
from crucible_assets.datasets.assets import examples
from crucible_assets.datasets.checks import DATASET_CHECKS
from crucible_assets.datasets.sensors import dataset_drop_sensor
from crucible_assets.datasets.splits import splits
from crucible_assets.definitions import build_defs
from schemas import EXAMPLES, QUARANTINE, SPLITS

BENCHMARKS = ["gsm8k", "mmlu", "humaneval", "norobots"]
EXPECTED_ROWS = {"gsm8k": {"train": 7473, "test": 1319}, "humaneval": {"test": 164},
                 "mmlu": {"dev": 285, "val": 1542, "test": 14079}}
SPECIFIC_CHECK = {"gsm8k": "gsm8k_numeric_targets", "mmlu": "mmlu_targets_in_range",
                  "humaneval": "humaneval_solutions_pass"}


def materialize(assets, partition: str, instance: dg.DagsterInstance,
                resources: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, partition_key=partition, instance=instance, resources=resources)


def counts_by_split(lake: DeltaLake) -> dict[str, dict[str, int]]:
    rows = lake.read(EXAMPLES, columns=["dataset", "split"])
    return {name: dict(Counter(group["split"])) for name, group in rows.groupby("dataset")}


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def meta(evaluation: dg.AssetCheckEvaluation, key: str):
    return evaluation.metadata[key].value


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, resources_for):
    """The four benchmarks loaded into one lake, each with its checks and splits, in one instance."""
    root = tmp_path_factory.mktemp("ingested")
    resources = resources_for(root)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", BENCHMARKS)
    results = {name: materialize([examples, splits, *DATASET_CHECKS], name, instance, resources)
               for name in BENCHMARKS}
    return resources, instance, results


def test_definitions_include_the_splits_asset_and_partitioned_checks(tmp_path, resources_for):
    graph = build_defs(resources_for(tmp_path)).resolve_asset_graph()
    assert dg.AssetKey(["datasets", "splits"]) in graph.get_all_asset_keys()
    names = {key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey(["datasets", "examples"])}
    assert names == {"unique_example_ids", "non_empty_targets", *SPECIFIC_CHECK.values()}


def test_row_counts_per_dataset(ingested):
    resources, _, results = ingested
    counts = counts_by_split(resources["lake"].lake())
    assert set(counts) == set(BENCHMARKS)
    for name, expected in EXPECTED_ROWS.items():
        assert counts[name] == expected, name
    assert counts["norobots"] == dict(Counter(load_benchmark("norobots").to_frame()["split"]))
    for name in BENCHMARKS:
        materialization = results[name].asset_materializations_for_node("datasets__examples")[0]
        assert materialization.metadata["dagster/row_count"].value == sum(counts[name].values())
        assert materialization.metadata["quarantined"].value == 0


def test_rematerializing_changes_no_counts(ingested):
    resources, instance, _ = ingested
    lake = resources["lake"].lake()
    before, version = counts_by_split(lake), lake.version(EXAMPLES)
    for name in BENCHMARKS:
        assert materialize([examples], name, instance, resources).success
    assert counts_by_split(lake) == before
    assert lake.version(EXAMPLES) == version + len(BENCHMARKS)


def test_checks_pass_on_the_shipped_benchmarks(ingested):
    _, _, results = ingested
    for name in BENCHMARKS:
        evaluations = check_evaluations(results[name])
        # Another dataset's specific check records no result here (the UI shows it as skipped).
        applicable = {"unique_example_ids", "non_empty_targets"} | ({SPECIFIC_CHECK[name]} if name in SPECIFIC_CHECK
                                                                     else set())
        assert set(evaluations) == applicable, name
        assert all(evaluation.passed for evaluation in evaluations.values()), name
        assert all(evaluation.partition == name for evaluation in evaluations.values())
        for evaluation in evaluations.values():
            assert meta(evaluation, "checked") > 0 and meta(evaluation, "failed") == 0
    humaneval = check_evaluations(results["humaneval"])["humaneval_solutions_pass"]
    assert meta(humaneval, "checked") == 164


def test_unique_ids_check_fails_on_a_duplicated_stored_row(ingested):
    resources, _, _ = ingested
    rows = resources["lake"].lake().read(EXAMPLES, where={"dataset": "norobots"})
    assert checks.unique_example_ids(rows).passed
    planted = pd.concat([rows, rows.tail(1)])
    assert checks.unique_example_ids(planted).failing_ids == [rows["example_id"].iloc[-1]]


def test_empty_target_fails_its_check_and_bad_json_is_quarantined(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    (tmp_path / "drop").mkdir()
    lines = [json.dumps({"id": "q1", "input": "What is 2+2?", "target": "4"}),
             '{"id": "q2", "input": "broken", ',
             json.dumps({"id": "q3", "input": "Name a colour.", "target": ""})]
    (tmp_path / "drop" / "mine.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "drop" / "mine.yaml").write_text("id: id\n")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["mine"])

    result = materialize([examples, *DATASET_CHECKS], "mine", instance, resources)
    lake = resources["lake"].lake()
    stored = lake.read(EXAMPLES, where={"dataset": "mine"})
    assert sorted(stored["example_id"]) == ["q1", "q3"]
    quarantined = lake.read(QUARANTINE)
    assert list(quarantined["source"]) == ["mine.jsonl:2"] and list(quarantined["table"]) == ["datasets/examples"]
    assert "invalid JSON" in quarantined["reason"].iloc[0]

    evaluations = check_evaluations(result)
    empty = evaluations["non_empty_targets"]
    assert not empty.passed and empty.severity == dg.AssetCheckSeverity.ERROR
    assert meta(empty, "failing_ids") == ["q3"] and meta(empty, "failed") == 1
    assert evaluations["unique_example_ids"].passed
    assert "gsm8k_numeric_targets" not in evaluations  # skipped: not a GSM8K partition


def test_drop_sensor_adds_a_partition_and_requests_a_run_for_a_new_file(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", BENCHMARKS)
    drop = tmp_path / "drop"
    drop.mkdir()
    seen_builtins = json.dumps(dict.fromkeys(BENCHMARKS, 0.0))

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                          resources={"dataset_sources": resources["dataset_sources"]})
        return dataset_drop_sensor(context)

    assert isinstance(tick(seen_builtins), dg.SkipReason)
    path = drop / "notes.jsonl"
    path.write_text(json.dumps({"input": "hi", "target": "hello"}) + "\n")
    first = tick(seen_builtins)
    assert [request.partition_key for request in first.run_requests] == ["notes"]
    assert [request.partition_keys for request in first.dynamic_partitions_requests] == [["notes"]]
    assert isinstance(tick(first.cursor), dg.SkipReason)

    instance.add_dynamic_partitions("datasets", ["notes"])
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    changed = tick(first.cursor)
    assert [request.partition_key for request in changed.run_requests] == ["notes"]
    assert changed.run_requests[0].run_key != first.run_requests[0].run_key
    assert [request.partition_keys for request in changed.dynamic_partitions_requests] == [[]]


def test_splits_cover_every_example_once_with_balanced_folds(ingested):
    resources, _, results = ingested
    lake = resources["lake"].lake()
    for name in BENCHMARKS:
        rows = lake.read(SPLITS, where={"dataset": name})
        stored = lake.read(EXAMPLES, where={"dataset": name})
        keys = set(zip(stored["split"], stored["example_id"], strict=True))

        main = rows[rows["split_name"].isin(["train", "validation", "test"])]
        assert (main["fold"] == -1).all()
        main_keys = list(zip(main["source_split"], main["example_id"], strict=True))
        assert len(main_keys) == len(keys) and set(main_keys) == keys, name

        folds = rows[rows["split_name"].str.startswith("fold-")]
        train = main[main["split_name"] == "train"]
        fold_keys = list(zip(folds["source_split"], folds["example_id"], strict=True))
        assert sorted(fold_keys) == sorted(zip(train["source_split"], train["example_id"], strict=True)), name
        assert (folds["split_name"] == "fold-" + folds["fold"].astype(str)).all()
        sizes = Counter(folds["fold"])
        assert set(sizes) == set(range(5)) and max(sizes.values()) - min(sizes.values()) <= 1, (name, sizes)

        metadata = results[name].asset_materializations_for_node("datasets__splits")[0].metadata
        assert metadata["split_counts"].value == dict(Counter(rows["split_name"]))
        assert metadata["examples_table_version"].value >= 0 and metadata["delta_version"].value >= 0
