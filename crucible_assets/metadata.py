"""Turn what the core reports into Dagster metadata, the same way for every asset."""

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from crucible.quarantine import StoredTable


def table_metadata(stored: StoredTable) -> dict[str, dg.MetadataValue]:
    """Row counts (accepted, in, quarantined) and the Delta version a write produced."""
    return {
        "table": dg.MetadataValue.text(stored.table),
        "dagster/row_count": dg.MetadataValue.int(stored.accepted),
        "rows_in": dg.MetadataValue.int(stored.rows_in),
        "quarantined": dg.MetadataValue.int(stored.quarantined),
        "delta_version": dg.MetadataValue.int(stored.version),
    }


def training_metadata(summary: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """Asset metadata from a run's metric summary (``MetricHistoryLogger.summary()``): ``final/<metric>``
    floats, ``tokens_per_second``, ``last_step``, the history as a markdown table and as JSON, and the
    loss curve (inline image and file path). An empty summary (no history logger) gives no metadata."""
    if not summary:
        return {}
    metadata: dict[str, dg.MetadataValue] = {
        f"final/{name}": dg.MetadataValue.float(float("nan") if value is None else value)
        for name, value in summary["final"].items()
    }
    if summary.get("last_step") is not None:
        metadata["last_step"] = dg.MetadataValue.int(summary["last_step"])
    if summary.get("tokens_per_second") is not None:
        metadata["tokens_per_second"] = dg.MetadataValue.float(summary["tokens_per_second"])
    metadata["metrics_table"] = dg.MetadataValue.md(summary["metrics_table"])
    metadata["metrics_history"] = dg.MetadataValue.json(summary["history"])
    if summary.get("loss_curve_path"):
        path = Path(summary["loss_curve_path"])
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        metadata["loss_curve"] = dg.MetadataValue.md(f"![loss curve](data:image/png;base64,{encoded})")
        metadata["loss_curve_path"] = dg.MetadataValue.path(str(path))
    return metadata
