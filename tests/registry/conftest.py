"""Registry fixtures: principals of each role, a local artifact store, and checkpoints with distinct weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from crucible.registry.access import Principal
from crucible.registry.registry import Registry

ADMIN = Principal("ada", frozenset({"admin"}))
TRAINER = Principal("tom", frozenset({"trainer"}))
APPROVER = Principal("amy", frozenset({"approver"}))
VIEWER = Principal("val", frozenset({"viewer"}))


def make_checkpoint(folder: Path, seed: int) -> Path:
    """A checkpoint folder whose weights differ for every seed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(seed.to_bytes(8, "little") + b"w" * 64)
    (folder / "config.json").write_text('{"n_layer": 2}')
    return folder


def register(registry: Registry, checkpoint: Path, model: str = "tiny", **overrides) -> object:
    arguments = {"training_run_id": f"run-{checkpoint.name}", "dataset": "gsm8k", "dataset_version": 3,
                 "metrics": {"gsm8k/exact_match": 0.25}, "tags": ["math"]}
    return registry.register(model, {"checkpoint": checkpoint}, **{**arguments, **overrides})


@pytest.fixture
def store(tmp_path):
    from crucible.registry.storage import LocalStore

    return LocalStore(tmp_path / "artifacts")


@pytest.fixture
def admin(lake, store) -> Registry:
    return Registry(lake, ADMIN, store)


@pytest.fixture
def checkpoints(tmp_path):
    return lambda seed: make_checkpoint(tmp_path / f"ckpt-{seed}", seed)
