"""Registry writes from many processes at once: distinct version numbers, nothing lost, one production version,
one version for the same weights."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from crucible.lake import DeltaLake
from crucible.registry.registry import Registry, lineage_edges
from crucible.registry.storage import LocalStore
from crucible.registry.versions import artifact_sha256
from schemas import ARTIFACTS
from tests.registry.conftest import ADMIN, make_checkpoint, register

WRITERS = 8


def registry_at(root: Path) -> Registry:
    return Registry(DeltaLake(root / "lake"), ADMIN, LocalStore(root / "artifacts"))


def warm_up(seconds: float) -> None:
    time.sleep(seconds)


def register_at(task: tuple[Path, int, float]) -> tuple[int, int, float]:
    """One process registers checkpoint ``seed`` when the clock reaches ``start_at``."""
    root, seed, start_at = task
    registry = registry_at(root)
    checkpoint = make_checkpoint(root / f"ckpt-{seed}", seed)
    time.sleep(max(0.0, start_at - time.time()))
    began = time.monotonic()
    version = register(registry, checkpoint, stage="staging")
    return seed, version.version, time.monotonic() - began


def register_same_weights_at(task: tuple[Path, int, float]) -> tuple[int, int | None]:
    root, writer, start_at = task
    registry = registry_at(root)
    checkpoint = make_checkpoint(root / f"same-{writer}", 1000)  # identical bytes in every process
    time.sleep(max(0.0, start_at - time.time()))
    version = register(registry, checkpoint)
    return version.version, version.duplicate_of


def promote_at(task: tuple[Path, int, float]) -> str:
    root, version, start_at = task
    registry = registry_at(root)
    time.sleep(max(0.0, start_at - time.time()))
    return registry.transition("tiny", version, "production").event_id


@pytest.mark.slow
def test_eight_processes_registering_at_once_get_eight_versions_and_one_production(tmp_path):
    with multiprocessing.get_context("spawn").Pool(WRITERS) as pool:
        pool.map(warm_up, [0.5] * WRITERS, chunksize=1)  # every worker imports this module before the race
        start_at = time.time() + 1.0
        registered = pool.map(register_at, [(tmp_path, seed, start_at) for seed in range(WRITERS)], chunksize=1)
        start_at = time.time() + 1.0
        promoted = pool.map(promote_at, [(tmp_path, v, start_at) for v in range(1, WRITERS + 1)], chunksize=1)
        start_at = time.time() + 1.0
        same = pool.map(register_same_weights_at, [(tmp_path, w, start_at) for w in range(4)], chunksize=1)

    registry = registry_at(tmp_path)
    assert sorted(v for _, v, _ in registered) == list(range(1, WRITERS + 1))
    versions = registry.list_versions("tiny")
    assert list(versions["version"]) == list(range(1, WRITERS + 2))  # the last one: the same-weights phase
    for seed, number, _ in registered:  # each number holds the weights, artifacts and lineage of its own process
        version = registry.get("tiny", number)
        assert version.sha256 == artifact_sha256(tmp_path / f"ckpt-{seed}")
        assert artifact_sha256(version.artifact("checkpoint").uri) == version.sha256
        assert {h.source for h in registry.ancestors(version)} == {f"run:run-ckpt-{seed}", "dataset:gsm8k@v3"}
    # Renumbered registrations rewrote their own staged rows: no leftovers, every edge points at its version.
    assert lake_registrations(registry) == set(versions["registration_id"])
    assert set(lineage_edges(registry.lake)["target"]) == {f"model:tiny/v{v}" for v in range(1, WRITERS + 2)}

    # Every promotion committed against what the others had done: exactly one is left in production.
    assert len(set(promoted)) == WRITERS
    stages = versions.loc[versions["version"] <= WRITERS, "stage"].value_counts().to_dict()
    assert stages == {"production": 1, "archived": WRITERS - 1}
    events = registry.audit_log("tiny", action="promote")
    archived = sorted(v for e in events for v in e.details["archived"])
    assert archived == sorted(e.version for e in events if e.version != registry.get("tiny", "production").version)

    # The same weights from four processes at once: one version, the others report it as their duplicate.
    assert [version for version, _ in same] == [WRITERS + 1] * 4
    assert sorted(str(duplicate_of) for _, duplicate_of in same) == [str(WRITERS + 1)] * 3 + ["None"]
    print(f"registration seconds per process: {sorted(round(s, 2) for _, _, s in registered)}")


def lake_registrations(registry: Registry) -> set[str]:
    return set(registry.lake.read(ARTIFACTS)["registration_id"])
