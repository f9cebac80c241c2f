"""The whole graph on S3-compatible storage by configuration only: every Delta table of a full
lifecycle run lands on a real S3-protocol server (moto) on 127.0.0.1, nothing in a local lake."""

import uuid

import dagster as dg
import pytest

from tests.assets.conftest import make_resources

pytestmark = pytest.mark.slow


def test_lifecycle_on_an_s3_lake(tmp_path, s3_endpoint):
    import boto3

    from crucible_assets.definitions import build_defs
    from crucible_assets.demo import run_lifecycle
    from resources.lake import LakeResource
    from schemas import DRIFT_REPORTS, EXAMPLES, INFERENCE_EVENTS, MODEL_VERSIONS, TRAINING_RUNS

    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=bucket)
    storage = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    resources = make_resources(tmp_path)
    resources["lake"] = LakeResource(root=f"s3://{bucket}/lake", artifacts_root=str(tmp_path / "artifacts"),
                                     storage_options=storage)
    defs = build_defs(resources)
    days = ["2026-11-01", "2026-11-02"]
    with dg.DagsterInstance.ephemeral() as instance:
        run_lifecycle(days, days[-1], instance, defs, resources, echo=lambda _line: None, real_traffic=False)

    lake = resources["lake"].lake()
    assert not lake.local
    assert len(lake.read(EXAMPLES, where={"dataset": "gsm8k"})) > 0
    assert len(lake.read(TRAINING_RUNS)) >= 1
    assert len(lake.read(MODEL_VERSIONS)) >= 1
    assert sorted(str(day) for day in lake.read(INFERENCE_EVENTS)["day"].unique()) == days
    assert len(lake.read(DRIFT_REPORTS)) > 0
    keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])]
    for spec in (EXAMPLES, TRAINING_RUNS, MODEL_VERSIONS, INFERENCE_EVENTS, DRIFT_REPORTS):
        assert any(key.startswith(f"lake/{spec.path}/_delta_log/") for key in keys), spec.path
    assert not (tmp_path / "lake").exists()  # nothing fell back to a local lake
