"""The deployments table and its state machine: pending -> deploying -> canary -> active, or rolling_back ->
rolled_back / failed; an active deployment is terminated when it stops serving.

Every change is a read-modify-write of one row against what is stored, so two controllers moving the
same deployment cannot both succeed from the same state: the second sees the first's state and raises.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crucible.lake import DeltaLake
from schemas import DEPLOYMENTS
from schemas.deploy import DEPLOYMENT_STATES

# From each state, the states it may move to. rolled_back, failed and terminated are final.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"deploying", "failed", "terminated"}),
    "deploying": frozenset({"canary", "active", "rolling_back", "failed"}),
    "canary": frozenset({"active", "rolling_back", "failed"}),
    "active": frozenset({"rolling_back", "terminated"}),
    "rolling_back": frozenset({"rolled_back", "failed"}),
    "rolled_back": frozenset(),
    "failed": frozenset(),
    "terminated": frozenset(),
}
# States in which a deployment's processes are up and should be probed.
LIVE_STATES = ("deploying", "canary", "active", "rolling_back")


class IllegalTransition(ValueError):
    """A state change the state machine does not allow (or a deployment that moved meanwhile)."""


class DeploymentNotFound(LookupError):
    """No deployment with that id in ``deployment/deployments``."""


def check_transition(deployment_id: str, current: str, new: str) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> new`` is allowed."""
    if new not in DEPLOYMENT_STATES:
        raise IllegalTransition(f"deployment {deployment_id}: unknown state {new!r}; states: "
                                f"{', '.join(DEPLOYMENT_STATES)}")
    allowed = TRANSITIONS[current]
    if new not in allowed:
        raise IllegalTransition(f"deployment {deployment_id}: cannot move from {current} to {new}; from {current} "
                                f"it may move to {', '.join(sorted(allowed)) or 'nothing (final state)'}")


@dataclass(frozen=True)
class Deployment:
    """One row of ``deployment/deployments`` as code sees it."""

    deployment_id: str
    model_name: str
    model_version: int
    target: str
    strategy: str
    state: str
    traffic_percent: float
    artifact_uri: str
    created_at: pd.Timestamp
    updated_at: pd.Timestamp
    previous_version: int | None = None
    endpoint: str | None = None
    backend_url: str | None = None
    pid: int | None = None
    reason: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def row(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id, "model_name": self.model_name,
                "model_version": self.model_version, "target": self.target, "strategy": self.strategy,
                "state": self.state, "traffic_percent": float(self.traffic_percent),
                "previous_version": self.previous_version, "artifact_uri": self.artifact_uri,
                "endpoint": self.endpoint, "backend_url": self.backend_url, "pid": self.pid, "reason": self.reason,
                "config": json.dumps(self.config, sort_keys=True, default=str),
                "history": json.dumps(list(self.history), default=str), "created_at": self.created_at,
                "updated_at": self.updated_at}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Deployment:
        def optional(name: str) -> Any:
            value = row.get(name)
            return None if value is None or pd.isna(value) else value

        previous, pid = optional("previous_version"), optional("pid")
        return cls(deployment_id=row["deployment_id"], model_name=row["model_name"],
                   model_version=int(row["model_version"]), target=row["target"], strategy=row["strategy"],
                   state=row["state"], traffic_percent=float(row["traffic_percent"]),
                   artifact_uri=row["artifact_uri"], created_at=pd.Timestamp(row["created_at"]),
                   updated_at=pd.Timestamp(row["updated_at"]),
                   previous_version=None if previous is None else int(previous), endpoint=optional("endpoint"),
                   backend_url=optional("backend_url"), pid=None if pid is None else int(pid),
                   reason=optional("reason"), config=json.loads(row["config"] or "{}"),
                   history=tuple(json.loads(row["history"] or "[]")))


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=DEPLOYMENTS.columns)
    for column in ("previous_version", "pid"):
        frame[column] = frame[column].astype("Int64")
    return frame


def create_deployment(lake: DeltaLake, *, model_name: str, model_version: int, target: str, strategy: str,
                      artifact_uri: str, previous_version: int | None = None, config: Mapping[str, Any] | None = None,
                      deployment_id: str | None = None) -> Deployment:
    """Insert a new deployment in state ``pending``; an existing ``deployment_id`` is an error."""
    from schemas.deploy import STRATEGIES, TARGETS

    if target not in TARGETS:
        raise ValueError(f"deployment target {target!r}: expected one of {', '.join(TARGETS)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"deployment strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    now = pd.Timestamp.now(tz="UTC")
    deployment = Deployment(
        deployment_id=deployment_id or f"dep-{uuid.uuid4().hex[:12]}", model_name=model_name,
        model_version=int(model_version), target=target, strategy=strategy, state="pending", traffic_percent=0.0,
        artifact_uri=artifact_uri, created_at=now, updated_at=now, previous_version=previous_version,
        config=dict(config or {}), history=({"state": "pending", "at": now.isoformat(), "reason": "created"},))

    def insert(rows: pd.DataFrame) -> pd.DataFrame:
        if not rows.empty:
            raise ValueError(f"deployment {deployment.deployment_id} already exists (state {rows['state'].iloc[0]})")
        return _frame([deployment.row()])

    lake.read_modify_write(DEPLOYMENTS, {"deployment_id": deployment.deployment_id}, insert)
    return deployment


def get_deployment(lake: DeltaLake, deployment_id: str) -> Deployment:
    rows = lake.read(DEPLOYMENTS, where={"deployment_id": deployment_id})
    if rows.empty:
        raise DeploymentNotFound(f"no deployment {deployment_id!r} in {DEPLOYMENTS.path}")
    return Deployment.from_row(rows.iloc[0].to_dict())


def list_deployments(lake: DeltaLake, states: tuple[str, ...] | None = None,
                     model_name: str | None = None) -> list[Deployment]:
    """Deployments, oldest first, optionally only those in ``states`` and of ``model_name``."""
    where: dict[str, Any] = {}
    if states:
        where["state"] = list(states)
    if model_name:
        where["model_name"] = model_name
    rows = lake.read(DEPLOYMENTS, where=where or None)
    if rows.empty:
        return []
    return [Deployment.from_row(r) for r in rows.sort_values("created_at").to_dict("records")]


def transition(lake: DeltaLake, deployment_id: str, new_state: str, *, reason: str | None = None,
               **changes: Any) -> Deployment:
    """Move a deployment to ``new_state`` (checked against the stored state) and set ``changes``
    (traffic_percent, endpoint, backend_url, pid, previous_version, config) in the same commit."""
    return _change(lake, deployment_id, new_state, reason, changes)


def update(lake: DeltaLake, deployment_id: str, *, reason: str | None = None, **changes: Any) -> Deployment:
    """Change fields of a deployment without changing its state (traffic of a canary step, its pid)."""
    return _change(lake, deployment_id, None, reason, changes)


_CHANGEABLE = {"traffic_percent", "endpoint", "backend_url", "pid", "previous_version", "config"}


def _change(lake: DeltaLake, deployment_id: str, new_state: str | None, reason: str | None,
            changes: Mapping[str, Any]) -> Deployment:
    unknown = set(changes) - _CHANGEABLE
    if unknown:
        raise ValueError(f"deployment {deployment_id}: cannot change {', '.join(sorted(unknown))}; changeable: "
                         f"{', '.join(sorted(_CHANGEABLE))}")
    result: list[Deployment] = []

    def change(rows: pd.DataFrame) -> pd.DataFrame:
        result.clear()
        if rows.empty:
            raise DeploymentNotFound(f"no deployment {deployment_id!r} in {DEPLOYMENTS.path}")
        current = Deployment.from_row(rows.iloc[0].to_dict())
        now = pd.Timestamp.now(tz="UTC")
        history = current.history
        values = dict(changes)
        if new_state is not None:
            check_transition(deployment_id, current.state, new_state)
            history = (*history, {"state": new_state, "at": now.isoformat(), "reason": reason})
            values["state"] = new_state
        if reason is not None:
            values["reason"] = reason
        if "traffic_percent" in values:
            values["traffic_percent"] = float(values["traffic_percent"])
        updated = Deployment(**{**current.__dict__, **values, "history": history, "updated_at": now})
        result.append(updated)
        return _frame([updated.row()])

    lake.read_modify_write(DEPLOYMENTS, {"deployment_id": deployment_id}, change)
    return result[0]


# -- rolling out on this machine ----------------------------------------------------------------


def _router_alive(endpoint: str | None) -> bool:
    import urllib.error
    import urllib.request

    if not endpoint:
        return False
    try:
        with urllib.request.urlopen(f"{endpoint}/_router/healthz", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def serving_deployment(lake: DeltaLake, model_name: str, target: str = "local") -> Deployment | None:
    """The active deployment of ``model_name`` on ``target`` (the newest, should there be several)."""
    active = [d for d in list_deployments(lake, states=("active",), model_name=model_name) if d.target == target]
    return active[-1] if active else None


def deploy_local(lake: DeltaLake, spec: Any, *, target: Any, strategy: Any, thresholds: Any = None,
                 candidate_timeout_s: float = 10.0, drain_s: float = 1.0, judge_alpha: float = 0.05,
                 deployment_id: str | None = None, config: Mapping[str, Any] | None = None,
                 on_event: Any = None) -> Deployment:
    """Roll ``spec`` (a :class:`~crucible.deploy.targets.ServeSpec`) out on this machine with ``strategy``.

    The new version's server starts next to the serving one; the model's router (one process per model,
    its url the deployments' ``endpoint``) moves traffic step by step; the new version either becomes
    ``active`` (the previous deployment is drained, stopped and ``terminated``) or is ``rolled_back`` (its
    server stopped, the previous one never stopped serving). A server that never gets ready ends ``failed``.
    Every state change is a row update of ``deployment/deployments``.
    """
    from crucible.deploy.health import NotReady
    from crucible.deploy.router import RouterClient, RouteTable
    from crucible.deploy.strategies import Backend, Thresholds, run_rollout, thumbs_test
    from crucible.deploy.targets import process_alive

    live = [d for d in list_deployments(lake, states=("pending", "deploying", "canary", "rolling_back"),
                                        model_name=spec.model_name) if d.target == "local"]
    if live:
        raise RuntimeError(f"model {spec.model_name}: deployment {live[0].deployment_id} (v{live[0].model_version}) "
                           f"is still {live[0].state}; wait for it to finish or terminate it first")
    previous = serving_deployment(lake, spec.model_name)
    if previous is not None and not (previous.pid and process_alive(previous.pid)):
        transition(lake, previous.deployment_id, "terminated", reason="its server is no longer running")
        previous = None
    deployment = create_deployment(
        lake, model_name=spec.model_name, model_version=spec.version, target="local", strategy=strategy.name,
        artifact_uri=spec.artifact_uri, previous_version=previous.model_version if previous else None,
        config={**dict(config or {}), "thresholds": (thresholds or Thresholds()).__dict__,
                "steps": [s.__dict__ for s in strategy.steps]}, deployment_id=deployment_id)
    did = deployment.deployment_id
    notify = on_event or (lambda message: None)
    transition(lake, did, "deploying", reason=f"starting {spec.served_name}")
    try:
        server = target.start(spec, deployment=did)
    except (NotReady, OSError) as error:
        notify(f"{did}: {spec.served_name} did not start: {error}")
        return transition(lake, did, "failed", reason=f"server did not become ready: {error}")
    router_pid = (previous.config.get("router_pid") if previous else None)
    endpoint = previous.endpoint if previous else None
    notify(f"{did}: {spec.served_name} ready at {server.url} (pid {server.pid})")
    update(lake, did, backend_url=server.url, pid=server.pid)
    stable = Backend(previous.deployment_id, previous.backend_url) if previous and previous.backend_url else None
    if not _router_alive(endpoint):
        router = target.start_router(RouteTable.single(stable.name, stable.url) if stable else
                                     RouteTable.single(did, server.url), name=f"router-{spec.model_name}")
        endpoint, router_pid = router.url, router.pid
    update(lake, did, endpoint=endpoint, config={**deployment.config, "router_pid": router_pid})
    started_at = deployment.created_at

    def judge() -> Any:
        from schemas import INFERENCE_EVENTS, SIGNALS

        events = lake.read(INFERENCE_EVENTS, where={"model_name": spec.model_name})
        events = events.loc[events["timestamp"] >= started_at]
        signals = lake.read(SIGNALS)
        return thumbs_test(events, signals, previous.model_version, spec.version, alpha=judge_alpha)

    def on_step(event: str, percent: float, reason: str | None) -> None:
        notify(f"{did}: {event} {percent:g}%" + (f" ({reason})" if reason else ""))
        current = get_deployment(lake, did)
        if event == "step":
            if current.state == "deploying":
                transition(lake, did, "canary", reason=f"{percent:g}% of traffic", traffic_percent=percent)
            else:
                update(lake, did, traffic_percent=percent)
        elif event == "rolled_back":
            transition(lake, did, "rolling_back", reason=reason, traffic_percent=0.0)

    try:
        result = run_rollout(RouterClient(endpoint), Backend(did, server.url), stable, strategy,
                             thresholds or Thresholds(), candidate_timeout_s=candidate_timeout_s,
                             judge=judge if stable else None, on_step=on_step)
    except Exception as error:
        # The controller itself broke (router unreachable, lake error): hand traffic back and leave no orphan.
        if stable is not None and _router_alive(endpoint):
            RouterClient(endpoint).set_routes(RouteTable.single(stable.name, stable.url))
        target.stop(server)
        state = get_deployment(lake, did).state
        if state in ("deploying", "canary", "rolling_back"):
            transition(lake, did, "failed", reason=f"rollout aborted: {type(error).__name__}: {error}")
        raise
    if result.outcome == "rolled_back":
        time.sleep(drain_s)  # requests already sent to it finish (or are retried on the stable version)
        target.stop(server)
        notify(f"{did}: {spec.served_name} stopped")
        return transition(lake, did, "rolled_back", reason=result.reason)
    final = transition(lake, did, "active", reason=result.reason, traffic_percent=100.0)
    if previous is not None:
        time.sleep(drain_s)
        target.stop(previous.pid)
        notify(f"{did}: previous deployment {previous.deployment_id} stopped")
        transition(lake, previous.deployment_id, "terminated", reason=f"replaced by {did} (v{spec.version})",
                   traffic_percent=0.0)
    return final


def terminate_local(lake: DeltaLake, deployment_id: str, target: Any, stop_router: bool = True) -> Deployment:
    """Stop a local deployment's server (and, with ``stop_router``, its model's router) and mark it terminated."""
    deployment = get_deployment(lake, deployment_id)
    if deployment.pid:
        target.stop(deployment.pid)
    router_pid = deployment.config.get("router_pid")
    if stop_router and router_pid:
        target.stop(int(router_pid))
    return transition(lake, deployment_id, "terminated", reason="terminated on request", traffic_percent=0.0)


def render_deployment(lake: DeltaLake, spec: Any, target: str, folder: str | Path, strategy: str = "replace",
                      **options: Any) -> tuple[Deployment, Path]:
    """Render and validate ``spec`` for a target that is not run here (vllm, tgi, kubernetes), write it under
    ``folder`` (manifests as YAML, commands as a shell line) and record a ``pending`` deployment naming the file."""
    import shlex

    from crucible.deploy.targets import KubernetesTarget, render_target

    rendered = render_target(target, spec, **options)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if target == "kubernetes":
        path = folder / f"{spec.served_name}.yaml"
        path.write_text(KubernetesTarget.to_yaml(rendered))
        how = f"kubectl apply -f {path}"
    else:
        path = folder / f"{spec.served_name}.{target}.sh"
        path.write_text(shlex.join(rendered) + "\n")
        how = f"run {path} on a GPU host"
    deployment = create_deployment(lake, model_name=spec.model_name, model_version=spec.version, target=target,
                                   strategy=strategy, artifact_uri=spec.artifact_uri,
                                   config={"rendered": str(path), "options": options})
    return update(lake, deployment.deployment_id, reason=f"rendered, not run here: {how}"), path
