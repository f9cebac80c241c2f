"""Asset checks on datasets/examples, one evaluation per dataset partition.

The checks carry the asset's dynamic ``datasets`` partitions (``partitions_def`` on an asset check, a
preview feature of dagster 1.13): materializing partition ``mmlu`` runs each check on the rows of
``mmlu`` only, and the UI shows the result per dataset. The dataset-specific checks (GSM8K, MMLU,
HumanEval) record no result on other datasets' partitions, which the UI shows as "skipped": each is a
single-check ``multi_asset_check`` with ``can_subset=True``, whose check output is optional, so a run that
leaves it out succeeds and the planned evaluation resolves to SKIPPED (a plain ``asset_check`` must return a
result, and ``passed=True`` would claim a check that never ran).
"""

import warnings
from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd

from crucible.data import checks
from crucible.data.checks import ExampleCheckResult
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import frame_markdown
from crucible_assets.partitions import datasets_partitions
from resources.lake import LakeResource
from schemas import EXAMPLES

# Failing ids beyond this many are counted but not listed in the metadata.
MAX_LISTED = 50


def _partition_rows(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> tuple[pd.DataFrame, int]:
    """The partition's rows of datasets/examples and the Delta version they were read at."""
    store = lake.lake()
    version = store.version(EXAMPLES)
    rows = store.read(EXAMPLES, where={"dataset": context.partition_key},
                      version=version if version >= 0 else None)
    return rows, version


def _check_result(result: ExampleCheckResult, severity: dg.AssetCheckSeverity, dataset: str,
                  version: int) -> dg.AssetCheckResult:
    listed = pd.DataFrame([vars(failure) for failure in result.failures[:MAX_LISTED]],
                          columns=["split", "example_id", "reason"])
    return dg.AssetCheckResult(passed=result.passed, severity=severity, metadata={
        "dataset": dataset, "applicable": True, "examples_table_version": version,
        "checked": result.checked, "failed": result.failed,
        "failing_ids": dg.MetadataValue.json(result.failing_ids[:MAX_LISTED]),
        "failures": dg.MetadataValue.md(frame_markdown(listed)) if len(listed) else "none",
    })


def _dataset_check(name: str, dataset: str | None, run: Callable[[pd.DataFrame], ExampleCheckResult],
                   severity: dg.AssetCheckSeverity, description: str,
                   blocking: bool = False) -> dg.AssetChecksDefinition:
    """An asset check on each datasets/examples partition running ``run`` on its rows; with ``dataset``
    set it applies to that dataset's partition only and is skipped (no result) on the others."""
    with warnings.catch_warnings():
        # Partitioned asset checks are a preview feature; the choice is documented in this module.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        spec = dg.AssetCheckSpec(name, asset=examples, partitions_def=datasets_partitions, blocking=blocking,
                                 description=description)

        @dg.multi_asset_check(specs=[spec], name=f"{examples.key.to_python_identifier()}_{name}",
                              description=description, can_subset=True)
        def check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> Iterator[dg.AssetCheckResult]:
            partition = context.partition_key
            if dataset is not None and partition != dataset:
                context.log.info(f"{name} skipped on {partition}: it only checks {dataset}")
                return
            rows, version = _partition_rows(context, lake)
            yield _check_result(run(rows), severity, partition, version)

    return check


examples_unique_ids = _dataset_check(
    "unique_example_ids", None, checks.unique_example_ids, dg.AssetCheckSeverity.ERROR, blocking=True,
    description="Every example id occurs once per (dataset, split); datasets/splits, keyed by id, waits for it.")
examples_non_empty_targets = _dataset_check(
    "non_empty_targets", None, checks.non_empty_targets, dg.AssetCheckSeverity.ERROR,
    description="Every example has a non-blank target.")
gsm8k_numeric_targets = _dataset_check(
    "gsm8k_numeric_targets", "gsm8k", checks.gsm8k_numeric_targets, dg.AssetCheckSeverity.WARN,
    description="GSM8K targets are plain decimal numbers, as answer extraction can match them.")
mmlu_targets_in_range = _dataset_check(
    "mmlu_targets_in_range", "mmlu", checks.mmlu_targets_in_range, dg.AssetCheckSeverity.WARN,
    description="MMLU targets are choice indices 0-3.")
humaneval_solutions_pass = _dataset_check(
    "humaneval_solutions_pass", "humaneval", checks.humaneval_solutions_pass, dg.AssetCheckSeverity.WARN,
    description="Each HumanEval canonical solution passes its own tests, run in a limited subprocess.")

DATASET_CHECKS = [examples_unique_ids, examples_non_empty_targets, gsm8k_numeric_targets, mmlu_targets_in_range,
                  humaneval_solutions_pass]
