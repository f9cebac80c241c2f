"""Remote dataset sources by configuration only: files and Delta tables on a real S3-protocol server
(moto), a SQL database on a real PostgreSQL server, and BigQuery's clear error when it cannot be reached."""

import gzip
import json
import os
import uuid

import dagster as dg
import pandas as pd
import pytest

from crucible.data.remote import RemoteSourceError, parse_source
from resources.datasets import DatasetSourcesResource
from tests.assets.conftest import make_resources
from tests.support.postgres import postgres_bin_dir, start_postgres

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region": "us-east-1"}


@pytest.fixture
def bucket(s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    name = f"data-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return client, name


def _write_source(folder, name: str, spec: dict) -> None:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.source.yaml").write_text(yaml.safe_dump(spec))


def test_files_under_an_s3_prefix_load_with_validation(tmp_path, bucket, s3_endpoint):
    client, name = bucket
    good = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    lines = [json.dumps(row) for row in good[:3]] + ["{not json"] + [json.dumps(row) for row in good[3:]]
    client.put_object(Bucket=name, Key="qa/part-0.jsonl", Body="\n".join(lines).encode())
    client.put_object(Bucket=name, Key="qa/part-1.jsonl.gz",
                      Body=gzip.compress(json.dumps({"question": "q9", "answer": "a9"}).encode()))
    client.put_object(Bucket=name, Key="qa/README.md", Body=b"not data")
    _write_source(tmp_path / "drop", "qa-s3", {
        "kind": "s3", "uri": f"s3://{name}/qa/", "mapping": {"input": "question", "target": "answer"},
        "storage_options": {"endpoint_url": s3_endpoint, **CREDENTIALS}})
    sources = DatasetSourcesResource(drop_folder=str(tmp_path / "drop"))
    assert "qa-s3" in sources.scan().files
    result = sources.load("qa-s3")
    assert sorted(record["input"] for record in result.records) == ["q0", "q1", "q2", "q3", "q4", "q9"]
    assert [error.source for error in result.errors] == [f"s3://{name}/qa/part-0.jsonl:4"]


def test_a_delta_table_on_s3_loads_at_its_version(tmp_path, bucket, s3_endpoint):
    from deltalake import write_deltalake

    _client, name = bucket
    storage = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    uri = f"s3://{name}/tables/qa"
    write_deltalake(uri, pd.DataFrame({"input": ["a", "b"], "target": ["1", "2"]}), storage_options=storage)
    write_deltalake(uri, pd.DataFrame({"input": ["c"], "target": ["3"]}), mode="append", storage_options=storage)
    drop = tmp_path / "drop"
    _write_source(drop, "qa-delta", {"kind": "delta", "uri": uri, "storage_options": storage})
    assert sorted(r["input"] for r in DatasetSourcesResource(drop_folder=str(drop)).load("qa-delta").records) == \
        ["a", "b", "c"]
    _write_source(drop, "qa-delta", {"kind": "delta", "uri": uri, "storage_options": storage, "version": 0})
    assert sorted(r["input"] for r in DatasetSourcesResource(drop_folder=str(drop)).load("qa-delta").records) == \
        ["a", "b"]
    _write_source(drop, "qa-delta", {"kind": "delta", "uri": f"s3://{name}/tables/missing", "storage_options": storage})
    with pytest.raises(OSError, match="qa-delta.*cannot read the Delta table s3://.*/tables/missing"):
        DatasetSourcesResource(drop_folder=str(drop)).load("qa-delta")


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    if postgres_bin_dir() is None and os.environ.get("CI") != "true":
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh apt-installs it)")
    server, stop = start_postgres(tmp_path_factory.mktemp("postgres-sources"))
    yield server
    stop()


def test_a_sql_query_materializes_as_a_dataset_partition(tmp_path, postgres, monkeypatch):
    import psycopg2

    from crucible.lake import DeltaLake
    from crucible_assets.datasets.assets import examples
    from crucible_assets.partitions import datasets_partitions
    from schemas import EXAMPLES, QUARANTINE

    with psycopg2.connect(postgres.url) as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TABLE qa (id text, question text, answer text)")
        cursor.executemany("INSERT INTO qa VALUES (%s, %s, %s)",
                           [(f"r{i}", f"question {i}", f"answer {i}") for i in range(6)] + [("r-bad", None, "x")])
    monkeypatch.setenv("QA_DB_PASSWORD", postgres.password)
    url = f"postgresql+psycopg2://{postgres.user}:${{QA_DB_PASSWORD}}@{postgres.host}:{postgres.port}/{postgres.db_name}"
    resources = make_resources(tmp_path)
    drop = resources["dataset_sources"].drop_folder
    _write_source(tmp_path / "drop", "qa-sql", {
        "kind": "sql", "url": url, "query": "SELECT id, question, answer FROM qa ORDER BY id",
        "mapping": {"input": "question", "target": "answer", "id": "id"}})
    assert str(tmp_path / "drop") == drop
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, ["qa-sql"])
        result = dg.materialize([examples], instance=instance, partition_key="qa-sql", resources=resources)
    assert result.success
    lake = DeltaLake(resources["lake"].root)
    stored = lake.read(EXAMPLES, where={"dataset": "qa-sql"})
    assert sorted(stored["input"]) == [f"question {i}" for i in range(6)]
    quarantined = lake.read(QUARANTINE)
    assert len(quarantined) == 1 and "qa-sql" in quarantined["origin"].iloc[0]
    assert postgres.password not in quarantined["source"].iloc[0]  # the password never reaches a table

    _write_source(tmp_path / "drop", "qa-sql", {"kind": "sql", "url": url, "query": "SELECT * FROM no_such_table"})
    with pytest.raises(OSError, match='qa-sql.*query on postgresql\\+psycopg2://crucible:\\*\\*\\*@.*failed:.*no_such_table'):
        resources["dataset_sources"].load("qa-sql")


def test_bigquery_without_credentials_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    _write_source(tmp_path / "drop", "qa-bq", {"kind": "bigquery", "project": "my-project",
                                               "query": "SELECT question AS input, answer AS target FROM qa.pairs"})
    with pytest.raises(OSError, match="qa-bq.*no Google credentials.*GOOGLE_APPLICATION_CREDENTIALS"):
        DatasetSourcesResource(drop_folder=str(tmp_path / "drop")).load("qa-bq")


@pytest.mark.parametrize(("spec", "problem"), [
    ({"kind": "ftp"}, "kind must be one of s3, delta, sql, bigquery"),
    ({"kind": "sql", "url": "sqlite://"}, "needs query"),
    ({"kind": "s3", "uri": "s3://b/k", "query": "x"}, "unknown key.*query"),
    ({"kind": "s3", "uri": "http://b/k"}, "uri must be s3://"),
    ({"kind": "sql", "url": "postgresql://u:${NO_SUCH_VARIABLE_X}@h/db", "query": "q"}, "NO_SUCH_VARIABLE_X is not set"),
])
def test_bad_source_files_name_the_problem(spec, problem):
    with pytest.raises(RemoteSourceError, match=problem):
        parse_source("bad", spec)


def test_a_bad_source_file_is_a_drop_folder_problem(tmp_path):
    _write_source(tmp_path, "broken", {"kind": "sql", "url": "sqlite://"})
    scan = DatasetSourcesResource(drop_folder=str(tmp_path)).scan()
    assert "broken" not in scan.files
    assert any("needs query" in problem.problem for problem in scan.problems)
