"""Where registered artifacts live: a local folder, an S3 bucket or a Hugging Face Hub repo, verified by sha256.

Every backend stores a file or a folder (a checkpoint directory) under a key such as
``crucible-sft/v3/checkpoint`` and returns an :class:`ArtifactRef` holding its URI and content hash
(:func:`artifact_sha256`: a folder hashes its relative file names and contents). ``get`` downloads into a
temporary sibling of ``dest``, checks the hash and only then moves the artifact into place, so a corrupted
download is refused (:class:`ArtifactIntegrityError`) and never left at ``dest``.

``put`` replaces what a key held: a folder put over an older one leaves none of the older files behind
(on S3 and the Hub the new files are written first and the stale ones deleted after, so a reader in
between may see both; registry keys carry a version, so nothing reads a key while it is rewritten).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crucible.registry.versions import artifact_sha256, artifact_size

log = logging.getLogger(__name__)

__all__ = [
    "ArtifactIntegrityError",
    "ArtifactNotFoundError",
    "ArtifactRef",
    "ArtifactStore",
    "HubStore",
    "HubUnreachableError",
    "LocalStore",
    "S3Store",
    "artifact_sha256",
    "artifact_store",
]


@dataclass(frozen=True)
class ArtifactRef:
    """A stored artifact: where it is, its content hash, its size in bytes and which backend holds it."""

    uri: str
    sha256: str
    size: int
    backend: str  # "local" | "s3" | "hf"


class ArtifactIntegrityError(RuntimeError):
    """A fetched artifact whose sha256 is not the one recorded for it; nothing was left at the destination."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        self.uri, self.expected, self.actual = uri, expected, actual
        super().__init__(f"artifact {uri} is corrupted: expected sha256 {expected}, got {actual}; it was not "
                         f"installed. Re-upload it from a good copy or register the artifact again")


class ArtifactNotFoundError(FileNotFoundError):
    """An artifact, a local file, a bucket or a repo path that does not exist."""


class HubUnreachableError(ConnectionError):
    """The Hugging Face Hub cannot be reached (offline mode or a network error)."""


class ArtifactStore(ABC):
    """A place to put artifacts under keys and to fetch them back, verified."""

    backend: str

    @abstractmethod
    def put(self, local_path: str | Path, key: str) -> ArtifactRef:
        """Store the file or folder at ``local_path`` under ``key``, replacing what the key held."""

    @abstractmethod
    def get(self, uri: str, dest: str | Path, sha256: str) -> Path:
        """Fetch ``uri`` to ``dest`` (the artifact's own path), refusing it unless its sha256 is ``sha256``."""

    @abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether an artifact (a file or a folder) is stored at ``uri``."""


def artifact_store(uri_or_root: str, **options: Any) -> ArtifactStore:
    """The store for a root: ``/path`` or ``file://`` (local), ``s3://bucket/prefix``, ``hf://org/repo``.

    S3 options: ``endpoint_url``, ``region``, ``aws_access_key_id``, ``aws_secret_access_key``,
    ``aws_session_token`` (otherwise boto3's usual environment and profile chain). Hub options: ``token``
    (otherwise ``HF_TOKEN``), ``endpoint`` (otherwise ``HF_ENDPOINT``), ``private`` (default True).
    """
    root = str(uri_or_root)
    scheme = root.split("://", 1)[0].lower() if "://" in root else ""
    if scheme in ("", "file"):
        return LocalStore(root, **_checked(options, "a local", ()))
    if scheme == "s3":
        return S3Store(root, **_checked(options, "an s3://", S3Store.OPTIONS))
    if scheme == "hf":
        return HubStore(root, **_checked(options, "an hf://", HubStore.OPTIONS))
    raise ValueError(f"artifact store {root!r}: unknown scheme {scheme + '://'!r}; expected a local path, "
                     f"file://, s3://bucket/prefix or hf://org/repo")


def _checked(options: dict[str, Any], kind: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for {kind} artifact store; expected "
                        f"{', '.join(allowed) or 'none'}")
    return options


# -- shared steps: key checks, sizes, verify-then-install -----------------------------------------


def _clean_key(key: str) -> str:
    parts = str(key).strip("/").split("/")
    if not key or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"artifact key {key!r}: expected a relative path like 'crucible-sft/v3/checkpoint' "
                         f"with no empty, '.' or '..' segments")
    return "/".join(parts)


def _source(local_path: str | Path) -> Path:
    path = Path(local_path)
    if not path.exists():
        raise ArtifactNotFoundError(f"artifact to store {path} does not exist")
    return path


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def _staging(dest: Path):
    """A temporary folder next to ``dest`` (same filesystem, so the final rename is atomic), always removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _verify(path: Path, uri: str, expected: str) -> None:
    actual = artifact_sha256(path)
    if actual != expected:
        raise ArtifactIntegrityError(uri, expected, actual)


def _install(fetched: Path, dest: Path, uri: str, expected: str) -> Path:
    """Verify ``fetched`` and rename it to ``dest``; an existing ``dest`` is kept unless it is the same artifact.

    A different artifact already at ``dest`` is refused rather than deleted: ``dest`` may be anything the
    caller named, and removing a folder that was not ours would lose data.
    """
    _verify(fetched, uri, expected)
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    elif dest.exists():
        if artifact_sha256(dest) == expected:
            return dest
        raise FileExistsError(f"cannot fetch {uri} to {dest}: it already holds something else; remove it "
                              f"or choose another destination")
    os.rename(fetched, dest)
    return dest


def _replace(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing a file atomically and a folder by two renames."""
    if not target.exists() or (target.is_file() and new.is_file()):
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


# -- local folder ---------------------------------------------------------------------------------


class LocalStore(ArtifactStore):
    """Artifacts under a local folder: ``<root>/<key>``, written by copy to a temp sibling then rename."""

    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(_local_path(str(root))).resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def put(self, local_path: str | Path, key: str) -> ArtifactRef:
        source = _source(local_path)
        target = self.root / _clean_key(key)
        with _staging(target) as staging:
            copy = staging / target.name
            if source.is_dir():
                shutil.copytree(source, copy, symlinks=False)
            else:
                shutil.copy2(source, copy)
            # Hash the copy, not the source: the ref must describe the bytes that were stored.
            sha, size = artifact_sha256(copy), artifact_size(copy)
            _replace(copy, target)
        log.info("stored %s at %s (sha256 %s, %d bytes)", source, target, sha, size)
        return ArtifactRef(str(target), sha, size, self.backend)

    def get(self, uri: str, dest: str | Path, sha256: str) -> Path:
        source = Path(_local_path(uri))
        if not source.exists():
            raise ArtifactNotFoundError(f"artifact {uri} does not exist")
        dest = Path(dest)
        with _staging(dest) as staging:
            copy = staging / dest.name
            if source.is_dir():
                shutil.copytree(source, copy)
            else:
                shutil.copy2(source, copy)
            return _install(copy, dest, uri, sha256)

    def exists(self, uri: str) -> bool:
        return Path(_local_path(uri)).exists()


def _local_path(uri: str) -> str:
    return uri.removeprefix("file://")


# -- S3 and S3-compatible servers -----------------------------------------------------------------


class S3Store(ArtifactStore):
    """Artifacts in an S3 bucket under a prefix: a file is one object, a folder one object per file."""

    backend = "s3"
    OPTIONS = ("endpoint_url", "region", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")

    def __init__(self, root: str, endpoint_url: str | None = None, region: str | None = None,
                 aws_access_key_id: str | None = None, aws_secret_access_key: str | None = None,
                 aws_session_token: str | None = None) -> None:
        self.bucket, self.prefix = _split_s3(root)
        self.endpoint_url = endpoint_url
        self._client_options = {
            "endpoint_url": endpoint_url, "region_name": region, "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key, "aws_session_token": aws_session_token,
        }
        self._client: Any = None

    def __repr__(self) -> str:
        where = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3Store('s3://{self.bucket}/{self.prefix}'{where})"

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            options = {name: value for name, value in self._client_options.items() if value is not None}
            self._client = boto3.client("s3", **options)
        return self._client

    def put(self, local_path: str | Path, key: str) -> ArtifactRef:
        source = _source(local_path)
        object_key = "/".join(part for part in (self.prefix, _clean_key(key)) if part)
        sha, size = artifact_sha256(source), artifact_size(source)
        uploads = ({f"{object_key}/{p.relative_to(source).as_posix()}": p for p in _files(source)}
                   if source.is_dir() else {object_key: source})
        with self._errors(f"s3://{self.bucket}/{object_key}"):
            self._require_bucket(object_key)
            for name, path in uploads.items():
                self.client.upload_file(str(path), self.bucket, name, ExtraArgs={"Metadata": {"artifact-sha256": sha}})
            stale = [name for name in self._keys_at(object_key) if name not in uploads]
            for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": name} for name in stale[start:start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        uri = f"s3://{self.bucket}/{object_key}"
        log.info("stored %s at %s (%d objects, sha256 %s, %d bytes)", source, uri, len(uploads), sha, size)
        return ArtifactRef(uri, sha, size, self.backend)

    def get(self, uri: str, dest: str | Path, sha256: str) -> Path:
        bucket, object_key = _split_s3_artifact(uri)
        dest = Path(dest)
        with self._errors(uri), _staging(dest) as staging:
            folder = self._folder_keys(bucket, object_key)
            fetched = staging / dest.name
            if folder:
                for name in folder:
                    path = fetched / name[len(object_key) + 1:]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.client.download_file(bucket, name, str(path))
            elif self._object_exists(bucket, object_key):
                self.client.download_file(bucket, object_key, str(fetched))
            else:
                raise ArtifactNotFoundError(f"no artifact at {uri}: bucket {bucket!r} has no object {object_key!r} "
                                            f"and no objects under {object_key + '/'!r}")
            return _install(fetched, dest, uri, sha256)

    def exists(self, uri: str) -> bool:
        bucket, object_key = _split_s3_artifact(uri)
        from botocore.exceptions import ClientError

        with self._errors(uri):
            try:
                return bool(self._folder_keys(bucket, object_key, limit=1)) or self._object_exists(bucket, object_key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "NoSuchBucket":  # a missing bucket holds nothing
                    return False
                raise

    def _require_bucket(self, object_key: str) -> None:
        """Check the bucket before uploading: an upload's own error would hide which bucket is missing."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                raise ArtifactNotFoundError(f"s3://{self.bucket}/{object_key}: bucket {self.bucket!r} does not "
                                            f"exist at {self.endpoint_url or 'AWS S3'}; create it first or fix "
                                            f"the store's root") from error
            raise

    def _keys_at(self, object_key: str) -> list[str]:
        """The object ``object_key`` itself (when present) and every object under ``object_key/``."""
        keys = self._folder_keys(self.bucket, object_key)
        return keys + [object_key] if self._object_exists(self.bucket, object_key) else keys

    def _folder_keys(self, bucket: str, object_key: str, limit: int | None = None) -> list[str]:
        keys: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{object_key}/")
        for page in pages:
            # Zero-byte "folder/" markers made by consoles are not files of the artifact.
            keys.extend(item["Key"] for item in page.get("Contents", []) if not item["Key"].endswith("/"))
            if limit is not None and len(keys) >= limit:
                break
        return keys

    def _object_exists(self, bucket: str, object_key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=bucket, Key=object_key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    @contextlib.contextmanager
    def _errors(self, uri: str):
        """Turn boto3's errors into ones that name the bucket, the URI and the endpoint."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = self.endpoint_url or "AWS S3"
        try:
            yield
        except S3UploadFailedError as error:
            raise RuntimeError(f"{uri}: S3 at {where} refused an upload ({error})") from error
        except ClientError as error:
            details = error.response.get("Error", {})
            code = details.get("Code")
            if code == "NoSuchBucket":
                bucket = details.get("BucketName") or _split_s3(uri)[0]
                raise ArtifactNotFoundError(f"{uri}: bucket {bucket!r} does not exist at {where}; create it "
                                            f"first or fix the store's root") from error
            raise RuntimeError(f"{uri}: S3 at {where} refused the request ({code}: "
                               f"{details.get('Message', error)})") from error
        except EndpointConnectionError as error:
            raise ConnectionError(f"{uri}: cannot reach S3 at {where} ({error}); check endpoint_url and the "
                                  f"network") from error
        except NoCredentialsError as error:
            raise PermissionError(f"{uri}: no S3 credentials; pass aws_access_key_id/aws_secret_access_key "
                                  f"or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from error


def _split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI; expected s3://bucket/prefix")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket; expected s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _split_s3_artifact(uri: str) -> tuple[str, str]:
    bucket, object_key = _split_s3(uri)
    if not object_key:
        raise ValueError(f"{uri!r} names a whole bucket; expected s3://bucket/path/to/artifact")
    return bucket, object_key


# -- Hugging Face Hub -----------------------------------------------------------------------------


class HubStore(ArtifactStore):
    """Artifacts in a Hugging Face Hub repo; each put is a commit and its URI pins that commit.

    URIs follow the Hub's own form, ``hf://models/org/repo@<commit>/<path>``. The token comes from the
    ``token`` option or ``HF_TOKEN`` (else the client's stored login) and is never logged or repr'd.
    """

    backend = "hf"
    OPTIONS = ("token", "endpoint", "private")

    def __init__(self, root: str, token: str | None = None, endpoint: str | None = None,
                 private: bool = True) -> None:
        from huggingface_hub import HfApi, constants

        self.root = root
        self.location = _parse_hub(root)
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        self.private = private
        self._api = HfApi(endpoint=self.endpoint, token=token or os.environ.get("HF_TOKEN") or None)

    def __repr__(self) -> str:
        return f"HubStore({self.root!r}, endpoint={self.endpoint!r})"

    def put(self, local_path: str | Path, key: str) -> ArtifactRef:
        source = _source(local_path)
        where = self.location
        path_in_repo = "/".join(part for part in (where.path_in_repo, _clean_key(key)) if part)
        sha, size = artifact_sha256(source), artifact_size(source)
        message = f"crucible: store {path_in_repo} (sha256 {sha})"
        hint = f"upload it later with artifact_store({self.root!r}).put({str(source)!r}, {key!r})"
        with self._reachable(f"uploading {path_in_repo} to {where.id}", hint):
            self._api.create_repo(where.id, repo_type=where.type, private=self.private, exist_ok=True)
            if source.is_dir():
                commit = self._api.upload_folder(
                    repo_id=where.id, repo_type=where.type, revision=where.revision, folder_path=source,
                    path_in_repo=path_in_repo, commit_message=message, delete_patterns="*")
            else:
                commit = self._api.upload_file(
                    path_or_fileobj=str(source), repo_id=where.id, repo_type=where.type,
                    revision=where.revision, path_in_repo=path_in_repo, commit_message=message)
        uri = _hub_uri(where.type, where.id, commit.oid, path_in_repo)
        log.info("stored %s at %s (sha256 %s, %d bytes)", source, uri, sha, size)
        return ArtifactRef(uri, sha, size, self.backend)

    def get(self, uri: str, dest: str | Path, sha256: str) -> Path:
        where = _parse_hub(uri)
        dest = Path(dest)
        hint = "fetch it again"
        with self._reachable(f"downloading {uri}", hint), _staging(dest) as staging:
            kind = self._kind(where, uri)
            download = staging / "download"
            common = {"repo_id": where.id, "repo_type": where.type, "revision": where.revision,
                      "local_dir": download}
            if kind == "file":
                self._api.hf_hub_download(filename=where.path_in_repo, **common)
            else:
                self._api.snapshot_download(allow_patterns=f"{where.path_in_repo}/*", **common)
            return _install(download / where.path_in_repo, dest, uri, sha256)

    def exists(self, uri: str) -> bool:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        where = _parse_hub(uri)
        with self._reachable(f"looking up {uri}", "look it up again"):
            try:
                return self._kind(where, uri) is not None
            except (ArtifactNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
                return False

    def _kind(self, where: Any, uri: str) -> str:
        """``file`` or ``folder`` for the path ``uri`` names; raises when the repo or path is missing."""
        from huggingface_hub import RepoFolder
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        if not where.path_in_repo:
            raise ValueError(f"{uri!r} names a whole repo; expected hf://org/repo@<revision>/<path>")
        try:
            infos = self._api.get_paths_info(where.id, [where.path_in_repo], revision=where.revision,
                                             repo_type=where.type)
        except RepositoryNotFoundError as error:
            raise ArtifactNotFoundError(f"{uri}: repo {where.id} does not exist at {self.endpoint} (or the "
                                        f"token cannot see it)") from error
        except RevisionNotFoundError as error:
            raise ArtifactNotFoundError(f"{uri}: repo {where.id} has no revision {where.revision}") from error
        if not infos:
            raise ArtifactNotFoundError(f"{uri}: repo {where.id} has no path {where.path_in_repo} at revision "
                                        f"{where.revision or 'main'}")
        return "folder" if isinstance(infos[0], RepoFolder) else "file"

    @contextlib.contextmanager
    def _reachable(self, doing: str, hint: str):
        """Offline mode and network failures become one error that says what to do instead."""
        from huggingface_hub import constants
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        def unreachable(reason: str) -> HubUnreachableError:
            return HubUnreachableError(f"cannot reach the Hugging Face Hub at {self.endpoint} ({reason}) while "
                                       f"{doing}: {hint} once it is reachable, or use a local or s3:// store")

        # The client reads HF_HUB_OFFLINE once, at import; the variable is checked again here so that
        # setting it later still keeps every call off the network.
        variable = next((name for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                         if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")), None)
        if variable or constants.HF_HUB_OFFLINE:
            raise unreachable(f"offline: {variable or 'HF_HUB_OFFLINE'} is set")
        try:
            yield
        except OfflineModeIsEnabled as error:
            raise unreachable("offline: HF_HUB_OFFLINE is set") from error
        except (*_transport_errors(), LocalEntryNotFoundError) as error:
            # The client wraps a failed download in LocalEntryNotFoundError; the network error is its cause.
            cause = error
            if isinstance(error, LocalEntryNotFoundError):
                cause = error.__cause__ or error.__context__ or error
            raise unreachable(f"network error: {type(cause).__name__}: {_first_line(cause)}") from error


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of the HTTP library the installed huggingface_hub uses (it changed)."""
    import importlib

    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError"),
                         ("requests", "Timeout")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _parse_hub(uri: str) -> Any:
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    try:
        where = parse_hf_uri(uri)
    except HfUriError as error:
        raise ValueError(f"{uri!r} is not a Hugging Face Hub URI ({error}); expected hf://org/repo") from error
    if where.is_bucket:
        raise ValueError(f"{uri!r} is a Hub bucket; artifacts are stored in a model or dataset repo: hf://org/repo")
    return where


def _hub_uri(repo_type: str, repo_id: str, revision: str, path_in_repo: str) -> str:
    from huggingface_hub import HfUri

    return HfUri(type=repo_type, id=repo_id, revision=revision, path_in_repo=path_in_repo).to_uri()
