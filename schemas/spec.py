"""What a Delta table is: its place in the lake, its Pandera model, its key and its partition column.

The Arrow schema of every table is derived from its Pandera model, so the model stays the one
source of truth for columns and types.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

import pandera.pandas as pa
import pyarrow as pa_arrow

_ARROW_TYPES = {
    "str": pa_arrow.string(),
    "string": pa_arrow.string(),
    "int64": pa_arrow.int64(),
    "int32": pa_arrow.int32(),
    "Int64": pa_arrow.int64(),  # a nullable int column (pandas Int64)
    "float64": pa_arrow.float64(),
    "float32": pa_arrow.float32(),
    "bool": pa_arrow.bool_(),
    "date": pa_arrow.date32(),
    "datetime64[us, UTC]": pa_arrow.timestamp("us", tz="UTC"),
    "datetime64[ns, UTC]": pa_arrow.timestamp("us", tz="UTC"),
}


@dataclass(frozen=True)
class TableSpec:
    """A Delta table under ``<lake root>/<group>/<name>``.

    ``schema_version`` is stored in the Delta table (property ``crucible.schema_version``); raise it
    together with a step in ``crucible/migrations.py`` whenever the model changes.
    """

    group: str
    name: str
    model: type[pa.DataFrameModel]
    keys: tuple[str, ...]
    partition_by: str | None = None
    schema_version: int = 1

    @property
    def path(self) -> str:
        return f"{self.group}/{self.name}"

    @property
    def columns(self) -> list[str]:
        return list(self.model.to_schema().columns)

    def arrow_schema(self) -> pa_arrow.Schema:
        fields = []
        # Pandera stores Series[bytes] as a plain object column: the annotation says it is binary.
        hints = typing.get_type_hints(self.model)
        for name, column in self.model.to_schema().columns.items():
            dtype = str(column.dtype)
            if dtype == "object" and typing.get_args(hints.get(name)) == (bytes,):
                fields.append(pa_arrow.field(name, pa_arrow.binary(), nullable=column.nullable))
                continue
            if dtype not in _ARROW_TYPES:
                raise TypeError(f"table {self.path}: column {name!r} has dtype {dtype!r} with no Arrow mapping")
            fields.append(pa_arrow.field(name, _ARROW_TYPES[dtype], nullable=column.nullable))
        return pa_arrow.schema(fields)
