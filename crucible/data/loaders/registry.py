"""The benchmarks Crucible ships, by name, and the one call that loads any of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from crucible.data.loaders.base import LoadResult
from crucible.data.loaders.gsm8k import load_gsm8k
from crucible.data.loaders.humaneval import load_humaneval
from crucible.data.loaders.mmlu import load_mmlu
from crucible.data.loaders.norobots import load_norobots

SHIPPED_DATA = Path(__file__).resolve().parent.parent / "files"


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A shipped benchmark: its loader, the splits of the shipped copy and where that copy lives."""

    name: str
    description: str
    splits: tuple[str, ...]
    load: Callable[[Path, Iterable[str] | None, int | None], LoadResult]

    @property
    def default_root(self) -> Path:
        return SHIPPED_DATA / self.name


BUILTIN_DATASETS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (
        Benchmark("gsm8k", "Grade-school math word problems with numeric answers", ("train", "test"), load_gsm8k),
        Benchmark("humaneval", "Python function completion checked by unit tests", ("test",), load_humaneval),
        Benchmark("mmlu", "Four-choice questions in 57 subjects", ("dev", "val", "test"), load_mmlu),
        Benchmark("norobots", "Instruction chats (hand-written sample in the NoRobots format)", ("train", "test"),
                  load_norobots),
    )
}


def load_benchmark(name: str, root: str | Path | None = None, splits: Iterable[str] | None = None,
                   limit: int | None = None) -> LoadResult:
    """Load a benchmark by name from ``root`` (the shipped copy by default); ``limit`` caps each split."""
    if name not in BUILTIN_DATASETS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BUILTIN_DATASETS)}")
    benchmark = BUILTIN_DATASETS[name]
    return benchmark.load(Path(root) if root is not None else benchmark.default_root, splits, limit)
