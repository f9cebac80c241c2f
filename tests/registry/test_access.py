"""Access control: bootstrap, hashed tokens, the service principal, and refusals that are audited."""

from __future__ import annotations

import pytest

from crucible.registry.access import AccessDenied, AuthenticationError, authenticate, create_principal
from crucible.registry.audit import read_events
from crucible.registry.registry import Registry
from schemas import MODEL_VERSIONS, PRINCIPALS
from tests.registry.conftest import APPROVER, TRAINER, VIEWER, register


def test_the_first_admin_bootstraps_and_only_admins_create_principals_after(lake):
    with pytest.raises(ValueError, match="first principal must have the admin role"):
        create_principal(lake, "tom", ["trainer"])
    token = create_principal(lake, "ada", ["admin"])
    ada = authenticate(lake, token)
    assert (ada.name, ada.roles) == ("ada", frozenset({"admin"}))

    with pytest.raises(AccessDenied, match="principal 'anonymous' may not create principal 'eve': needs role admin"):
        create_principal(lake, "eve", ["admin"])
    with pytest.raises(AccessDenied, match="principal 'tom' may not create principal 'eve'"):
        create_principal(lake, "eve", ["admin"], by=TRAINER)
    trainer_token = create_principal(lake, "tom", ["trainer", "viewer"], by=ada)
    assert authenticate(lake, trainer_token).roles == frozenset({"trainer", "viewer"})
    with pytest.raises(ValueError, match="principal 'tom' already exists"):
        create_principal(lake, "tom", ["viewer"], by=ada)
    with pytest.raises(ValueError, match="unknown \\['root'\\]"):
        create_principal(lake, "rob", ["root"], by=ada)
    assert sorted(lake.read(PRINCIPALS)["name"]) == ["ada", "tom"]


def test_tokens_are_stored_only_as_salted_hashes(lake):
    tokens = [create_principal(lake, "ada", ["admin"])]
    ada = authenticate(lake, tokens[0])
    tokens.append(create_principal(lake, "bob", ["admin"], by=ada))
    stored = lake.read(PRINCIPALS)
    text = stored.to_csv()
    for token in tokens:
        assert token.split(".", 1)[1] not in text
    hashes = stored["token_hash"].tolist()
    assert all(h.startswith("scrypt$") for h in hashes) and len({h.split("$")[4] for h in hashes}) == 2  # salts

    wrong = tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BB")
    with pytest.raises(AuthenticationError, match="unknown or wrong"):
        authenticate(lake, wrong)
    with pytest.raises(AuthenticationError, match="malformed"):
        authenticate(lake, "hunter2")


def test_the_service_principal_comes_from_an_environment_variable(lake, monkeypatch):
    monkeypatch.delenv("CRUCIBLE_REGISTRY_TOKEN", raising=False)
    with pytest.raises(AuthenticationError, match="environment variable CRUCIBLE_REGISTRY_TOKEN is not set"):
        Registry.for_service(lake)
    ada = authenticate(lake, create_principal(lake, "ada", ["admin"]))
    token = create_principal(lake, "dagster", ["trainer"], by=ada)
    monkeypatch.setenv("MY_TOKEN", "crt_0123456789abcdef.nope")
    with pytest.raises(AuthenticationError, match="environment variable MY_TOKEN: registry token .* unknown"):
        Registry.for_service(lake, token_env="MY_TOKEN")
    monkeypatch.setenv("MY_TOKEN", token)
    assert Registry.for_service(lake, token_env="MY_TOKEN").principal.name == "dagster"


def refusals(lake) -> list[dict]:
    return [{"principal": e.principal, "action": e.action, "version": e.version, "reason": e.reason}
            for e in read_events(lake) if not e.allowed]


def test_each_action_needs_its_role_and_refusals_are_audited(lake, admin, store, checkpoints):
    viewer, trainer, approver = (Registry(lake, p, store) for p in (VIEWER, TRAINER, APPROVER))
    with pytest.raises(AccessDenied, match="principal 'val' may not register a version of 'tiny': needs role "
                                           "trainer or admin; has viewer"):
        register(viewer, checkpoints(1))
    assert lake.version(MODEL_VERSIONS) == -1

    register(trainer, checkpoints(1))
    trainer.transition("tiny", 1, "staging")
    with pytest.raises(AccessDenied, match="'tom' may not move tiny v1 from staging to production: needs role "
                                           "approver or admin; has trainer"):
        trainer.transition("tiny", 1, "production")
    assert approver.transition("tiny", 1, "production").action == "promote"
    with pytest.raises(AccessDenied, match="'amy' may not move tiny v1 from production to archived: needs role "
                                           "admin; has approver"):
        approver.transition("tiny", 1, "archived")
    with pytest.raises(AccessDenied, match="'tom' may not delete tiny v1 \\(in production\\): needs role admin"):
        trainer.delete("tiny", 1)
    with pytest.raises(AccessDenied, match="'val' may not set alias tiny@champion"):
        viewer.set_alias("tiny", "champion", 1)
    assert viewer.get("tiny", "production").version == 1, "every role reads"

    assert refusals(lake) == [
        {"principal": "val", "action": "register", "version": None, "reason": "needs role trainer or admin; has viewer"},
        {"principal": "tom", "action": "promote", "version": 1, "reason": "needs role approver or admin; has trainer"},
        {"principal": "amy", "action": "leave_production", "version": 1, "reason": "needs role admin; has approver"},
        {"principal": "tom", "action": "delete", "version": 1, "reason": "needs role admin; has trainer"},
        {"principal": "val", "action": "set_alias", "version": 1, "reason": "needs role trainer or admin; has viewer"},
    ]
    admin.transition("tiny", 1, "archived")
    admin.delete("tiny", 1)
    assert admin.list_versions("tiny").empty
    assert [e.action for e in admin.audit_log("tiny") if e.allowed] == ["register", "transition", "promote",
                                                                         "transition", "delete"]
