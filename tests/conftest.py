"""Shared fixtures: a temporary lake and artifact store, and a real Dagster instance."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def lake(tmp_path):
    from crucible.lake import DeltaLake

    return DeltaLake(tmp_path / "lake")
