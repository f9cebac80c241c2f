"""An ingest killed part-way (SIGKILL) and run again leaves exactly the rows of an uninterrupted run:
datasets/examples, datasets/splits and quarantine/rows, compared row for row."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from crucible_assets.definitions import build_defs
from crucible_assets.instance import ensure_instance_config
from schemas import EXAMPLES, QUARANTINE, SPLITS

DATASET = "gsm8k"  # 8,792 rows: long enough to be killed in the middle of
CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import dagster as dg
    from crucible_assets.definitions import build_defs
    sys.path.insert(0, "tests/assets")
    from conftest import make_resources

    defs = build_defs(make_resources(Path(sys.argv[1])))
    with dg.DagsterInstance.get() as instance:
        defs.resolve_job_def("dataset_ingest_job").execute_in_process(instance=instance, partition_key=sys.argv[2])
""")
# Columns that record when a row was written, not what it holds.
WRITE_TIME = {"quarantined_at"}


def table_rows(lake, spec) -> pd.DataFrame:
    frame = lake.read(spec)
    frame = frame[[c for c in frame.columns if c not in WRITE_TIME]]
    return frame.sort_values(list(spec.keys)).reset_index(drop=True)


def ingest(root: Path, instance: dg.DagsterInstance, resources_for) -> dict:
    resources = resources_for(root)
    result = build_defs(resources).resolve_job_def("dataset_ingest_job").execute_in_process(
        instance=instance, partition_key=DATASET)
    assert result.success
    return resources


def kill_when_writing(root: Path, home: Path, table: str, timeout: float = 120) -> str:
    """Starts the ingest in a subprocess and SIGKILLs it once a data file of ``table`` exists (its
    Delta write has begun); returns the lake's files at that moment."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), DATASET], cwd=Path(__file__).parents[2],
                             env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    lake = root / "lake"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if (lake / table).is_dir() and any((lake / table).rglob("*.parquet")):
                break
            time.sleep(0.01)
        assert child.poll() is None, "the ingest finished before it could be killed"
        written = sorted(str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_file())
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    return "\n".join(written)


@pytest.mark.slow
@pytest.mark.parametrize("table", ["datasets/examples", "datasets/splits"])
def test_a_killed_ingest_rerun_equals_an_uninterrupted_one(tmp_path, resources_for, monkeypatch, table):
    home = tmp_path / "dagster_home"
    ensure_instance_config(home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("datasets", [DATASET])
        killed_at = kill_when_writing(tmp_path / "killed", home, table)
        assert table in killed_at
        runs = instance.get_runs()
        assert len(runs) == 1 and not runs[0].is_finished  # it died mid-run
        rerun = ingest(tmp_path / "killed", instance, resources_for)
    with dg.DagsterInstance.ephemeral() as fresh:
        fresh.add_dynamic_partitions("datasets", [DATASET])
        clean = ingest(tmp_path / "clean", fresh, resources_for)
    for spec in (EXAMPLES, SPLITS, QUARANTINE):
        got, want = table_rows(rerun["lake"].lake(), spec), table_rows(clean["lake"].lake(), spec)
        if spec is EXAMPLES:
            assert len(want) == 8792
        pd.testing.assert_frame_equal(got, want, obj=spec.path)
