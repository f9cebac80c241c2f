"""datasets/splits follows datasets/examples: a user file that shrinks or empties, re-ingested, leaves
splits that reference exactly the stored examples, and the check on splits catches dangling rows."""

import json

import dagster as dg
import pytest

from crucible_assets.datasets.assets import examples
from crucible_assets.datasets.splits import splits, splits_reference_stored_examples
from crucible_assets.definitions import build_defs
from schemas import EXAMPLES, SPLITS

NAME = "shrinking"


def write_dataset(folder, count: int) -> None:
    rows = [{"id": f"q{i}", "input": f"What is {i} + 1?", "target": str(i + 1)} for i in range(count)]
    (folder / f"{NAME}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def ingest(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    (tmp_path / "drop").mkdir()
    (tmp_path / "drop" / f"{NAME}.yaml").write_text("id: id\n")
    defs = build_defs(resources)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", [NAME])

    def run(count: int) -> dg.ExecuteInProcessResult:
        write_dataset(tmp_path / "drop", count)
        result = defs.resolve_job_def("dataset_ingest_job").execute_in_process(instance=instance, partition_key=NAME)
        assert result.success
        return result

    yield run, resources, instance
    instance.dispose()


def referenced(resources) -> tuple[set, set]:
    """(source_split, example_id) pairs held by splits (fold rows included) and by examples."""
    store = resources["lake"].lake()
    split_rows = store.read(SPLITS, where={"dataset": NAME})
    example_rows = store.read(EXAMPLES, where={"dataset": NAME})
    return (set(zip(split_rows["source_split"], split_rows["example_id"], strict=True)),
            set(zip(example_rows["split"], example_rows["example_id"], strict=True)))


def check_result(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == splits_reference_stored_examples.check_key.name)


def splits_metadata(result: dg.ExecuteInProcessResult) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("datasets__splits")[0].metadata.items()}


def test_shrinking_then_emptying_the_file_keeps_splits_exactly_on_the_examples(ingest):
    run, resources, _ = ingest
    first = run(30)
    in_splits, in_examples = referenced(resources)
    assert len(in_examples) == 30 and in_splits == in_examples and check_result(first).passed

    shrunk = run(12)
    in_splits, in_examples = referenced(resources)
    assert len(in_examples) == 12 and in_splits == in_examples
    assert check_result(shrunk).passed and check_result(shrunk).metadata["dangling_rows"].value == 0

    emptied = run(0)
    assert referenced(resources) == (set(), set())
    meta = splits_metadata(emptied)
    assert meta["emptied"] is True and meta["examples_rows"] == 0 and meta["dagster/row_count"] == 0
    assert check_result(emptied).passed


def test_the_check_names_split_rows_whose_examples_are_gone(ingest, tmp_path):
    run, resources, instance = ingest
    run(10)
    write_dataset(tmp_path / "drop", 4)
    # Only examples is re-materialized: splits still holds q4..q9, which the check must name.
    result = dg.materialize([examples, splits, splits_reference_stored_examples], partition_key=NAME,
                            instance=instance, resources=resources,
                            selection=dg.AssetSelection.assets(examples)
                            | dg.AssetSelection.checks(splits_reference_stored_examples))
    evaluation = check_result(result)
    assert not evaluation.passed
    assert evaluation.metadata["dangling_ids"].value == [f"train/q{i}" for i in range(4, 10)]


def test_splits_of_a_dataset_never_ingested_fail_with_what_to_do(ingest):
    run, resources, instance = ingest
    run(5)
    instance.add_dynamic_partitions("datasets", ["other"])
    result = dg.materialize([splits], partition_key="other", instance=instance, resources=resources,
                            raise_on_error=False)
    message = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "has never been materialized for other; materialize datasets/examples for other first" in message


def test_a_new_examples_partition_requests_its_splits(ingest, tmp_path):
    run, resources, instance = ingest
    write_dataset(tmp_path / "drop", 6)
    assets = build_defs(resources)
    first = dg.evaluate_automation_conditions(defs=assets, instance=instance)
    assert first.total_requested == 0
    assert dg.materialize([examples], partition_key=NAME, instance=instance, resources=resources).success
    second = dg.evaluate_automation_conditions(defs=assets, instance=instance, cursor=first.cursor)
    requested = {(key.to_user_string(), partition) for key, partitions in
                 ((r.key, r.true_subset.expensively_compute_partition_keys()) for r in second.results
                  if r.true_subset.size) for partition in partitions}
    assert requested == {("datasets/splits", NAME)}
