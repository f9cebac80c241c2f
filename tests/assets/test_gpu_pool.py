"""GPU concurrency: the shipped instance config limits the training pool to one slot, and two runs of a
pooled step on that instance take turns instead of sharing the GPU."""

import json
import shutil
import subprocess
import sys
import textwrap

import dagster as dg
import pytest

from crucible_assets.instance import INSTANCE_CONFIG
from resources.trainer import TRAINING_GPU_POOL

# One run (its own process, as a launched run is) of a step that "trains" for a while in the pool named by
# argv[1] ("" = none), recording when it held the GPU. It waits for argv[3] to exist so that both runs
# start together, whatever their import times.
RUN = textwrap.dedent("""
    import json, os, sys, time
    import dagster as dg

    pool, record, go = sys.argv[1] or None, sys.argv[2], sys.argv[3]

    @dg.op(pool=pool)
    def train_on_gpu():
        started = time.time()
        time.sleep(5)  # long enough that the unpooled pair overlaps even when a loaded machine starts them apart
        with open(record, "a") as out:
            out.write(json.dumps([started, time.time()]) + "\\n")

    @dg.job
    def training():
        train_on_gpu()

    while not os.path.exists(go):
        time.sleep(0.05)
    with dg.DagsterInstance.get() as instance:
        assert training.execute_in_process(instance=instance).success
""")


def instance_home(folder):
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(INSTANCE_CONFIG, home / "dagster.yaml")
    # Create the SQLite storage once: two runs opening a fresh instance at the same moment would race to
    # create its tables ("table already exists"), as launched runs never do on an instance already in use.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
    return home


def test_the_shipped_instance_config_gives_the_training_pool_one_slot(tmp_path):
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path))) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert pools.pool_granularity.value == "op"  # the training step holds the slot, not the whole run
        assert instance.event_log_storage.supports_global_concurrency_limits


@pytest.mark.slow
def test_two_runs_of_a_pooled_step_take_turns(tmp_path):
    script, go = tmp_path / "run.py", tmp_path / "go"
    script.write_text(RUN)
    runs = []
    for name, pool in [("pooled", TRAINING_GPU_POOL), ("free", "")]:
        env = {"DAGSTER_HOME": str(instance_home(tmp_path / name)), "PATH": "/usr/bin:/bin"}
        runs += [subprocess.Popen([sys.executable, str(script), pool, str(tmp_path / f"{name}.jsonl"), str(go)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    go.touch()
    for run in runs:
        output = run.communicate(timeout=120)[0].decode(errors="replace")
        assert run.returncode == 0, output[-2000:]

    first, second = sorted(json.loads(line) for line in (tmp_path / "pooled.jsonl").read_text().splitlines())
    assert second[0] >= first[1], f"the pooled steps overlapped: {first} and {second}"
    # The same two runs outside the pool do overlap: the check sees sharing when it happens.
    first, second = sorted(json.loads(line) for line in (tmp_path / "free.jsonl").read_text().splitlines())
    assert second[0] < first[1], f"unpooled steps did not overlap ({first}, {second}): the check proves nothing"
