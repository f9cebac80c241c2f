"""Registering versions: what one registration writes, duplicates, a registration killed midway, the old helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from crucible.registry.registry import Registry, VersionNotFound, lineage_edges
from crucible.registry.store import latest_version, register_checkpoint
from crucible.registry.versions import artifact_sha256
from schemas import ARTIFACTS, AUDIT_LOG, LINEAGE_EDGES, MODEL_VERSIONS, TableSpec
from schemas.quarantine import UtcTimestamp
from tests.registry.conftest import ADMIN, register

REPO = Path(__file__).resolve().parents[2]


def test_a_registration_stores_its_artifacts_metrics_and_lineage(admin, checkpoints, tmp_path):
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text('{"vocab": ["a"]}')
    v1 = register(admin, checkpoints(1))
    v2 = admin.register("tiny", {"checkpoint": checkpoints(2), "tokenizer": tokenizer}, training_run_id="run-2",
                        dataset="gsm8k", dataset_version=4, metrics={"gsm8k/exact_match": 0.5}, tags=["math", "b"],
                        recipe_name="sft-tiny", recipe_hash="abc", training_config={"lr": 1e-3}, parent_version=1)

    assert (v1.version, v2.version) == (1, 2)
    assert v2.stage == "experiment" and v2.created_by == "ada" and v2.duplicate_of is None
    assert v2.metrics == {"gsm8k/exact_match": 0.5} and v2.tags == ("b", "math")
    assert v2.training_config == {"lr": 1e-3} and v2.parent_version == 1
    checkpoint = v2.artifact("checkpoint")
    assert checkpoint.backend == "local" and Path(checkpoint.uri).is_dir()
    assert checkpoint.sha256 == artifact_sha256(checkpoints(2)) == v2.sha256
    assert artifact_sha256(v2.artifact("tokenizer").uri) == artifact_sha256(tokenizer)
    assert {(h.source, h.relation) for h in admin.ancestors(v2, depth=1)} == {
        ("run:run-2", "produced"), ("dataset:gsm8k@v4", "trained_on"), ("model:tiny/v1", "fine_tuned_from")}
    assert admin.get("tiny").version == 2 and admin.resolve("tiny/v1").version == 1
    assert list(admin.list_versions("tiny")["version"]) == [1, 2]
    [event] = admin.audit_log("tiny", action="register")[1:]
    assert event.version == 2 and event.details["artifacts"] == ["checkpoint", "tokenizer"]


def test_the_same_weights_registered_again_are_a_duplicate_and_write_nothing(admin, lake, checkpoints, tmp_path):
    first = register(admin, checkpoints(1))
    copy = checkpoints(1).rename(tmp_path / "elsewhere")  # same bytes, another folder
    before = {spec.path: lake.version(spec) for spec in (MODEL_VERSIONS, ARTIFACTS, LINEAGE_EDGES, AUDIT_LOG)}

    again = register(admin, copy, training_run_id="run-again")

    assert again.duplicate_of == first.version == again.version == 1
    assert {spec.path: lake.version(spec) for spec in (MODEL_VERSIONS, ARTIFACTS, LINEAGE_EDGES, AUDIT_LOG)} == before


def test_a_registration_refuses_bad_input_before_writing(admin, lake, checkpoints, tmp_path):
    with pytest.raises(ValueError, match="no weights among the artifacts"):
        admin.register("tiny", {"tokenizer": checkpoints(1)}, training_run_id="r", dataset="d", dataset_version=1)
    with pytest.raises(ValueError, match="registered in experiment or staging, not 'production'"):
        register(admin, checkpoints(1), stage="production")
    with pytest.raises(VersionNotFound, match="parent version 7 is not registered"):
        register(admin, checkpoints(1), parent_version=7)
    with pytest.raises(ValueError, match="lineage node 'feedback:last-week' is not a node id"):
        register(admin, checkpoints(1), lineage_from=[("feedback:last-week", "curated_from")])
    with pytest.raises(ValueError, match="unknown lineage relationship 'copied_from'"):
        register(admin, checkpoints(1), lineage_from=[("dataset:x@v1", "copied_from")])
    assert lake.version(MODEL_VERSIONS) == -1 and lake.version(ARTIFACTS) == -1


KILLED_REGISTRATION = textwrap.dedent("""
    import os, signal, sys
    from crucible.lake import DeltaLake
    from crucible.registry.registry import Registry
    from crucible.registry.storage import LocalStore
    from schemas import MODEL_VERSIONS
    from tests.registry.conftest import ADMIN, register

    commit = DeltaLake.read_modify_write

    def die_before_the_version_row(self, spec, where, change):
        if spec.path == MODEL_VERSIONS.path:
            os.kill(os.getpid(), signal.SIGKILL)  # after its artifacts and edges are written
        return commit(self, spec, where, change)

    DeltaLake.read_modify_write = die_before_the_version_row
    lake_root, store_root, checkpoint = sys.argv[1:]
    register(Registry(DeltaLake(lake_root), ADMIN, LocalStore(store_root)), __import__("pathlib").Path(checkpoint))
""")


def test_a_registration_killed_before_its_version_row_leaves_nothing_visible(lake, store, checkpoints, tmp_path):
    admin = Registry(lake, ADMIN, store)
    register(admin, checkpoints(1))
    killed = subprocess.run([sys.executable, "-c", KILLED_REGISTRATION, str(lake.root), str(store.root),
                             str(checkpoints(2))], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    staged = lake.read(ARTIFACTS)
    [orphan] = set(staged["registration_id"]) - {admin.get("tiny", 1).registration_id}
    assert (lake.read(LINEAGE_EDGES)["registration_id"] == orphan).any(), "the edges were written before the kill"

    assert list(admin.list_versions("tiny")["version"]) == [1]
    assert not (lineage_edges(lake)["target"] == "model:tiny/v2").any()
    with pytest.raises(VersionNotFound):
        admin.get("tiny", 2)

    rerun = register(admin, checkpoints(2))
    assert rerun.version == 2 and rerun.duplicate_of is None and rerun.registration_id != orphan
    assert [a.artifact_type for a in rerun.artifacts] == ["checkpoint"]
    assert sorted(h.relation for h in admin.ancestors(rerun)) == ["produced", "trained_on"]
    assert orphan in set(lake.read(ARTIFACTS)["registration_id"]), "younger than the grace period: kept"

    assert admin.clean_orphans("tiny", older_than=pd.Timedelta(0)) == [orphan]
    assert orphan not in set(lake.read(ARTIFACTS)["registration_id"])
    assert orphan not in set(lake.read(LINEAGE_EDGES)["registration_id"].dropna())
    assert admin.get("tiny", 2).artifacts == rerun.artifacts


def test_the_old_helpers_keep_their_shapes(lake, checkpoints):
    assert latest_version(lake, "tiny") is None
    run = {"run_id": "r1", "checkpoint_uri": str(checkpoints(1)), "dataset": "gsm8k", "dataset_version": 2,
           "base_model": "tiny-gpt-config", "method": "sft", "recipe_name": "sft", "recipe_hash": "h"}
    row, stored = register_checkpoint(lake, "tiny", run, {"gsm8k/em": 0.1})
    again, _ = register_checkpoint(lake, "tiny", {**run, "run_id": "r2"}, {"gsm8k/em": 0.1})

    assert row["version"] == again["version"] == 1 and row["sha256"] == artifact_sha256(run["checkpoint_uri"])
    assert row["artifact_uri"] == str(Path(run["checkpoint_uri"]).resolve()) and json.loads(row["metrics"])
    assert stored.table == MODEL_VERSIONS.path and stored.accepted == 1
    latest = latest_version(lake, "tiny")
    assert latest["version"] == 1 and latest["training_run_id"] == "r1" and latest["created_by"].startswith("pipeline")
    MODEL_VERSIONS.model.validate(lake.read(MODEL_VERSIONS))
    assert {"trained_on", "produced", "registered_as", "fine_tuned_from"} <= set(lineage_edges(lake)["relation"])


class FirstReleaseVersions(pa.DataFrameModel):
    """registry/versions as the first release wrote it."""

    model_name: Series[str]
    version: Series[int]
    artifact_uri: Series[str]
    sha256: Series[str]
    metrics: Series[str]
    training_run_id: Series[str]
    dataset: Series[str]
    dataset_version: Series[int]
    stage: Series[str]
    created_at: Series[UtcTimestamp]

    class Config:
        coerce = True


class FirstReleaseEdges(pa.DataFrameModel):
    source: Series[str]
    target: Series[str]
    relation: Series[str]


def test_a_lake_written_by_the_first_release_reads_and_takes_new_versions(lake, admin, checkpoints):
    old_versions = TableSpec("registry", "versions", FirstReleaseVersions, ("model_name", "version"))
    lake.upsert(old_versions, pd.DataFrame([{
        "model_name": "tiny", "version": 1, "artifact_uri": str(checkpoints(1)),
        "sha256": artifact_sha256(checkpoints(1)), "metrics": "{}", "training_run_id": "r1", "dataset": "gsm8k",
        "dataset_version": 1, "stage": "candidate", "created_at": pd.Timestamp.now(tz="UTC")}]))
    lake.upsert(TableSpec("registry", "lineage_edges", FirstReleaseEdges, ("source", "target", "relation")),
                pd.DataFrame([{"source": "run:r1", "target": "model:tiny/v1", "relation": "produced"}]))

    assert latest_version(lake, "tiny")["stage"] == "experiment"
    assert admin.get("tiny", 1).artifacts == () and admin.ancestors("model:tiny/v1")[0].source == "run:r1"
    assert register(admin, checkpoints(1)).duplicate_of == 1
    assert register(admin, checkpoints(2)).version == 2
    admin.transition("tiny", 1, "staging")
    assert dict(zip(*admin.list_versions("tiny")[["version", "stage"]].T.values, strict=True)) == {
        1: "staging", 2: "experiment"}
