"""Lineage across models, datasets and feedback windows: walks up and down, depth, and cycle refusal."""

from __future__ import annotations

import datetime as dt

import pytest

from crucible.registry.lineage import LineageCycleError, feedback_node
from crucible.registry.registry import VersionNotFound
from schemas import LINEAGE_EDGES
from tests.registry.conftest import register

WINDOW = "feedback:2026-11-01..2026-11-07"


@pytest.fixture
def family(admin, checkpoints):
    """big v1 (teacher) -> tiny v1 (distilled) -> tiny v2 (DPO on examples curated from a feedback window)."""
    register(admin, checkpoints(1), model="big", training_run_id="run-big")
    register(admin, checkpoints(2), training_run_id="run-tiny1", lineage_from=[("model:big/v1", "distilled_from")])
    admin.add_edge(WINDOW, "dataset:curated@v2", "curated_from")
    register(admin, checkpoints(3), training_run_id="run-tiny2", dataset="curated", dataset_version=2,
             parent_version=1, derived_by="dpo_trained_from")
    return admin


def by_depth(hops) -> dict[int, set[tuple[str, str, str]]]:
    grouped: dict[int, set[tuple[str, str, str]]] = {}
    for hop in hops:
        grouped.setdefault(hop.depth, set()).add((hop.source, hop.relation, hop.target))
    return grouped


def test_ancestors_cross_models_datasets_and_feedback(family):
    hops = by_depth(family.ancestors("model:tiny/v2"))
    assert hops[1] == {("run:run-tiny2", "produced", "model:tiny/v2"),
                       ("dataset:curated@v2", "trained_on", "model:tiny/v2"),
                       ("model:tiny/v1", "dpo_trained_from", "model:tiny/v2")}
    assert hops[2] == {(WINDOW, "curated_from", "dataset:curated@v2"),
                       ("run:run-tiny1", "produced", "model:tiny/v1"),
                       ("dataset:gsm8k@v3", "trained_on", "model:tiny/v1"),
                       ("model:big/v1", "distilled_from", "model:tiny/v1")}
    assert hops[3] == {("run:run-big", "produced", "model:big/v1"),
                       ("dataset:gsm8k@v3", "trained_on", "model:big/v1")}
    assert set(hops) == {1, 2, 3}
    assert by_depth(family.ancestors(family.get("tiny", 2), depth=1)) == {1: hops[1]}


def test_descendants_reach_every_model_made_from_a_node(family):
    window = feedback_node(dt.date(2026, 11, 1), dt.date(2026, 11, 7))
    assert {h.target for h in family.descendants(window)} == {"dataset:curated@v2", "model:tiny/v2"}
    assert {h.target for h in family.descendants("model:big/v1")} == {"model:tiny/v1", "model:tiny/v2"}
    assert {h.target for h in family.descendants("dataset:gsm8k@v3", depth=1)} == {"model:big/v1", "model:tiny/v1"}
    assert family.descendants("model:tiny/v2") == []


def test_an_edge_that_would_close_a_cycle_is_refused_with_its_path(family, lake):
    version = lake.version(LINEAGE_EDGES)
    with pytest.raises(LineageCycleError) as refused:
        family.add_edge("model:tiny/v2", "model:big/v1", "distilled_from")
    assert refused.value.path == ["model:tiny/v2", "model:big/v1", "model:tiny/v1", "model:tiny/v2"]
    assert "would close the cycle model:tiny/v2 -> model:big/v1 -> model:tiny/v1 -> model:tiny/v2" in str(refused.value)
    with pytest.raises(LineageCycleError, match="cycle model:tiny/v1 -> model:tiny/v1"):
        family.add_edge("model:tiny/v1", "model:tiny/v1", "fine_tuned_from")
    assert lake.version(LINEAGE_EDGES) == version


def test_added_edges_join_the_graph_once_and_need_existing_versions(family, lake):
    family.add_edge("dataset:humaneval@v1", "model:tiny/v2", "evaluated_on")
    version = lake.version(LINEAGE_EDGES)
    family.add_edge("dataset:humaneval@v1", "model:tiny/v2", "evaluated_on")
    assert lake.version(LINEAGE_EDGES) == version, "an edge already there is not written again"
    assert ("dataset:humaneval@v1", "evaluated_on", "model:tiny/v2") in by_depth(family.ancestors("model:tiny/v2"))[1]
    with pytest.raises(VersionNotFound, match="model 'tiny' has no version 7"):
        family.add_edge("dataset:humaneval@v1", "model:tiny/v7", "evaluated_on")
    with pytest.raises(ValueError, match="feedback window ends before it starts"):
        family.add_edge("feedback:2026-11-07..2026-11-01", "dataset:curated@v3", "curated_from")
