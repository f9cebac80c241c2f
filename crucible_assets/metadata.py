"""Turn what the core reports into Dagster metadata, the same way for every asset."""

import base64
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from crucible.quarantine import StoredTable
from schemas import ALL_TABLES, TableSpec

# Significant digits kept for floats a person reads (losses, rates); integer digits are never dropped.
SIGNIFICANT_DIGITS = 4
# The web UI (1.13) renders a markdown entry inline only when it is shorter than 1,000 characters and puts
# longer ones behind a "[Show Markdown]" link; the inline loss curve is drawn small enough to stay under it.
UI_INLINE_MARKDOWN_LIMIT = 1000
SPARKLINE_SIZE = (160, 48)

_TABLES_BY_PATH = {spec.path: spec for spec in ALL_TABLES}


def rounded(value: float | int | None, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` to ``digits`` significant digits, but never fewer than its integer digits:
    2.3456789 → 2.346, 0.00123456 → 0.001235, 25836.98 → 25837.0. None, NaN and inf give NaN/inf."""
    if value is None:
        return float("nan")
    number = float(value)
    if number == 0 or not math.isfinite(number):
        return number
    places = max(0, digits - 1 - math.floor(math.log10(abs(number))))
    return round(number, places)


def metric(value: float | int | None) -> dg.MetadataValue:
    """A float metadata value rounded for reading (see :func:`rounded`)."""
    return dg.MetadataValue.float(rounded(value))


def markdown_cell(value: Any) -> str:
    """``value`` as one markdown table cell: pipes escaped and line breaks shown as ``<br>``, so a prediction
    with newlines or a ``|`` stays in its cell instead of breaking the table."""
    if isinstance(value, float):
        value = rounded(value)
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>") \
        .replace("\r", "<br>")


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table of ``rows`` under ``columns``, every cell escaped with :func:`markdown_cell`."""
    lines = ["| " + " | ".join(markdown_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_markdown(frame: Any) -> str:
    """A pandas DataFrame as an escaped markdown table (see :func:`markdown_table`)."""
    return markdown_table([str(c) for c in frame.columns], frame.itertuples(index=False, name=None))


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The table's columns as the UI shows them, from its Pandera model: name, stored (Arrow) type, nullability,
    key and partition columns, and a description (the field's own, else its checks, e.g. ``isin([...])``)."""
    arrow = spec.arrow_schema()
    columns = []
    for name, column in spec.model.to_schema().columns.items():
        notes = [f"key column of {spec.path}"] if name in spec.keys else []
        if name == spec.partition_by:
            notes.append("partition column")
        described = column.description or column.title or "; ".join(c.error for c in column.checks if c.error)
        columns.append(dg.TableColumn(
            name=name, type=str(arrow.field(name).type), description=described or None,
            constraints=dg.TableColumnConstraints(nullable=column.nullable, unique=spec.keys == (name,),
                                                  other=notes)))
    return dg.TableSchema(columns=columns)


def table_definition_metadata(spec: TableSpec) -> dict[str, Any]:
    """Definition metadata of an asset stored as ``spec``'s Delta table: the catalog shows its columns
    before the asset was ever materialized."""
    return {"table": spec.path, "dagster/column_schema": column_schema(spec)}


def column_schema_metadata(spec: TableSpec) -> dict[str, dg.MetadataValue]:
    """The table's column schema as materialization metadata, for assets that report rows without a write."""
    return {"dagster/column_schema": dg.MetadataValue.table_schema(column_schema(spec))}


def table_metadata(stored: StoredTable) -> dict[str, dg.MetadataValue]:
    """Rows of the table this write left (accepted, in, quarantined), its columns and its Delta version."""
    metadata = {
        "table": dg.MetadataValue.text(stored.table),
        "dagster/row_count": dg.MetadataValue.int(stored.accepted),
        "rows_in": dg.MetadataValue.int(stored.rows_in),
        "quarantined": dg.MetadataValue.int(stored.quarantined),
        "delta_version": dg.MetadataValue.int(stored.version),
    }
    if stored.table in _TABLES_BY_PATH:
        metadata["dagster/column_schema"] = dg.MetadataValue.table_schema(column_schema(_TABLES_BY_PATH[stored.table]))
    return metadata


def run_record_metadata(stored_run: StoredTable) -> dict[str, dg.MetadataValue]:
    """Where a training run's row went (training/runs and its Delta version), without a row count: a checkpoint
    is not a table, and "row count 1" would say nothing about it."""
    return {"runs_table": dg.MetadataValue.text(stored_run.table),
            "runs_table_version": dg.MetadataValue.int(stored_run.version)}


def _png(width: int, height: int, pixels: list[bytearray]) -> bytes:
    """A 1-bit grayscale PNG of ``pixels`` (rows of 0/1, 1 = ink)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = bytearray()
    for row in pixels:
        raw.append(0)  # filter type "none"
        packed = bytearray((width + 7) // 8)
        for x, ink in enumerate(row):
            if not ink:  # white background, black ink
                packed[x // 8] |= 0x80 >> (x % 8)
        raw += packed
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
            + chunk(b"IEND", b""))


def sparkline_png(values: Sequence[float], size: tuple[int, int] = SPARKLINE_SIZE) -> bytes:
    """A small line chart of ``values`` (NaN skipped) as PNG bytes, framed, scaled to its min..max."""
    width, height = size
    points = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    pixels = [bytearray(width) for _ in range(height)]
    for x in range(width):
        pixels[0][x] = pixels[height - 1][x] = 1
    for y in range(height):
        pixels[y][0] = pixels[y][width - 1] = 1
    if points:
        low, high = min(v for _, v in points), max(v for _, v in points)
        span_x, span_y = max(1, len(values) - 1), (high - low) or 1.0

        def place(i: int, v: float) -> tuple[float, float]:
            return 3 + i * (width - 7) / span_x, 3 + (high - v) * (height - 7) / span_y

        coords = [place(i, v) for i, v in points]
        segments = list(zip(coords, coords[1:], strict=False)) or [(coords[0], coords[0])]
        for (x0, y0), (x1, y1) in segments:
            steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
            for s in range(steps + 1):
                x, y = x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps
                pixels[round(y)][round(x)] = 1
    return _png(width, height, pixels)


def inline_image(png: bytes, alt: str) -> dg.MetadataValue:
    """A markdown image the UI shows in place (the PNG must be small: see ``UI_INLINE_MARKDOWN_LIMIT``)."""
    text = f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
    if len(text) >= UI_INLINE_MARKDOWN_LIMIT:
        raise ValueError(f"inline image {alt!r} is {len(text)} characters of markdown; the UI shows only "
                         f"< {UI_INLINE_MARKDOWN_LIMIT} inline: draw it smaller")
    return dg.MetadataValue.md(text)


def training_metadata(summary: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """Asset metadata from a run's metric summary (``MetricHistoryLogger.summary()``): rounded ``final/<metric>``
    floats, ``tokens_per_second``, ``last_step``, the loss curve shown inline (a small line chart, min..max in its
    caption) plus the full plot and its file, and the history as a markdown table and as JSON. An empty summary
    (no history logger) gives no metadata."""
    if not summary:
        return {}
    metadata: dict[str, dg.MetadataValue] = {
        f"final/{name}": metric(value) for name, value in summary["final"].items()
    }
    if summary.get("last_step") is not None:
        metadata["last_step"] = dg.MetadataValue.int(summary["last_step"])
    if summary.get("tokens_per_second") is not None:
        metadata["tokens_per_second"] = metric(summary["tokens_per_second"])
    losses = [record.get("loss") for record in summary.get("history", []) if "loss" in record]
    if losses:
        finite = [v for v in losses if v is not None and math.isfinite(v)]
        caption = f"loss {rounded(finite[0])} → {rounded(finite[-1])}" if finite else "loss (no finite values)"
        metadata["loss_curve"] = inline_image(sparkline_png([math.nan if v is None else v for v in losses]), caption)
    if summary.get("loss_curve_path"):
        path = Path(summary["loss_curve_path"])
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        metadata["loss_curve_full"] = dg.MetadataValue.md(f"![loss curve](data:image/png;base64,{encoded})")
        metadata["loss_curve_path"] = dg.MetadataValue.path(str(path))
    metadata["metrics_table"] = dg.MetadataValue.md(summary["metrics_table"])
    metadata["metrics_history"] = dg.MetadataValue.json(summary["history"])
    return metadata
