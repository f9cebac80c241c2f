"""The service principal: a configured token, the bootstrapped local one (once, 0600), and errors that say what to set."""

from __future__ import annotations

import stat
import threading

import pytest

from crucible.registry import access
from crucible.registry.access import AuthenticationError, Principal
from crucible.registry.service import admin_token_file, service_principal

DAGSTER = Principal("dagster", frozenset({"trainer", "approver"}))


def test_concurrent_first_uses_bootstrap_once_and_share_the_token(lake, tmp_path):
    token_file = tmp_path / "home" / "registry_token"
    results: list = []

    def first_use() -> None:
        results.append(service_principal(lake, None, token_file))

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(access.principals(lake)["name"]) == ["dagster", "local-admin"]
    assert [principal for principal, _ in results] == [DAGSTER, DAGSTER]
    assert sorted(source.split(" ")[0] for _, source in results) == [str(token_file), "bootstrapped"]
    for secret in (token_file, admin_token_file(token_file)):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert access.authenticate(lake, admin_token_file(token_file).read_text()).name == "local-admin"


def test_a_token_file_from_an_emptied_lake_is_replaced_by_a_fresh_bootstrap(lake, tmp_path):
    token_file = tmp_path / "registry_token"
    token_file.write_text("crt_0123456789abcdef.stale")
    token_file.chmod(0o644)
    principal, source = service_principal(lake, None, token_file)
    assert principal == DAGSTER and source.startswith("bootstrapped")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert access.authenticate(lake, token_file.read_text()) == DAGSTER


def test_a_configured_token_wins_and_a_bad_one_names_the_variable(lake, tmp_path):
    ada = access.authenticate(lake, access.create_principal(lake, "ada", ["admin"]))
    token = access.create_principal(lake, "ci-bot", ["trainer"], by=ada)
    assert service_principal(lake, token, tmp_path / "unused") == (Principal("ci-bot", frozenset({"trainer"})),
                                                                   "$CRUCIBLE_REGISTRY_TOKEN")
    with pytest.raises(AuthenticationError, match=r"^CRUCIBLE_REGISTRY_TOKEN \(the registry's service token\): "
                                                  r"registry token is malformed"):
        service_principal(lake, "hunter2", tmp_path / "unused")
    with pytest.raises(AuthenticationError, match="CRUCIBLE_REGISTRY_TOKEN is not set and .* already has principals"):
        service_principal(lake, None, tmp_path / "registry_token")
    (tmp_path / "registry_token").write_text("crt_0123456789abcdef.wrong")
    with pytest.raises(AuthenticationError, match="the service token in .*registry_token does not open the registry"):
        service_principal(lake, None, tmp_path / "registry_token")
    assert not (tmp_path / "unused").exists()
