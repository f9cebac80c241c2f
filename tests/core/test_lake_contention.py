"""8 writer processes per write kind on one table: every write returns and the table holds exactly the expected rows."""

import multiprocessing
import time

import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from crucible.lake import DeltaLake
from schemas import TRAINING_METRICS, TableSpec

WRITERS = 8
WRITES = 3
ROWS = 4


class AuditSchema(pa.DataFrameModel):
    event_id: Series[str]
    writer: Series[int]


class SliceSchema(pa.DataFrameModel):
    slice: Series[str]
    writer: Series[int]
    write: Series[int]
    item: Series[int]


AUDIT = TableSpec("test", "audit", AuditSchema, ("event_id",))
SLICES = TableSpec("test", "slices", SliceSchema, ("slice", "item"), "slice")
SAME_SLICE = TableSpec("test", "same_slice", SliceSchema, ("slice", "item"))


def slice_rows(name: str, writer: int, write: int) -> pd.DataFrame:
    return pd.DataFrame({"slice": [name] * ROWS, "writer": [writer] * ROWS, "write": [write] * ROWS,
                         "item": list(range(ROWS))})


def warm_up(seconds: float) -> None:
    time.sleep(seconds)


def write_as(task: tuple[str, str, int, float]) -> list[int]:
    """One writer process: ``WRITES`` writes of one kind, all writers starting at ``start_at``; the retries of each."""
    root, kind, writer, start_at = task
    lake = DeltaLake(root)
    time.sleep(max(0.0, start_at - time.time()))
    retries = []
    for write in range(WRITES):
        if kind == "append":
            result = lake.append(AUDIT, pd.DataFrame({"event_id": [f"w{writer}-{write}-{i}" for i in range(ROWS)],
                                                      "writer": [writer] * ROWS}))
        elif kind == "merge":
            result = lake.upsert(TRAINING_METRICS, pd.DataFrame({
                "run_id": [f"w{writer}"] * ROWS, "step": [write * ROWS + i for i in range(ROWS)],
                "name": ["loss"] * ROWS, "value": [float(write)] * ROWS}))
        elif kind == "replace different slices":
            result = lake.replace_where(SLICES, slice_rows(f"w{writer}", writer, write), {"slice": f"w{writer}"})
        else:
            result = lake.replace_where(SAME_SLICE, slice_rows("same", writer, write), {"slice": "same"})
        retries.append(result.retries)
    return retries


@pytest.mark.slow
def test_eight_writer_processes_of_each_kind_lose_nothing(tmp_path):
    root = str(tmp_path / "lake")
    kinds = ["append", "merge", "replace different slices", "replace same slice"]
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        pool.map(warm_up, [0.5] * WRITERS, chunksize=1)  # every worker imports this module before the race
        outcomes = {}
        for kind in kinds:
            start_at = time.time() + 1.0
            outcomes[kind] = pool.map(write_as, [(root, kind, w, start_at) for w in range(WRITERS)], chunksize=1)
    lake = DeltaLake(root)
    for kind, retries in outcomes.items():
        assert len(retries) == WRITERS and all(len(r) == WRITES for r in retries), kind

    audit = lake.read(AUDIT)
    assert len(audit) == WRITERS * WRITES * ROWS and audit["event_id"].is_unique

    metrics = lake.read(TRAINING_METRICS)
    assert len(metrics) == WRITERS * WRITES * ROWS
    assert not metrics.duplicated(["run_id", "step", "name"]).any()

    slices = lake.read(SLICES)
    assert len(slices) == WRITERS * ROWS and (slices["write"] == WRITES - 1).all()  # each slice's last write
    assert slices.groupby("slice").size().to_dict() == {f"w{w}": ROWS for w in range(WRITERS)}

    same = lake.read(SAME_SLICE)
    assert len(same) == ROWS and same["writer"].nunique() == 1 and same["write"].nunique() == 1
    assert sorted(same["item"]) == list(range(ROWS))
    # The contention was real: some write of a conflicting kind had to retry.
    assert sum(map(sum, outcomes["merge"])) + sum(map(sum, outcomes["replace same slice"])) > 0
