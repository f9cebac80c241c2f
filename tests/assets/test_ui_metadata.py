"""What a person sees in the Dagster UI, checked on the definitions and on real runs: column schemas from the
Pandera models, described launchpad fields, escaped markdown tables, rounded numbers, an inline loss curve,
no "row count 1" on a checkpoint, and dataset checks skipped (not passed) where they do not apply."""

import asyncio
import json
import math
import re

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pytest
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus
from pandera.typing import Series

import schemas
from crucible.data.checks import ExampleCheckResult, ExampleFailure
from crucible_assets.datasets.assets import examples
from crucible_assets.datasets.checks import DATASET_CHECKS, _check_result
from crucible_assets.definitions import build_defs
from crucible_assets.metadata import (
    UI_INLINE_MARKDOWN_LIMIT,
    column_schema,
    markdown_table,
    rounded,
    training_metadata,
)
from crucible_assets.training.assets import sft_checkpoint
from schemas import TableSpec

# One tiny training step on the 8 first GSM8K rows: enough for a run row, a loss curve and a checkpoint.
TRAINING = {"hyperparameters": {"max_steps": 3, "eval_every": 0, "checkpoint_every": 0}, "dataset_limit": 8}


@pytest.fixture(scope="module")
def defs(tmp_path_factory, resources_for):
    return build_defs(resources_for(tmp_path_factory.mktemp("defs")))


def table_specs() -> dict[str, TableSpec]:
    return {spec.path: spec for spec in schemas.ALL_TABLES}


def test_every_table_asset_publishes_the_column_schema_of_its_pandera_model(defs):
    specs = table_specs()
    published = {}
    for spec in defs.resolve_all_asset_specs():
        if "deltalake" in spec.kinds and spec.group_name != "training":  # checkpoints are not tables
            assert "dagster/column_schema" in spec.metadata, f"{spec.key.to_user_string()} shows no columns"
        if "dagster/column_schema" not in spec.metadata:
            continue
        table = specs[spec.metadata["table"]]
        columns = spec.metadata["dagster/column_schema"].columns
        arrow = table.arrow_schema()
        assert [c.name for c in columns] == table.columns, spec.key
        assert [c.type for c in columns] == [str(arrow.field(c.name).type) for c in columns], spec.key
        assert [c.constraints.nullable for c in columns] == [f.nullable for f in arrow], spec.key
        published[spec.key.to_user_string()] = table.path
    # The catalog's main tables, by the asset a person opens.
    assert published["datasets/examples"] == "datasets/examples"
    assert published["monitoring/drift_report"] == "monitoring/drift_reports"
    assert published["feedback/inference_events"] == "feedback/inference_events"
    run_columns = {c.name: c for c in column_schema(schemas.TRAINING_RUNS).columns}
    assert run_columns["method"].description == "isin(['sft', 'dpo', 'rl', 'distill'])"
    assert "key column of training/runs" in run_columns["run_id"].constraints.other
    assert run_columns["run_id"].constraints.unique and not run_columns["final_loss"].constraints.unique


def test_a_pandera_field_description_becomes_the_column_description():
    class Described(pa.DataFrameModel):
        day: Series[str] = pa.Field(description="Day the request was served (UTC).")
        score: Series[float] = pa.Field(ge=0, nullable=True)

    spec = TableSpec("demo", "described", Described, ("day",), "day")
    day, score = column_schema(spec).columns
    assert (day.name, day.type, day.description) == ("day", "string", "Day the request was served (UTC).")
    assert day.constraints.other == ["key column of demo/described", "partition column"]
    assert (score.type, score.description, score.constraints.nullable) == ("double", "greater_than_or_equal_to(0)",
                                                                          True)


def _undescribed(config_type, path: str) -> list[str]:
    """Paths of fields under a Dagster config type that carry no description (nested shapes included)."""
    missing = []
    for name, field in getattr(config_type, "fields", {}).items():
        if not field.description:
            missing.append(f"{path}.{name}")
        inner = field.config_type
        while getattr(inner, "inner_type", None) is not None:  # Noneable / Array wrap the shape
            inner = inner.inner_type
        missing += _undescribed(inner, f"{path}.{name}")
    return missing


def test_every_launchpad_field_has_a_description(defs):
    missing = []
    for assets_def in defs.resolve_asset_graph().assets_defs:
        for node in assets_def.node_def.iterate_op_defs() if hasattr(assets_def.node_def, "iterate_op_defs") \
                else [assets_def.node_def]:
            if node.config_schema is not None and node.config_schema.as_field() is not None:
                missing += _undescribed(node.config_schema.as_field().config_type, node.name)
    for key, resource in defs.resources.items():
        if isinstance(resource, dg.ConfigurableResource):  # the rest (a Pipes client) have no launchpad config
            config_type = resource.get_resource_definition().config_schema.as_field().config_type
            missing += _undescribed(config_type, f"resources.{key}")
    assert not missing, f"launchpad fields without a description: {missing}"
    # The ones a person asked about by name.
    fields = sft_checkpoint.op.config_schema.as_field().config_type.fields
    assert {"data_window_start", "data_window_end", "trigger_reason"} <= set(fields)
    trainer = defs.resources["trainer"].get_resource_definition().config_schema.as_field().config_type.fields
    assert trainer["device"].description and trainer["num_threads"].description


@pytest.mark.parametrize(("value", "expected"), [
    (25836.981916843626, 25837.0), (2.3456789, 2.346), (0.0012345678, 0.001235), (-1.23456, -1.235),
    (0.0, 0.0), (7, 7.0), (1234.5, 1234.0),
])
def test_rounding_keeps_four_significant_digits_and_every_integer_digit(value, expected):
    assert rounded(value) == expected


def test_rounding_keeps_nan_and_none_as_nan():
    assert math.isnan(rounded(None)) and math.isnan(rounded(float("nan"))) and rounded(math.inf) == math.inf


def _cells(line: str) -> list[str]:
    """A markdown table row's cells, splitting on unescaped pipes as a renderer does."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_markdown_cells_with_newlines_and_pipes_stay_in_their_cell():
    prediction = "The answer is\n| 42 |\r\nreally"
    table = markdown_table(["example_id", "prediction", "score"], [["gsm8k-1", prediction, 0.123456789]])
    lines = table.splitlines()
    assert len(lines) == 3, table  # header, separator, one row: the newlines did not start new rows
    assert _cells(lines[2]) == ["gsm8k-1", r"The answer is<br>\| 42 \|<br>really", "0.1235"]


def test_a_check_failure_with_a_multiline_reason_renders_as_one_table_row():
    result = ExampleCheckResult(check="gsm8k_numeric_targets", checked=2, failures=(
        ExampleFailure(split="test", example_id="q|1", reason="target is not a number:\n'4 apples'"),))
    metadata = _check_result(result, dg.AssetCheckSeverity.WARN, "mine", 3).metadata
    lines = metadata["failures"].value.splitlines()
    assert len(lines) == 3 and _cells(lines[2]) == ["test", r"q\|1", "target is not a number:<br>'4 apples'"]


def test_training_metadata_shows_the_loss_curve_inline_and_rounds_numbers(tmp_path):
    history = [{"step": i, "loss": 3.0 / (i + 1) + 0.123456789} for i in range(40)]
    summary = {"last_step": 39, "final": {"loss": history[-1]["loss"]}, "tokens_per_second": 25836.981916843626,
               "history": history, "metrics_table": "| step |\n|---|", "loss_curve_path": None}
    metadata = training_metadata(summary)
    assert metadata["tokens_per_second"].value == 25837.0
    assert metadata["final/loss"].value == 0.1985
    curve = metadata["loss_curve"].value
    # Under the UI's limit for inline markdown: shown in place, not behind "[Show Markdown]".
    assert curve.startswith("![loss 3.123 → 0.1985](data:image/png;base64,") and len(curve) < UI_INLINE_MARKDOWN_LIMIT


@pytest.mark.slow  # a real (tiny) training run: about 11 s on two busy cores
def test_a_checkpoint_reports_steps_loss_and_throughput_not_a_row_count(tmp_path, resources_for):
    resources = resources_for(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["gsm8k"])
    assert dg.materialize([examples], partition_key="gsm8k", instance=instance, resources=resources).success
    result = dg.materialize([sft_checkpoint], instance=instance, resources=resources, selection=[sft_checkpoint.key],
                            run_config={"ops": {sft_checkpoint.key.to_python_identifier(): {"config": TRAINING}}})
    metadata = result.asset_materializations_for_node(sft_checkpoint.node_def.name)[0].metadata
    assert "dagster/row_count" not in metadata and "rows_in" not in metadata
    assert metadata["steps"].value == 3 and metadata["last_step"].value >= 1
    assert metadata["checkpoint"].value.endswith("checkpoint") or "runs" in metadata["checkpoint"].value
    for name in ("final_loss", "tokens_per_second"):
        value = metadata[name].value
        assert value == rounded(value) and value > 0, (name, value)
    assert len(metadata["loss_curve"].value) < UI_INLINE_MARKDOWN_LIMIT
    run = resources["lake"].lake().read(schemas.TRAINING_RUNS)
    assert metadata["runs_table_version"].value >= 0 and len(run) == 1


def _user_dataset(tmp_path, resources_for) -> tuple[dict, dg.DagsterInstance]:
    resources = resources_for(tmp_path)
    (tmp_path / "drop").mkdir()
    lines = [json.dumps({"id": f"q{i}", "input": f"What is {i}+1?", "target": str(i + 1)}) for i in range(3)]
    (tmp_path / "drop" / "mine.jsonl").write_text("\n".join(lines) + "\n")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datasets", ["mine"])
    return resources, instance


def test_a_dataset_specific_check_is_skipped_on_other_datasets_in_the_instance(tmp_path, resources_for):
    resources, instance = _user_dataset(tmp_path, resources_for)
    result = dg.materialize([examples, *DATASET_CHECKS], partition_key="mine", instance=instance, resources=resources)
    assert result.success
    evaluated = {e.check_name for e in result.get_asset_check_evaluations()}
    assert evaluated == {"unique_example_ids", "non_empty_targets"}

    def status(name: str) -> AssetCheckExecutionResolvedStatus:
        record = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(examples.key, name), limit=1)[0]
        assert record.run_id == result.run_id and record.partition == "mine"
        return asyncio.run(record.resolve_status(LoadingContextForTest(instance)))

    # What the UI reads: SKIPPED for checks that do not apply, SUCCEEDED for those that ran.
    for name in ("gsm8k_numeric_targets", "mmlu_targets_in_range", "humaneval_solutions_pass"):
        assert status(name) == AssetCheckExecutionResolvedStatus.SKIPPED, name
    assert status("non_empty_targets") == AssetCheckExecutionResolvedStatus.SUCCEEDED
    stored = resources["lake"].lake().read(schemas.EXAMPLES)
    assert len(pd.unique(stored["example_id"])) == 3
