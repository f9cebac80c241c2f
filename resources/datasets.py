"""Where datasets come from: the benchmarks shipped with Crucible, and a drop folder for users' own."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml
from pydantic import Field

from crucible.data.loaders import BUILTIN_DATASETS, FieldMapping, LoadResult, load_benchmark, load_file
from resources.lake import default_home

DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet")


def _dataset_name(path: Path) -> str | None:
    for suffix in DATA_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


class DatasetSourcesResource(dg.ConfigurableResource):
    """Built-in benchmarks by name; any ``<drop_folder>/<name>.{jsonl,csv,parquet}`` as a user dataset.

    A user file may sit beside a ``<name>.yaml`` holding its field mapping (``input``, ``target``,
    and optionally ``id``, ``split``, ``messages``); without one the fields are ``input``/``target``.
    """

    drop_folder: str = Field(
        default_factory=lambda: os.environ.get("CRUCIBLE_DATASET_DROP", f"{default_home()}/datasets_drop"))

    def user_files(self) -> dict[str, Path]:
        folder = Path(self.drop_folder)
        if not folder.is_dir():
            return {}
        found = {}
        for path in sorted(folder.iterdir()):
            name = _dataset_name(path)
            if name and name not in BUILTIN_DATASETS:
                found[name] = path
        return found

    def available(self) -> list[str]:
        return sorted(set(BUILTIN_DATASETS) | set(self.user_files()))

    def load(self, name: str, limit: int | None = None) -> LoadResult:
        if name in BUILTIN_DATASETS:
            return load_benchmark(name, limit=limit)
        files = self.user_files()
        if name not in files:
            raise FileNotFoundError(f"dataset {name!r}: not a built-in benchmark ({', '.join(BUILTIN_DATASETS)}) "
                                    f"and no file {name}.<{'|'.join(s[1:] for s in DATA_SUFFIXES)}> in {self.drop_folder}")
        path = files[name]
        mapping_file = path.with_name(f"{name}.yaml")
        fields = yaml.safe_load(mapping_file.read_text()) if mapping_file.is_file() else {}
        try:
            mapping = FieldMapping(**{"input": "input", "target": "target", **(fields or {})})
        except TypeError as error:
            raise ValueError(f"{mapping_file}: bad field mapping ({error}); allowed keys are "
                             "input, target, id, split, messages") from None
        return load_file(path, mapping, dataset=name, limit=limit)
