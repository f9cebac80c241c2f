"""The cluster executors' shipped configurations are valid for dagster-k8s and dagster-celery, a
mistake in one is named, and the definitions pick the executor from CRUCIBLE_EXECUTOR."""

import dagster as dg
import pytest

from crucible_assets.executors import (
    ExecutorConfigError,
    configured_executor,
    executor_config,
    validate_executor_config,
)


@pytest.mark.parametrize("name", ["k8s", "celery"])
def test_shipped_configuration_is_valid(name, monkeypatch):
    pytest.importorskip("dagster_k8s" if name == "k8s" else "dagster_celery")
    monkeypatch.setenv("CRUCIBLE_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("CRUCIBLE_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    validate_executor_config(name, executor_config(name))
    executor = configured_executor(name)
    assert executor.name == f"crucible_{name}_executor"


def test_the_training_step_asks_for_a_gpu_on_kubernetes():
    config = executor_config("k8s")
    training = config["per_step_k8s_config"]["training__sft_checkpoint"]["container_config"]["resources"]
    assert training["limits"]["nvidia.com/gpu"] == "1"
    assert "training__sft_checkpoint" in {key.to_python_identifier() for key in [dg.AssetKey(["training",
                                                                                               "sft_checkpoint"])]}


@pytest.mark.parametrize(("name", "mutate", "problem"), [
    ("k8s", lambda c: c.update(job_namespce="x"), "job_namespce"),
    ("k8s", lambda c: c.update(max_concurrent="eight"), "max_concurrent"),
    ("celery", lambda c: c.update(brokr="redis://"), "brokr"),
])
def test_a_mistake_is_named(name, mutate, problem):
    pytest.importorskip("dagster_k8s" if name == "k8s" else "dagster_celery")
    config = executor_config(name)
    mutate(config)
    with pytest.raises(ExecutorConfigError, match=problem):
        validate_executor_config(name, config)


def test_definitions_use_the_executor_the_environment_names(monkeypatch):
    from crucible_assets.definitions import build_defs

    monkeypatch.setenv("CRUCIBLE_EXECUTOR", "k8s")
    pytest.importorskip("dagster_k8s")
    job = build_defs().resolve_job_def("retrain_job")
    assert job.executor_def.name == "crucible_k8s_executor"
    monkeypatch.setenv("CRUCIBLE_EXECUTOR", "nonsense")
    with pytest.raises(ExecutorConfigError, match="expected one of multiprocess, k8s, celery"):
        build_defs()
    monkeypatch.delenv("CRUCIBLE_EXECUTOR")
    assert build_defs().resolve_job_def("retrain_job").executor_def.name == "multi_or_in_process_executor"
