"""Runs 8 writer processes against one Delta table for each write kind (append, merge, replace on
different slices, replace on one slice), through crucible's lake (retries with backoff until a
deadline) and through plain deltalake write_deltalake / merge with no retries, in the same run.

Prints rows landed per second, the share of writes that needed a retry (ours) or failed (peer),
and the ratio. Run: python bench/bench_contention.py [--writers 8] [--writes 5] [--rows 50]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from crucible.lake import DeltaLake
from schemas import TableSpec

KINDS = ("append", "merge", "replace different slices", "replace same slice")


class BenchRowsSchema(pa.DataFrameModel):
    slice: Series[str]
    key: Series[str]
    writer: Series[int]
    value: Series[float]


def _spec(kind: str) -> TableSpec:
    name = kind.replace(" ", "_")
    return TableSpec("bench", name, BenchRowsSchema, ("key",), "slice" if "slices" in kind else None)


@dataclass(frozen=True)
class Task:
    root: str
    kind: str
    writer: int
    writes: int
    rows: int
    start_at: float
    ours: bool


def _rows(task: Task, write: int) -> pd.DataFrame:
    slice_ = "same" if task.kind == "replace same slice" else f"w{task.writer}"
    keys = [f"w{task.writer}-{write}-{i}" for i in range(task.rows)]
    return pd.DataFrame({"slice": [slice_] * task.rows, "key": keys, "writer": [task.writer] * task.rows,
                         "value": [float(write)] * task.rows})


def _write(task: Task) -> tuple[int, int, int]:
    """One writer process: (writes that succeeded, writes that needed a retry or failed, seconds busy x1000)."""
    from deltalake import DeltaTable, write_deltalake

    spec = _spec(task.kind)
    lake = DeltaLake(task.root)
    time.sleep(max(0.0, task.start_at - time.time()))
    started = time.perf_counter()
    ok = troubled = 0
    for write in range(task.writes):
        frame = _rows(task, write)
        if task.ours:
            if task.kind == "append":
                result = lake.append(spec, frame)
            elif task.kind == "merge":
                result = lake.upsert(spec, frame)
            else:
                result = lake.replace_where(spec, frame, {"slice": frame["slice"].iloc[0]})
            ok += 1
            troubled += result.retries > 0
            continue
        data = lake._to_arrow(spec, frame)  # same validated Arrow data as ours: only the write differs
        try:
            if task.kind == "append":
                write_deltalake(lake.uri(spec), data, mode="append")
            elif task.kind == "merge":
                (DeltaTable(lake.uri(spec)).merge(data, "t.key = s.key", source_alias="s", target_alias="t")
                 .when_matched_update_all().when_not_matched_insert_all().execute())
            else:
                write_deltalake(lake.uri(spec), data, mode="overwrite",
                                predicate=f"slice = '{frame['slice'].iloc[0]}'")
            ok += 1
        except Exception:  # noqa: BLE001 - the peer has no retries: any failed write counts as lost
            troubled += 1
    return ok, troubled, int((time.perf_counter() - started) * 1000)


def _warm(task: Task) -> None:
    """First imports, schema compilation and table loads happen here, outside the timed runs."""
    _write(task)
    _write(Task(task.root, task.kind, task.writer, task.writes, task.rows, task.start_at, not task.ours))


def _run(pool, root: str, kind: str, args: argparse.Namespace, ours: bool) -> tuple[float, int, int, int]:
    """(rows landed per second, writes ok, writes retried or failed, rows in the table)."""
    DeltaLake(root).ensure(_spec(kind))
    start_at = time.time() + 1.0
    tasks = [Task(root, kind, w, args.writes, args.rows, start_at, ours) for w in range(args.writers)]
    began = time.time()
    results = pool.map(_write, tasks, chunksize=1)
    elapsed = time.time() - max(began, start_at)
    ok = sum(r[0] for r in results)
    troubled = sum(r[1] for r in results)
    stored = len(DeltaLake(root).read(_spec(kind)))
    return ok * args.rows / elapsed, ok, troubled, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--writes", type=int, default=5)
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args()
    total = args.writers * args.writes
    print(f"{args.writers} writer processes x {args.writes} writes x {args.rows} rows; {os.cpu_count()} CPUs; "
          f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder, multiprocessing.get_context("spawn").Pool(args.writers) as pool:
        warm = [Task(f"{folder}/warm/{w}", "merge", w, 2, args.rows, 0.0, True) for w in range(args.writers)]
        pool.map(_warm, warm, chunksize=1)
        for kind in KINDS:
            ours = _run(pool, f"{folder}/ours", kind, args, ours=True)
            peer = _run(pool, f"{folder}/peer", kind, args, ours=False)
            print(f"{kind:<26} ours {ours[0]:8.0f} rows/s, {ours[1]}/{total} ok, {ours[2] / total:4.0%} retried, "
                  f"{ours[3]:5d} rows stored | deltalake no retries {peer[0]:8.0f} rows/s, {peer[2]}/{total} failed, "
                  f"{peer[3]:5d} rows stored | rows/s ratio ours/peer x{ours[0] / peer[0]:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
