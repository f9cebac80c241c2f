"""Dataset loaders: benchmarks and user files in, examples-table records (and the rows that failed) out."""

from crucible.data.loaders.base import (
    BINARY_MARKER,
    EXAMPLE_COLUMNS,
    MAX_NESTING,
    DatasetReadError,
    FileError,
    LoadError,
    LoadResult,
)
from crucible.data.loaders.generic import FieldMapping, HubUnreachableError, load_file, load_hf_dataset
from crucible.data.loaders.gsm8k import load_gsm8k
from crucible.data.loaders.humaneval import load_humaneval
from crucible.data.loaders.mmlu import load_mmlu
from crucible.data.loaders.norobots import load_norobots
from crucible.data.loaders.registry import BUILTIN_DATASETS, Benchmark, load_benchmark

__all__ = [
    "BINARY_MARKER",
    "BUILTIN_DATASETS",
    "EXAMPLE_COLUMNS",
    "MAX_NESTING",
    "Benchmark",
    "DatasetReadError",
    "FieldMapping",
    "FileError",
    "HubUnreachableError",
    "LoadError",
    "LoadResult",
    "load_benchmark",
    "load_file",
    "load_gsm8k",
    "load_hf_dataset",
    "load_humaneval",
    "load_mmlu",
    "load_norobots",
]
