"""Stages (every allowed and refused transition, one production version at a time) and aliases."""

from __future__ import annotations

import itertools

import pytest

from crucible.registry.registry import VersionNotFound
from crucible.registry.versions import TRANSITIONS, InvalidTransition, check_transition
from schemas import MODEL_VERSIONS
from schemas.registry import STAGES
from tests.registry.conftest import register

ALLOWED = {("experiment", "staging"), ("experiment", "archived"), ("staging", "production"),
           ("staging", "experiment"), ("staging", "archived"), ("production", "archived"),
           ("production", "staging"), ("archived", "staging")}


@pytest.mark.parametrize(("current", "stage"), list(itertools.product(STAGES, STAGES)))
def test_every_transition_is_allowed_or_refused_by_name(current, stage):
    if (current, stage) in ALLOWED:
        check_transition("tiny", 3, current, stage)
    else:
        expected = f"already in {stage}" if current == stage else (
            f"cannot move from {current} to {stage}; from {current} it can move to "
            f"{' or '.join(TRANSITIONS[current])}")
        with pytest.raises(InvalidTransition, match=expected):
            check_transition("tiny", 3, current, stage)


def stages(registry) -> dict[int, str]:
    return dict(zip(registry.list_versions("tiny")["version"], registry.list_versions("tiny")["stage"], strict=True))


def test_a_version_walks_every_allowed_transition_through_the_registry(admin, checkpoints):
    register(admin, checkpoints(1))
    register(admin, checkpoints(2), stage="staging")
    walked = []
    for stage in ("staging", "experiment", "archived", "staging", "production", "staging", "production",
                  "archived"):
        before = stages(admin)[1]
        event = admin.transition("tiny", 1, stage)
        walked.append((before, stage))
        assert stages(admin)[1] == stage and event.details["from"] == before
    admin.transition("tiny", 2, "archived")
    assert set(walked) | {("staging", "archived")} == ALLOWED


def test_a_refused_transition_raises_and_writes_nothing(admin, lake, checkpoints):
    register(admin, checkpoints(1))
    version = lake.version(MODEL_VERSIONS)
    with pytest.raises(InvalidTransition, match="tiny v1: cannot move from experiment to production"):
        admin.transition("tiny", 1, "production")
    with pytest.raises(InvalidTransition, match="unknown stage 'prod'"):
        admin.transition("tiny", 1, "prod")
    with pytest.raises(VersionNotFound, match="no version 9"):
        admin.transition("tiny", 9, "staging")
    assert lake.version(MODEL_VERSIONS) == version and stages(admin) == {1: "experiment"}


def test_promoting_archives_the_previous_production_version_in_the_same_commit(admin, lake, checkpoints):
    for seed in (1, 2):
        register(admin, checkpoints(seed), stage="staging")
    admin.transition("tiny", 1, "production")
    version = lake.version(MODEL_VERSIONS)

    event = admin.transition("tiny", 2, "production")

    assert lake.version(MODEL_VERSIONS) == version + 1, "promote and archive are one commit"
    assert stages(admin) == {1: "archived", 2: "production"}
    assert admin.get("tiny", "production").version == 2
    assert (event.action, event.version, event.details) == ("promote", 2, {"from": "staging", "to": "production",
                                                                          "archived": [1]})
    promotions = admin.audit_log("tiny", action="promote")
    assert [e.version for e in promotions] == [1, 2] and promotions[-1].event_id == event.event_id
    [caused] = [e for e in admin.audit_log("tiny", action="transition") if e.version == 1]
    assert caused.details == {"from": "production", "to": "archived", "cause": "v2 promoted to production"}


def test_aliases_point_at_one_version_move_and_resolve(admin, checkpoints):
    for seed in (1, 2):
        register(admin, checkpoints(seed))
    admin.set_alias("tiny", "champion", 1)
    admin.set_alias("tiny", "candidate", 2)
    assert admin.resolve("tiny@champion").version == 1 and admin.get("tiny", 2).aliases == ("candidate",)

    moved = admin.set_alias("tiny", "champion", 2)

    assert moved.details == {"alias": "champion", "from": 1, "to": 2}
    assert admin.resolve("tiny@champion").version == 2 and admin.get("tiny", 2).aliases == ("candidate", "champion")
    assert list(admin.aliases("tiny")["alias"]) == ["candidate", "champion"]
    admin.delete_alias("tiny", "candidate")
    with pytest.raises(VersionNotFound, match="no alias 'candidate' \\(aliases: champion\\)"):
        admin.resolve("tiny@candidate")
    with pytest.raises(VersionNotFound, match="no alias 'candidate'"):
        admin.delete_alias("tiny", "candidate")


@pytest.mark.parametrize(("alias", "problem"), [("Champion", "lower-case"), ("1st", "lower-case"),
                                                 ("production", "reserved"), ("latest", "reserved")])
def test_alias_names_are_checked(admin, checkpoints, alias, problem):
    register(admin, checkpoints(1))
    with pytest.raises(ValueError, match=problem):
        admin.set_alias("tiny", alias, 1)


def test_an_alias_must_point_at_a_registered_version_and_goes_with_a_deleted_one(admin, checkpoints):
    register(admin, checkpoints(1))
    register(admin, checkpoints(2))
    with pytest.raises(VersionNotFound, match="no version 5"):
        admin.set_alias("tiny", "champion", 5)
    admin.set_alias("tiny", "champion", 2)

    admin.delete("tiny", 2)

    assert list(admin.list_versions("tiny")["version"]) == [1] and admin.aliases("tiny").empty
    assert register(admin, checkpoints(3)).version == 3, "a deleted version's number is not reused"
