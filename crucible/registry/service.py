"""The registry as a service acts on it: the local defaults, the service principal's token, and registering a run.

A pipeline (Dagster runs) acts as one principal. Its token comes from configuration (e.g.
``$CRUCIBLE_REGISTRY_TOKEN``); on the embedded default, where the lake has no principal yet and no token is
configured, :func:`service_principal` bootstraps one: a ``local-admin`` principal (the registry's first
principal must be an admin) and the service principal ``dagster`` (trainer + approver) created by it, each
token written to its own file readable by the owner only (0600). Later runs read the service token back
from its file; the admin token is there for a person to create more principals with the CLI.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from crucible.lake import DeltaLake, default_home
from crucible.registry import access, lineage
from crucible.registry.access import AuthenticationError, Principal
from crucible.registry.registry import ModelVersion, Registry
from schemas import EVAL_SUMMARIES, EXAMPLES

TOKEN_ENV = "CRUCIBLE_REGISTRY_TOKEN"
SERVICE_NAME = "dagster"
SERVICE_ROLES = ("trainer", "approver")
BOOTSTRAP_ADMIN = "local-admin"
# The relationship from the starting model for each training method (the run table's ``method``).
DERIVED_BY = {"sft": "fine_tuned_from", "dpo": "dpo_trained_from", "rl": "rl_trained_from",
              "distill": "distilled_from"}


def default_artifact_root() -> str:
    """``$CRUCIBLE_HOME/registry_artifacts``: where registered artifacts are copied on the embedded default."""
    return f"{default_home()}/registry_artifacts"


def default_token_file() -> str:
    """``$CRUCIBLE_HOME/registry_token``: the bootstrapped service principal's token (mode 0600)."""
    return f"{default_home()}/registry_token"


def admin_token_file(token_file: str | Path) -> Path:
    """Where the bootstrap keeps the ``local-admin`` token: beside the service token."""
    return Path(token_file).with_name("registry_admin_token")


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` readable and writable by the owner only, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # the mode of a leftover partial file is not reset by O_CREAT
        os.write(descriptor, (secret + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(partial, path)


@contextlib.contextmanager
def _bootstrap_lock(token_file: Path) -> Iterator[None]:
    """One bootstrap at a time on this machine (runs of a multiprocess executor start together)."""
    token_file.parent.mkdir(parents=True, exist_ok=True)
    with open(token_file.with_name(f".{token_file.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def service_principal(lake: DeltaLake, token: str | None, token_file: str | Path, *, token_env: str = TOKEN_ENV,
                      name: str = SERVICE_NAME) -> tuple[Principal, str]:
    """The principal a service acts as, and where its token came from (``token_env``, the file, or bootstrap).

    A configured ``token`` must belong to a principal: an unknown or malformed one is an
    :class:`AuthenticationError` naming ``token_env``. Without one, the token in ``token_file`` is used;
    with neither and an empty principals table, the local service principal is bootstrapped.
    """
    if token and token.strip():
        try:
            return access.authenticate(lake, token), f"${token_env}"
        except AuthenticationError as error:
            raise AuthenticationError(f"{token_env} (the registry's service token): {error}") from None
    token_file = Path(token_file)
    with _bootstrap_lock(token_file):
        if access.principals(lake).empty:
            return _bootstrap(lake, token_file, name), f"bootstrapped into {token_file}"
        if not token_file.exists():
            raise AuthenticationError(
                f"{token_env} is not set and {token_file} does not exist, but the registry at {lake.root} already "
                f"has principals: ask an admin for a token (crucible registry principal create {name} --role "
                f"trainer --role approver) and put it in {token_env}")
        try:
            return access.authenticate(lake, token_file.read_text()), str(token_file)
        except AuthenticationError as error:
            raise AuthenticationError(f"the service token in {token_file} does not open the registry at {lake.root} "
                                      f"({error}); set {token_env} to a valid token, or delete the file only when "
                                      f"the lake has no principals") from None


def _bootstrap(lake: DeltaLake, token_file: Path, name: str) -> Principal:
    admin_token = access.create_principal(lake, BOOTSTRAP_ADMIN, ["admin"])
    write_secret(admin_token_file(token_file), admin_token)
    admin = Principal(BOOTSTRAP_ADMIN, frozenset({"admin"}))
    write_secret(token_file, access.create_principal(lake, name, SERVICE_ROLES, by=admin))
    return Principal(name, frozenset(SERVICE_ROLES))


# -- registering a training run ---------------------------------------------------------------------


def training_config_of(run_dir: str | Path) -> dict[str, Any]:
    """The recipe a run was trained with, as saved in its folder (``recipe.yaml``); empty when absent."""
    import yaml

    path = Path(run_dir) / "recipe.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def evaluation_sources(lake: DeltaLake, model_version: str) -> list[str]:
    """Dataset nodes ``model_version`` (a training run id) was evaluated on: each benchmark's dataset at the
    examples-table version that is current now, which is the one it was scored on when registration follows
    evaluation in the same run (the evaluation tables do not record the version)."""
    from crucible.evaluate.benchmarks import BENCHMARKS

    summaries = lake.read(EVAL_SUMMARIES, where={"model_version": model_version}, columns=["benchmark"])
    examples_version = lake.version(EXAMPLES)
    datasets = sorted({BENCHMARKS[b].dataset for b in set(summaries["benchmark"]) if b in BENCHMARKS})
    return [lineage.dataset_node(dataset, examples_version) for dataset in datasets] if examples_version >= 0 else []


def register_training_run(registry: Registry, model_name: str, run: Mapping[str, Any], metrics: Mapping[str, float],
                          *, training_config: Mapping[str, Any] | None = None, evaluated_on: Iterable[str] = (),
                          tags: Iterable[str] = (), stage: str = "experiment") -> ModelVersion:
    """Register ``run`` (a ``training/runs`` row) as the next version of ``model_name``.

    The whole checkpoint folder is the ``checkpoint`` artifact: Hugging Face keeps the tokenizer and
    config files inside it and loads them from there, so it is stored (and hashed) as one loadable unit.
    Lineage: the run ``produced`` it, it was ``trained_on`` the dataset version, derived from the base
    model by the run's method, its training checkpoint ``registered_as`` it, and ``evaluated_on`` each
    node of ``evaluated_on``.
    """
    method = str(run.get("method") or "sft")
    return registry.register(
        model_name, {"checkpoint": run["checkpoint_uri"]}, training_run_id=str(run["run_id"]),
        dataset=str(run["dataset"]), dataset_version=int(run["dataset_version"]), metrics=dict(metrics),
        tags=sorted({method, str(run["dataset"]), *tags}), recipe_name=run.get("recipe_name"),
        recipe_hash=run.get("recipe_hash"), base_model=run.get("base_model"), training_config=training_config,
        derived_by=DERIVED_BY.get(method, "fine_tuned_from"),
        lineage_from=[(f"checkpoint:{run['checkpoint_uri']}", "registered_as"),
                      *((node, "evaluated_on") for node in evaluated_on)],
        stage=stage)
