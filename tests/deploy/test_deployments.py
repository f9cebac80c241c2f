"""The deployments table and its state machine on a real Delta lake: legal paths, illegal moves refused,
history kept, and two controllers racing on one deployment."""

from __future__ import annotations

import itertools
import threading

import pytest

from crucible.deploy.deployments import (
    TRANSITIONS,
    DeploymentNotFound,
    IllegalTransition,
    check_transition,
    create_deployment,
    get_deployment,
    list_deployments,
    transition,
    update,
)
from crucible.deploy.health import HealthProbe, health_rows, prometheus_totals
from crucible.quarantine import store_validated
from schemas import DEPLOYMENT_HEALTH, DEPLOYMENTS
from schemas.deploy import DEPLOYMENT_STATES

LEGAL = {("pending", "deploying"), ("pending", "failed"), ("pending", "terminated"), ("deploying", "canary"),
         ("deploying", "active"), ("deploying", "rolling_back"), ("deploying", "failed"), ("canary", "active"),
         ("canary", "rolling_back"), ("canary", "failed"), ("active", "rolling_back"), ("active", "terminated"),
         ("rolling_back", "rolled_back"), ("rolling_back", "failed")}


def new(lake, **overrides):
    arguments = dict(model_name="tiny", model_version=2, target="local", strategy="canary",
                     artifact_uri="/registry/tiny/v2", previous_version=1)
    return create_deployment(lake, **{**arguments, **overrides})


@pytest.mark.parametrize("current, target", list(itertools.product(DEPLOYMENT_STATES, DEPLOYMENT_STATES)))
def test_the_state_machine_allows_exactly_the_documented_moves(current, target):
    if (current, target) in LEGAL:
        check_transition("d", current, target)
    else:
        with pytest.raises(IllegalTransition, match=f"cannot move from {current} to {target}"):
            check_transition("d", current, target)


def test_final_states_allow_nothing_and_say_so():
    assert {s for s, allowed in TRANSITIONS.items() if not allowed} == {"rolled_back", "failed", "terminated"}
    with pytest.raises(IllegalTransition, match="nothing \\(final state\\)"):
        check_transition("d", "rolled_back", "active")


def test_a_canary_that_rolls_back_is_stored_with_its_history(lake):
    created = new(lake)
    assert created.state == "pending" and created.traffic_percent == 0
    transition(lake, created.deployment_id, "deploying", reason="starting", backend_url="http://127.0.0.1:9",
               pid=4242)
    transition(lake, created.deployment_id, "canary", reason="10%", traffic_percent=10)
    update(lake, created.deployment_id, traffic_percent=30)
    transition(lake, created.deployment_id, "rolling_back", reason="error rate 40% above 5%", traffic_percent=0)
    final = transition(lake, created.deployment_id, "rolled_back", reason="error rate 40% above 5%")
    stored = get_deployment(lake, created.deployment_id)
    assert stored == final
    assert [h["state"] for h in stored.history] == ["pending", "deploying", "canary", "rolling_back", "rolled_back"]
    assert (stored.pid, stored.backend_url, stored.previous_version) == (4242, "http://127.0.0.1:9", 1)
    assert stored.reason == "error rate 40% above 5%" and not stored.live
    with pytest.raises(IllegalTransition, match="from rolled_back"):
        transition(lake, created.deployment_id, "active")
    assert get_deployment(lake, created.deployment_id).state == "rolled_back"  # the refusal wrote nothing
    assert len(lake.read(DEPLOYMENTS)) == 1


def test_listing_filters_by_state_and_model(lake):
    first = new(lake)
    second = new(lake, model_name="other", model_version=1, previous_version=None, strategy="replace")
    transition(lake, first.deployment_id, "deploying")
    assert [d.deployment_id for d in list_deployments(lake)] == [first.deployment_id, second.deployment_id]
    assert [d.deployment_id for d in list_deployments(lake, states=("deploying",))] == [first.deployment_id]
    assert [d.model_name for d in list_deployments(lake, model_name="other")] == ["other"]
    assert list_deployments(lake, states=("active",)) == []


def test_two_controllers_cannot_both_move_a_deployment_from_the_same_state(lake):
    created = new(lake)
    transition(lake, created.deployment_id, "deploying")
    outcomes: list[str] = []

    def move(state: str) -> None:
        try:
            transition(lake, created.deployment_id, state)
            outcomes.append(state)
        except IllegalTransition as error:
            outcomes.append(f"refused: {error}")

    threads = [threading.Thread(target=move, args=(s,)) for s in ("active", "failed")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [o for o in outcomes if not o.startswith("refused")]
    assert len(won) == 1 and get_deployment(lake, created.deployment_id).state == won[0]
    assert [h["state"] for h in get_deployment(lake, created.deployment_id).history] == ["pending", "deploying", won[0]]


@pytest.mark.parametrize("call, message", [
    (lambda lake: new(lake, target="docker"), "deployment target 'docker'"),
    (lambda lake: new(lake, strategy="shadow"), "deployment strategy 'shadow'"),
    (lambda lake: get_deployment(lake, "dep-missing"), "no deployment 'dep-missing'"),
    (lambda lake: transition(lake, "dep-missing", "deploying"), "no deployment 'dep-missing'"),
    (lambda lake: update(lake, new(lake).deployment_id, state="active"), "cannot change state"),
    (lambda lake: new(lake, deployment_id="dup") and new(lake, deployment_id="dup"), "dup already exists"),
])
def test_bad_requests_name_what_is_wrong(lake, call, message):
    with pytest.raises((ValueError, DeploymentNotFound), match=message):
        call(lake)


def test_health_rows_validate_and_parse_prometheus_counters(lake):
    text = ('# HELP crucible_requests_total x\ncrucible_requests_total{route="/v1/chat",status="200"} 7.0\n'
            'crucible_requests_total{route="/v1/chat",status="500"} 2.0\ncrucible_requests_created 1.7e9\n'
            'crucible_request_errors_total{route="/v1/chat",code="500"} 2.0\n')
    assert prometheus_totals(text) == (9.0, 2.0)
    rows = health_rows([("dep-a", "active", HealthProbe("http://127.0.0.1:1", True, True, 3.5, 9.0, 2.0)),
                        ("dep-b", "canary", HealthProbe("http://127.0.0.1:2", False, False, None,
                                                        error="ConnectionRefusedError"))])
    stored = store_validated(lake, DEPLOYMENT_HEALTH, rows, source="test")
    assert (stored.accepted, stored.quarantined) == (2, 0)
    back = lake.read(DEPLOYMENT_HEALTH).sort_values("deployment_id")
    assert back["ready"].tolist() == [True, False] and back["error"].iloc[1] == "ConnectionRefusedError"
