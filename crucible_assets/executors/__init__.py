"""How a run's steps execute: in subprocesses here (multiprocess, the default), or spread over a
cluster with dagster-k8s (a Kubernetes Job per step) or dagster-celery (Celery workers).

``CRUCIBLE_EXECUTOR=k8s|celery`` picks a cluster executor, configured by the YAML file beside this
module (edit or replace it through ``CRUCIBLE_EXECUTOR_CONFIG=<path>``); the integrations are the
optional extras ``kubernetes`` and ``celery``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

EXECUTORS = ("multiprocess", "k8s", "celery")
CONFIG_DIR = Path(__file__).parent


class ExecutorConfigError(ValueError):
    """The executor's name or configuration is wrong; the message says which field and why."""


def executor_config(name: str, path: str | Path | None = None) -> dict[str, Any]:
    """The shipped (or given) YAML configuration of executor ``name``."""
    path = Path(path) if path else CONFIG_DIR / f"{name}.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ExecutorConfigError(f"executor {name}: cannot read its configuration {path}: {error}") from None


def _definition(name: str) -> dg.ExecutorDefinition:
    if name == "multiprocess":
        return dg.multiprocess_executor
    try:
        if name == "k8s":
            from dagster_k8s import k8s_job_executor

            return k8s_job_executor
        from dagster_celery import celery_executor

        return celery_executor
    except ImportError:
        extra = "kubernetes" if name == "k8s" else "celery"
        raise ExecutorConfigError(f"executor {name} needs the {extra} extra: pip install -e .[{extra}]") from None


def validate_executor_config(name: str, config: dict[str, Any]) -> None:
    """Check ``config`` against the executor's own config schema; raise naming each bad field."""
    from dagster._config import process_config

    definition = _definition(name)
    result = process_config(definition.config_schema.config_type, config)
    if not result.success:
        problems = "; ".join(error.message for error in result.errors)
        raise ExecutorConfigError(f"executor {name}: invalid configuration: {problems}")


def configured_executor(name: str | None = None, path: str | Path | None = None) -> dg.ExecutorDefinition | None:
    """The executor named by ``name`` (default ``$CRUCIBLE_EXECUTOR``), validated; None for multiprocess,
    which keeps Dagster's default (multiprocess, or in process when a run's config asks for it)."""
    name = name or os.environ.get("CRUCIBLE_EXECUTOR") or "multiprocess"
    if name not in EXECUTORS:
        raise ExecutorConfigError(f"CRUCIBLE_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
    if name == "multiprocess":
        return None
    config = executor_config(name, path or os.environ.get("CRUCIBLE_EXECUTOR_CONFIG"))
    validate_executor_config(name, config)
    return _definition(name).configured(config, name=f"crucible_{name}_executor")
