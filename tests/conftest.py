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


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-protocol server (moto's) on 127.0.0.1, one per test module; its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
