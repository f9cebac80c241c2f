"""Training as an external process reported back through Dagster Pipes: a subprocess here, a GPU pod on Kubernetes."""

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from crucible.train.config import DeviceUnavailableError
from crucible.train.data import (
    RejectedExample,
    RowsNotLoadedError,
    build_run_row,
    data_source,
    new_run_id,
    quarantine_rejected,
    select_rows,
)
from crucible.train.recipes import RecipeError, save_recipe
from crucible.train.runs import record_run
from crucible_assets.datasets.assets import examples
from crucible_assets.metadata import run_record_metadata, training_metadata
from crucible_assets.training.config import SFTConfig, configured_recipe
from crucible_assets.training.phases import phase_metadata
from resources.lake import LakeResource
from resources.trainer import TRAINING_GPU_POOL, TrainerResource

CHILD_MODULE = "crucible_assets.training.pipes_child"


@dg.asset(
    key=["training", "sft_checkpoint_external"], deps=[examples], group_name="training", pool=TRAINING_GPU_POOL,
    kinds={"pytorch", "huggingface", "deltalake"}, owners=["team:ml-platform"],
    description="training/sft_checkpoint run as an external process through Dagster Pipes (a subprocess by "
                "default, a GPU pod with PipesK8sClient): its logs and per-step metrics stream into this run, "
                "the process reports the materialization, and the run is recorded on the lake as usual.",
)
def sft_checkpoint_external(context: dg.AssetExecutionContext, config: SFTConfig, lake: LakeResource,
                            trainer: TrainerResource,
                            pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
    store = lake.lake()
    try:
        recipe = configured_recipe(config, trainer, "sft")
        if config.feedback_window():
            raise ValueError("data_window_start/_end: a retraining on curated feedback runs in "
                             "training/sft_checkpoint (retrain_job); leave the window empty here")
        dataset = recipe.dataset
        rows, version = select_rows(store, dataset.name, dataset.split, dataset.limit, dataset.table_version,
                                    recipe=recipe.name)
    except (RecipeError, DeviceUnavailableError, RowsNotLoadedError, ValueError) as error:
        raise dg.Failure(f"training/sft_checkpoint_external: {error}") from None
    run_id = config.resume_run_id or new_run_id(recipe.method)
    run_dir = Path(lake.artifact_dir("runs", run_id))
    started = pd.Timestamp.now(tz="UTC")
    extras = write_external_inputs(run_dir, recipe, rows, trainer, resume=bool(config.resume_run_id))
    reported = pipes_subprocess_client.run(
        context=context, command=[sys.executable, "-m", CHILD_MODULE], extras=extras).get_materialize_result()
    outcome = json.loads((run_dir / "outcome.json").read_text())
    quarantine_rejected(store, "sft", [RejectedExample(**r) for r in outcome["rejected"]],
                        data_source(dataset.name, dataset.split, version))
    run = build_run_row(
        run_id, recipe, dataset=dataset.name, dataset_version=version, steps=outcome["steps"],
        final_loss=outcome["final_loss"], tokens_per_second=outcome["tokens_per_second"],
        checkpoint_uri=outcome["checkpoint_dir"], started_at=started, trigger_reason=config.trigger_reason)
    stored_run, stored_metrics = record_run(store, run, outcome["history"])
    return dg.MaterializeResult(metadata={
        **reported.metadata, **training_metadata(outcome["metric_summary"]), **run_record_metadata(stored_run),
        **phase_metadata(outcome["phase_seconds"], outcome["profile_trace"]), "run_id": run_id,
        "recipe": recipe.name, "recipe_hash": run["recipe_hash"], "dataset_table_version": version,
        "rejected_examples": len(outcome["rejected"]), "metrics_rows": stored_metrics.accepted,
    })


def write_external_inputs(run_dir: Path, recipe, rows: pd.DataFrame, trainer: TrainerResource, *,
                          resume: bool) -> dict[str, Any]:
    """Write what the external process reads into the run folder; returns the Pipes extras that name it.

    The Tinker key stays out of the extras (they travel in an environment variable and the run's
    event log): the process reads TINKER_API_KEY from its own environment.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_path = save_recipe(recipe, run_dir / "external" / "recipe.yaml")
    examples_path = run_dir / "external" / "examples.parquet"
    rows.to_parquet(examples_path, index=False)
    settings = {k: v for k, v in asdict(trainer.settings()).items() if k != "tinker_api_key"}
    return {"run_dir": str(run_dir), "recipe_path": str(recipe_path), "examples_path": str(examples_path),
            "trainer": settings, "resume": resume}


sft_external_job = dg.define_asset_job(
    "sft_external_job", selection=dg.AssetSelection.assets(sft_checkpoint_external),
    description="Fine-tune a recipe in an external process (Dagster Pipes); logs, metrics and the checkpoint "
                "come back into this run.",
)


# -- Kubernetes: the same child in a GPU pod ------------------------------------------------------------------


def training_pod_spec(*, image: str, gpus: int = 1, cpu: str = "8", memory: str = "64Gi",
                      gpu_resource: str = "nvidia.com/gpu", node_selector: Mapping[str, str] | None = None,
                      service_account: str | None = None, artifacts_claim: str | None = None,
                      artifacts_mount: str = "/crucible") -> dict[str, Any]:
    """The ``base_pod_spec`` of a training pod for ``PipesK8sClient.run``: one container of ``image``
    with ``gpus`` GPUs requested and limited (the scheduler places it on a node with that many free),
    the tolerations GPU node pools usually carry, shared memory for the data loader and NCCL, and
    optionally the persistent volume claim that holds the lake's artifacts (mounted at ``artifacts_mount``).

    Validate it with ``validate_pod_spec`` before a run (``PipesK8sClient`` builds the same pod).
    """
    if gpus < 1:
        raise ValueError(f"training_pod_spec(gpus={gpus}): a training pod asks for at least one GPU")
    resources = {gpu_resource: str(gpus), "cpu": cpu, "memory": memory}
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if artifacts_claim:
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": artifacts_claim}})
        mounts.append({"name": "artifacts", "mountPath": artifacts_mount})
    spec: dict[str, Any] = {
        "containers": [{
            "name": "trainer", "image": image, "resources": {"requests": resources, "limits": resources},
            "volumeMounts": mounts, "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
        }],
        "volumes": volumes,
        "tolerations": [{"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"}],
        "restartPolicy": "Never",
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if service_account:
        spec["serviceAccountName"] = service_account
    return spec


def validate_pod_spec(base_pod_spec: Mapping[str, Any], *, command: Sequence[str] = ("python", "-m", CHILD_MODULE),
                      env: Mapping[str, str] | None = None):
    """The ``kubernetes.client.V1Pod`` that ``PipesK8sClient`` would create from ``base_pod_spec`` (built by
    dagster-k8s's own ``build_pod_body``, which refuses unknown fields), checked for a GPU limit on the
    training container. Needs ``dagster-k8s`` (``pip install dagster-k8s==0.29.27``)."""
    try:
        from dagster_k8s.pipes import build_pod_body
    except ImportError:
        raise ImportError("validate_pod_spec needs dagster-k8s: pip install dagster-k8s==0.29.27 "
                          "(the version that matches dagster 1.13.27)") from None
    try:
        pod = build_pod_body(pod_name="crucible-training-validate", image=None, command=list(command),
                             env_vars=dict(env or {}), base_pod_meta=None, base_pod_spec=base_pod_spec)
    except Exception as error:  # dagster-k8s raises a bare Exception for an unknown field
        raise ValueError(f"training pod spec is not a valid Kubernetes PodSpec: {error}") from None
    limits = pod.spec.containers[0].resources.limits if pod.spec.containers[0].resources else None
    if not limits or not any(name.endswith("/gpu") and int(value) > 0 for name, value in limits.items()):
        raise ValueError(f"training pod spec: container {pod.spec.containers[0].name!r} has no GPU limit "
                         f"(limits {limits}); add e.g. resources.limits['nvidia.com/gpu'] = '1'")
    return pod


def k8s_pipes_client(*, load_incluster_config: bool | None = None, kubeconfig_file: str | None = None,
                     poll_interval: float = 10.0):
    """A ``PipesK8sClient`` for training pods; a run is ``client.run(context=..., namespace=...,
    base_pod_spec=training_pod_spec(...), command=["python", "-m", CHILD_MODULE], extras=...)``."""
    from dagster_k8s import PipesK8sClient

    return PipesK8sClient(load_incluster_config=load_incluster_config, kubeconfig_file=kubeconfig_file,
                          poll_interval=poll_interval)
