"""Where and how registered versions are served: the deployment target, the rollout strategy and its rollback
thresholds, and the folder that holds local server logs and rendered manifests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from crucible.lake import default_home
from schemas.deploy import STRATEGIES, TARGETS


class DeploymentResource(dg.ConfigurableResource):
    """``target`` local runs ``crucible serve`` processes behind a router on this machine; vllm, tgi and
    kubernetes render (and validate) a launch command or manifests under ``workdir`` for an operator to apply."""

    target: str = Field("local", description=f"One of {', '.join(TARGETS)}.")
    strategy: str = Field("canary", description=f"Rollout strategy: {', '.join(STRATEGIES)}.")
    canary_steps: list[float] = Field([10, 30, 50, 100], description="Traffic percent of each canary step.")
    hold_s: float = Field(60.0, description="Seconds each step is held and watched (the A/B test's duration).")
    ab_split_percent: float = Field(50.0, description="Share of traffic the new version gets in an A/B test.")
    ab_alpha: float = Field(0.05, description="Significance level of the A/B test on thumbs-up rates.")
    max_error_rate: float = Field(0.05, description="Roll back when the new version's error rate exceeds this.")
    max_p99_ms: float = Field(5000.0, description="Roll back when the new version's p99 latency exceeds this.")
    min_requests: int = Field(5, description="Requests the new version must get in a step before it is judged.")
    candidate_timeout_s: float = Field(10.0, description="A request to the new version taking longer fails and is "
                                                         "retried on the previous version.")
    ready_timeout_s: float = Field(180.0, description="Longest a local server may take to load its model.")
    drain_s: float = Field(1.0, description="Wait before stopping a replaced server, so its requests finish.")
    serve_args: list[str] = Field(default_factory=list,
                                  description="Extra `crucible serve` arguments, e.g. [\"--device\", \"cuda\"].")
    workdir: str = Field(default_factory=lambda: os.environ.get("CRUCIBLE_DEPLOY_DIR",
                                                                f"{default_home()}/deployments"),
                         description="Server logs, router state and rendered manifests.")
    image: str = Field("crucible:latest", description="kubernetes: the container image.")
    namespace: str = Field("default", description="kubernetes: the namespace.")
    gpus: int = Field(1, description="GPUs per replica (vllm tensor parallelism, TGI shards, nvidia.com/gpu).")
    engine: str = Field("crucible", description="kubernetes: the server in the pod (crucible, vllm or tgi).")

    def strategy_plan(self) -> Any:
        from crucible.deploy.strategies import strategy_from_config

        return strategy_from_config(self.strategy, canary_steps=self.canary_steps, hold_s=self.hold_s,
                                    ab_split_percent=self.ab_split_percent)

    def thresholds(self) -> Any:
        from crucible.deploy.strategies import Thresholds

        return Thresholds(self.max_error_rate, self.max_p99_ms, self.min_requests)

    def local_target(self) -> Any:
        from crucible.deploy.targets import LocalTarget

        return LocalTarget(Path(self.workdir) / "local", ready_timeout_s=self.ready_timeout_s)

    def rendered_options(self) -> dict[str, Any]:
        """The options of the rendered target class for ``target``."""
        if self.target == "kubernetes":
            return {"image": self.image, "namespace": self.namespace, "gpus": self.gpus, "engine": self.engine}
        if self.target == "vllm":
            return {"tensor_parallel_size": max(self.gpus, 1)}
        if self.target == "tgi":
            return {"num_shard": max(self.gpus, 1)}
        raise ValueError(f"deployment target {self.target!r} is not rendered (local targets run processes)")
