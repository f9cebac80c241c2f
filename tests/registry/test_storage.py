"""Artifact stores: local and S3 round trips (a real S3-protocol server), corrupted artifacts refused, hub errors."""

import json
import logging
import os
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crucible.registry.storage import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactRef,
    HubStore,
    HubUnreachableError,
    LocalStore,
    S3Store,
    artifact_sha256,
    artifact_store,
)

KEY = "crucible-sft/v3/checkpoint"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A checkpoint-like folder: config, weights, a nested tokenizer folder."""
    folder = tmp_path / "run" / "checkpoint"
    (folder / "tokenizer" / "extra").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"n_layer": 2, "n_embd": 32}))
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    (folder / "tokenizer" / "extra" / "merges.txt").write_text("a b\n")
    return folder


# -- local ----------------------------------------------------------------------------------------


def test_local_folder_round_trip_preserves_bytes_and_hash(tmp_path, checkpoint):
    store = artifact_store(str(tmp_path / "artifacts"))
    assert isinstance(store, LocalStore)

    ref = store.put(checkpoint, KEY)

    stored = tmp_path / "artifacts" / KEY
    assert ref == ArtifactRef(str(stored), artifact_sha256(checkpoint), sum(map(len, _tree(checkpoint).values())),
                              "local")
    assert _tree(stored) == _tree(checkpoint)
    assert store.exists(ref.uri) and not store.exists(str(tmp_path / "artifacts" / "crucible-sft/v4"))
    fetched = store.get(ref.uri, tmp_path / "fetched" / "ckpt", ref.sha256)
    assert fetched == tmp_path / "fetched" / "ckpt"
    assert _tree(fetched) == _tree(checkpoint)
    # No temp siblings are left beside what was written.
    assert sorted(p.name for p in stored.parent.iterdir()) == ["checkpoint"]
    assert sorted(p.name for p in fetched.parent.iterdir()) == ["ckpt"]


def test_local_single_file_through_file_uri_and_put_replaces_the_key(tmp_path, checkpoint):
    store = artifact_store(f"file://{tmp_path / 'artifacts'}")
    weights = checkpoint / "model.safetensors"

    ref = store.put(weights, "tiny/v1/model.safetensors")
    assert ref.size == 4096 and ref.sha256 == artifact_sha256(weights)
    got = store.get(f"file://{ref.uri}", tmp_path / "out.safetensors", ref.sha256)
    assert got.read_bytes() == weights.read_bytes()

    # A folder put over an older, larger one leaves none of the older files.
    store.put(checkpoint, KEY)
    smaller = checkpoint.parent / "smaller"
    (smaller / "tokenizer").mkdir(parents=True)
    (smaller / "tokenizer" / "vocab.txt").write_text("z\n")
    ref = store.put(smaller, KEY)
    assert _tree(Path(ref.uri)) == {"tokenizer/vocab.txt": b"z\n"}
    assert ref.sha256 == artifact_sha256(smaller)
    assert sorted(p.name for p in Path(ref.uri).parent.iterdir()) == ["checkpoint"]


def test_local_corrupted_artifact_is_refused_and_dest_left_clean(tmp_path, checkpoint):
    store = artifact_store(str(tmp_path / "artifacts"))
    ref = store.put(checkpoint, KEY)
    weights = Path(ref.uri) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(data))

    dest = tmp_path / "fetched" / "ckpt"
    with pytest.raises(ArtifactIntegrityError) as caught:
        store.get(ref.uri, dest, ref.sha256)

    actual = artifact_sha256(ref.uri)
    assert caught.value.expected == ref.sha256 and caught.value.actual == actual
    assert ref.uri in str(caught.value) and ref.sha256 in str(caught.value) and actual in str(caught.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_get_keeps_a_different_artifact_already_at_dest(tmp_path, checkpoint):
    store = artifact_store(str(tmp_path / "artifacts"))
    ref = store.put(checkpoint, KEY)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")

    with pytest.raises(FileExistsError, match="already holds something else"):
        store.get(ref.uri, dest, ref.sha256)
    assert _tree(dest) == {"notes.txt": b"mine"}

    # The same artifact already there is fine (a re-run), and an empty folder is filled.
    again = tmp_path / "again"
    store.get(ref.uri, again, ref.sha256)
    assert store.get(ref.uri, again, ref.sha256) == again
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _tree(store.get(ref.uri, empty, ref.sha256)) == _tree(checkpoint)


def test_bad_inputs_are_named(tmp_path):
    store = artifact_store(str(tmp_path / "artifacts"))
    with pytest.raises(ArtifactNotFoundError, match="no-such-checkpoint does not exist"):
        store.put(tmp_path / "no-such-checkpoint", KEY)
    with pytest.raises(ArtifactNotFoundError, match="gone does not exist"):
        store.get(str(tmp_path / "gone"), tmp_path / "d", "0" * 64)
    (tmp_path / "f.txt").write_text("x")
    for key in ("../escape", "a//b", "", "a/./b"):
        with pytest.raises(ValueError, match="artifact key"):
            store.put(tmp_path / "f.txt", key)
    with pytest.raises(ValueError, match=r"unknown scheme 'gs://'.*s3://bucket/prefix"):
        artifact_store("gs://bucket/models")
    with pytest.raises(TypeError, match="unknown option.*endpoint_ur.*s3://"):
        artifact_store("s3://bucket/models", endpoint_ur="http://x")


# -- S3 against a real S3-protocol server -----------------------------------------------------------


S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture
def s3(s3_endpoint):
    """A fresh bucket on the module's server, a boto3 client to inspect it and a store on ``<bucket>/models``."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"crucible-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    store = artifact_store(f"s3://{bucket}/models", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    assert isinstance(store, S3Store)
    return store, client, bucket


def _keys(client, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_folder_round_trip(tmp_path, checkpoint, s3):
    store, client, bucket = s3

    ref = store.put(checkpoint, KEY)

    assert ref == ArtifactRef(f"s3://{bucket}/models/{KEY}", artifact_sha256(checkpoint),
                              sum(map(len, _tree(checkpoint).values())), "s3")
    assert _keys(client, bucket) == sorted(f"models/{KEY}/{name}" for name in _tree(checkpoint))
    assert store.exists(ref.uri)
    assert not store.exists(f"s3://{bucket}/models/crucible-sft/v3/check")  # a prefix of a name is not a folder
    assert not store.exists(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/models/{KEY}")
    fetched = store.get(ref.uri, tmp_path / "fetched" / "ckpt", ref.sha256)
    assert _tree(fetched) == _tree(checkpoint)
    assert sorted(p.name for p in fetched.parent.iterdir()) == ["ckpt"]


def test_s3_single_file_round_trip_and_put_replaces_stale_objects(tmp_path, checkpoint, s3):
    store, client, bucket = s3
    weights = checkpoint / "model.safetensors"

    ref = store.put(weights, "tiny/v1/model.safetensors")
    assert ref.uri == f"s3://{bucket}/models/tiny/v1/model.safetensors" and ref.size == 4096
    assert store.exists(ref.uri)
    got = store.get(ref.uri, tmp_path / "model.safetensors", ref.sha256)
    assert got.read_bytes() == weights.read_bytes()

    store.put(checkpoint, KEY)
    (checkpoint / "tokenizer" / "extra" / "merges.txt").unlink()
    ref = store.put(checkpoint, KEY)
    assert f"models/{KEY}/tokenizer/extra/merges.txt" not in _keys(client, bucket)
    assert _tree(store.get(ref.uri, tmp_path / "second", ref.sha256)) == _tree(checkpoint)


def test_s3_corrupted_object_is_refused_and_dest_left_clean(tmp_path, checkpoint, s3):
    store, client, bucket = s3
    ref = store.put(checkpoint, KEY)
    client.put_object(Bucket=bucket, Key=f"models/{KEY}/tokenizer/vocab.txt", Body=b"a\nb\nX\n")

    dest = tmp_path / "fetched" / "ckpt"
    with pytest.raises(ArtifactIntegrityError) as caught:
        store.get(ref.uri, dest, ref.sha256)

    tampered = checkpoint / "tokenizer" / "vocab.txt"
    tampered.write_text("a\nb\nX\n")
    assert caught.value.actual == artifact_sha256(checkpoint) != ref.sha256
    assert ref.uri in str(caught.value) and ref.sha256 in str(caught.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_s3_missing_bucket_and_object_are_named(tmp_path, checkpoint, s3_endpoint, s3):
    store, _, bucket = s3
    missing = artifact_store("s3://no-such-bucket-xyz/models", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    with pytest.raises(ArtifactNotFoundError, match="bucket 'no-such-bucket-xyz' does not exist"):
        missing.put(checkpoint, KEY)
    with pytest.raises(ArtifactNotFoundError, match="bucket 'no-such-bucket-xyz' does not exist"):
        missing.get(f"s3://no-such-bucket-xyz/models/{KEY}", tmp_path / "d", "0" * 64)
    with pytest.raises(ArtifactNotFoundError, match=f"bucket '{bucket}' has no object 'models/nothing/here'"):
        store.get(f"s3://{bucket}/models/nothing/here", tmp_path / "d", "0" * 64)
    assert not (tmp_path / "d").exists()


def test_s3_credentials_come_from_the_environment(tmp_path, checkpoint, s3_endpoint, s3, monkeypatch):
    _, _, bucket = s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    # Keep boto3 away from a developer's ~/.aws files and from the instance metadata service.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    anonymous = artifact_store(f"s3://{bucket}/models", endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(PermissionError, match="no S3 credentials.*AWS_ACCESS_KEY_ID"):
        anonymous.put(checkpoint, KEY)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    from_env = artifact_store(f"s3://{bucket}/models", endpoint_url=s3_endpoint, region="us-east-1")
    assert from_env.exists(from_env.put(checkpoint, KEY).uri)


# -- Hugging Face Hub (unreachable here) ------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def online(monkeypatch):
    """Offline mode off, as on a connected machine (the client reads HF_HUB_OFFLINE once, at import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_hub_offline_mode_refuses_every_call_with_what_to_do(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = artifact_store("hf://crucible-org/tiny-sft")
    assert isinstance(store, HubStore)
    uri = f"hf://models/crucible-org/tiny-sft@{'a' * 40}/{KEY}"

    calls = [lambda: store.put(checkpoint, KEY), lambda: store.get(uri, tmp_path / "d", "0" * 64),
             lambda: store.exists(uri)]
    for call in calls:
        with pytest.raises(HubUnreachableError) as caught:
            call()
        message = str(caught.value)
        assert "cannot reach the Hugging Face Hub at https://huggingface.co" in message
        assert "offline: HF_HUB_OFFLINE is set" in message and "use a local or s3:// store" in message
    assert "upload it later with artifact_store('hf://crucible-org/tiny-sft').put(" in str(
        pytest.raises(HubUnreachableError, store.put, checkpoint, KEY).value)
    assert not (tmp_path / "d").exists()


def test_hub_network_error_names_the_endpoint(tmp_path, checkpoint, online, monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    store = artifact_store("hf://crucible-org/tiny-sft", endpoint=endpoint)
    started = time.monotonic()
    with pytest.raises(HubUnreachableError, match=rf"Hub at {endpoint} \(network error: ConnectError"):
        store.put(checkpoint, KEY)
    with pytest.raises(HubUnreachableError, match=rf"Hub at {endpoint} \(network error: ConnectError.*"
                                                  r"while downloading hf://"):
        store.get(f"hf://crucible-org/tiny-sft@main/{KEY}", tmp_path / "d", "0" * 64)
    assert time.monotonic() - started < 10  # fails at the first request, not after the client's retries
    assert not (tmp_path / "d").exists()

    # The endpoint can also come from HF_ENDPOINT, as for the client itself.
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(HubUnreachableError, match=rf"Hub at {endpoint} "):
        artifact_store("hf://crucible-org/tiny-sft").exists(f"hf://crucible-org/tiny-sft/{KEY}")


class _RecordingHub(BaseHTTPRequestHandler):
    """Answers every request 'repo not found' and records the Authorization header it was sent."""

    seen: list[str] = []

    def _answer(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"error": "Repository not found"}).encode()
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recording_hub():
    _RecordingHub.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _RecordingHub.seen
    server.shutdown()
    server.server_close()


def test_hub_token_comes_from_options_or_hf_token_and_is_never_shown(checkpoint, online, recording_hub,
                                                                     monkeypatch, caplog):
    endpoint, seen = recording_hub
    uri = f"hf://crucible-org/tiny-sft@main/{KEY}"
    monkeypatch.setenv("HF_TOKEN", "hf_from_environment")
    caplog.set_level(logging.DEBUG)

    from_env = artifact_store("hf://crucible-org/tiny-sft", endpoint=endpoint)
    assert from_env.exists(uri) is False  # the repo is not there
    from_option = artifact_store("hf://crucible-org/tiny-sft", endpoint=endpoint, token="hf_from_option")
    assert from_option.exists(uri) is False
    with pytest.raises(Exception) as caught:  # noqa: B017 - whatever the hub's refusal, it must not show the token
        from_option.put(checkpoint, KEY)

    assert seen[:2] == ["Bearer hf_from_environment", "Bearer hf_from_option"]
    assert seen[2:] and set(seen[2:]) == {"Bearer hf_from_option"}
    shown = " ".join([caplog.text, str(caught.value), repr(caught.value), repr(from_env), repr(from_option)])
    assert "hf_from_option" not in shown and "hf_from_environment" not in shown


def test_hub_uris_are_checked():
    with pytest.raises(ValueError, match="not a Hugging Face Hub URI"):
        artifact_store("hf://just-a-name-without-org/")
    with pytest.raises(ValueError, match="Hub bucket"):
        artifact_store("hf://buckets/crucible-org/scratch")
