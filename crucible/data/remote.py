"""Datasets that live elsewhere: files and Delta tables on object storage, SQL databases, BigQuery.

A remote dataset is described by a small YAML file, ``<name>.source.yaml``, in the drop folder::

    kind: sql                      # s3 | delta | sql | bigquery
    url: postgresql+psycopg2://reader:${PGPASSWORD}@db.internal:5432/qa
    query: SELECT id, question, answer FROM qa_pairs
    mapping: {input: question, target: answer, id: id}

Fetching copies the rows into a local Parquet (or the object's own format) under a work folder and
loads it through the same loader as a dropped file, so every record is validated and quarantined
the same way; sources read ``<remote location>:<line or row>``. ``${VAR}`` in string values is
read from the environment, so credentials stay out of the file.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crucible.data.loaders import FieldMapping, LoadResult
from crucible.data.loaders.base import DatasetReadError

KINDS = ("s3", "delta", "sql", "bigquery")
SOURCE_SUFFIX = ".source.yaml"
_REQUIRED = {"s3": ("uri",), "delta": ("uri",), "sql": ("url", "query"), "bigquery": ("query",)}
_OPTIONAL = {"s3": ("storage_options",), "delta": ("storage_options", "version"), "sql": (),
             "bigquery": ("project", "location", "api_endpoint")}
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RemoteSourceError(ValueError):
    """A remote source file is wrong, or its data cannot be fetched; the message names the source."""


@dataclass(frozen=True)
class RemoteSource:
    name: str
    kind: str
    options: dict[str, Any]
    mapping: FieldMapping
    split: str = "train"
    path: Path | None = None
    raw_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def location(self) -> str:
        """Where the rows come from, for sources and messages (credentials left out)."""
        if self.kind == "sql":
            return _redacted_url(self.raw_options["url"])
        if self.kind == "bigquery":
            return f"bigquery:{self.options.get('project') or 'default project'}"
        return self.options["uri"]


def _redacted_url(url: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):
        def variable(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise RemoteSourceError(f"{where}: the environment variable {name} is not set")
            return os.environ[name]
        return _VARIABLE.sub(variable, value)
    if isinstance(value, dict):
        return {key: _expand(item, where) for key, item in value.items()}
    return value


def parse_source(name: str, spec: Mapping[str, Any], path: Path | None = None) -> RemoteSource:
    """Check a source description and expand ``${VAR}``; raises RemoteSourceError naming what is wrong."""
    where = f"remote dataset {name!r}" + (f" ({path})" if path else "")
    if not isinstance(spec, Mapping):
        raise RemoteSourceError(f"{where}: expected a mapping with a 'kind', got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise RemoteSourceError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    allowed = {"kind", "mapping", "split", *_REQUIRED[kind], *_OPTIONAL[kind]}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise RemoteSourceError(f"{where}: unknown key(s) {', '.join(unknown)} for kind {kind!r}; "
                                f"allowed: {', '.join(sorted(allowed))}")
    missing = [key for key in _REQUIRED[kind] if not spec.get(key)]
    if missing:
        raise RemoteSourceError(f"{where}: kind {kind!r} needs {', '.join(missing)}")
    mapping = spec.get("mapping") or {}
    if not isinstance(mapping, Mapping) or not set(mapping) <= {"input", "target", "id", "split", "messages"}:
        raise RemoteSourceError(f"{where}: mapping must map some of input, target, id, split, messages to field "
                                f"names, got {mapping!r}")
    raw = {key: spec[key] for key in (*_REQUIRED[kind], *_OPTIONAL[kind]) if key in spec}
    if kind in ("s3", "delta") and not str(raw["uri"]).startswith(("s3://", "s3a://", "file://", "/")):
        raise RemoteSourceError(f"{where}: uri must be s3://bucket/key (or a local path), got {raw['uri']!r}")
    return RemoteSource(name, kind, _expand(raw, where), FieldMapping(**{"input": "input", "target": "target",
                                                                         **mapping}),
                        str(spec.get("split") or "train"), path, raw)


def read_source_file(path: Path) -> RemoteSource:
    name = path.name[: -len(SOURCE_SUFFIX)]
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RemoteSourceError(f"remote dataset {name!r} ({path}): cannot read it ({error})") from None
    return parse_source(name, spec, path)


def load_remote(source: RemoteSource, workdir: Path, *, limit: int | None = None) -> LoadResult:
    """Fetch ``source`` into ``workdir`` and load it like a dropped file (validation, quarantine)."""
    from crucible.data.loaders.generic import load_file

    workdir.mkdir(parents=True, exist_ok=True)
    fetched = _FETCHERS[source.kind](source, workdir)
    if not fetched:
        raise DatasetReadError(f"remote dataset {source.name!r}: {source.location} holds no data files")
    result = LoadResult()
    for local, label in fetched:
        result.extend(load_file(local, source.mapping, dataset=source.name, split=source.split, limit=limit,
                                label=label))
    return result


def _s3_options(options: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in (options.get("storage_options") or {}).items()}


def _boto3_client(storage: Mapping[str, str]):
    import boto3

    names = {"endpoint_url": ("endpoint_url", "aws_endpoint_url", "AWS_ENDPOINT_URL"),
             "region_name": ("region", "aws_region", "AWS_REGION"),
             "aws_access_key_id": ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
             "aws_secret_access_key": ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
             "aws_session_token": ("aws_session_token", "AWS_SESSION_TOKEN")}
    kwargs = {target: next(storage[key] for key in keys if key in storage)
              for target, keys in names.items() if any(key in storage for key in keys)}
    return boto3.client("s3", **kwargs)


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def _fetch_s3(source: RemoteSource, workdir: Path) -> list[tuple[Path, str]]:
    """One object, or every object under a prefix or matching a glob (``s3://b/data/*.jsonl``)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from crucible.data.loaders.base import DATA_FILE_SUFFIXES

    uri = source.options["uri"]
    bucket, key = _split_uri(uri)
    client = _boto3_client(_s3_options(source.options))
    pattern = key if any(char in key for char in "*?[") else None
    prefix = key.split("*")[0].split("?")[0].split("[")[0] if pattern else key
    try:
        listed = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            listed.extend(item["Key"] for item in page.get("Contents", []))
        keys = sorted(k for k in listed if (fnmatch.fnmatchcase(k, pattern) if pattern else
                                            k == key or k.startswith(key.rstrip("/") + "/"))
                      and k.lower().endswith(DATA_FILE_SUFFIXES))
        fetched = []
        for position, object_key in enumerate(keys):
            local = workdir / f"{position:05d}-{Path(object_key).name}"
            client.download_file(bucket, object_key, str(local))
            fetched.append((local, f"s3://{bucket}/{object_key}"))
        return fetched
    except (BotoCoreError, ClientError) as error:
        raise DatasetReadError(f"remote dataset {source.name!r}: cannot read {uri}: {error}") from None


def _fetch_delta(source: RemoteSource, workdir: Path) -> list[tuple[Path, str]]:
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    uri = source.options["uri"]
    try:
        table = DeltaTable(uri, storage_options=_s3_options(source.options) or None,
                           version=source.options.get("version"))
        data = table.to_pyarrow_table()
    except Exception as error:  # deltalake raises its own error types for missing tables, credentials, network
        raise DatasetReadError(f"remote dataset {source.name!r}: cannot read the Delta table {uri}: "
                               f"{type(error).__name__}: {error}") from None
    local = workdir / "delta.parquet"
    pq.write_table(data, local)
    return [(local, f"{uri}@v{table.version()}")]


def _fetch_sql(source: RemoteSource, workdir: Path) -> list[tuple[Path, str]]:
    import pandas as pd
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(source.options["url"])
    except (sqlalchemy.exc.ArgumentError, ImportError) as error:
        raise RemoteSourceError(f"remote dataset {source.name!r}: bad database URL {source.location}: {error}") \
            from None
    try:
        with engine.connect() as connection:
            frame = pd.read_sql_query(sqlalchemy.text(source.options["query"]), connection)
    except sqlalchemy.exc.SQLAlchemyError as error:
        problem = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise DatasetReadError(f"remote dataset {source.name!r}: query on {source.location} failed: {problem}") \
            from None
    finally:
        engine.dispose()
    local = workdir / "query.parquet"
    frame.to_parquet(local, index=False)
    return [(local, f"{source.location}[query]")]


def _fetch_bigquery(source: RemoteSource, workdir: Path) -> list[tuple[Path, str]]:
    """Through the official client (``google-cloud-bigquery``) and Application Default Credentials."""
    try:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import bigquery
    except ImportError:
        raise RemoteSourceError(f"remote dataset {source.name!r}: BigQuery needs the google-cloud-bigquery package "
                                "(pip install google-cloud-bigquery)") from None
    import requests

    options = source.options
    client_options = {"api_endpoint": options["api_endpoint"]} if options.get("api_endpoint") else None
    try:
        client = bigquery.Client(project=options.get("project"), location=options.get("location"),
                                 client_options=client_options)
        data = client.query(options["query"]).result(timeout=60).to_arrow()
    except auth_exceptions.DefaultCredentialsError as error:
        raise DatasetReadError(
            f"remote dataset {source.name!r}: no Google credentials for BigQuery ({error}); run "
            "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS") from None
    except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, requests.RequestException,
            OSError) as error:
        raise DatasetReadError(f"remote dataset {source.name!r}: BigQuery is unreachable or refused the query "
                               f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") \
            from None
    import pyarrow.parquet as pq

    local = workdir / "bigquery.parquet"
    pq.write_table(data, local)
    return [(local, f"{source.location}[query]")]


_FETCHERS = {"s3": _fetch_s3, "delta": _fetch_delta, "sql": _fetch_sql, "bigquery": _fetch_bigquery}
