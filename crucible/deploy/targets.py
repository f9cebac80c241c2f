"""Where a registered version is served: ``local`` starts and stops ``crucible serve`` processes on this machine;
``vllm``, ``tgi`` and ``kubernetes`` render the launch command or manifests and validate them (not run here).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from crucible.deploy.health import wait_ready

TEMPLATES = Path(__file__).with_name("templates")


class TargetConfigError(ValueError):
    """A rendered launch command or manifest that its engine or Kubernetes would refuse."""


@dataclass(frozen=True)
class ServeSpec:
    """What to serve: a registered version (its weights' uri) and how."""

    model_name: str
    version: int
    artifact_uri: str
    sha256: str = ""
    lake_root: str | None = None
    max_new_tokens: int = 256
    extra_args: tuple[str, ...] = ()

    @property
    def served_name(self) -> str:
        """The model id clients ask for: ``<model>-v<N>``."""
        return f"{self.model_name}-v{self.version}"

    @classmethod
    def from_version(cls, version: Any, **options: Any) -> ServeSpec:
        """From a registry ``ModelVersion`` (anything with model_name, version, artifact_uri, sha256)."""
        return cls(model_name=version.model_name, version=int(version.version), artifact_uri=version.artifact_uri,
                   sha256=getattr(version, "sha256", ""), **options)


# -- local: processes on this machine -----------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the kernel's pick); the caller binds it right away."""
    with socket.socket() as probe_socket:
        probe_socket.bind((host, 0))
        return probe_socket.getsockname()[1]


@dataclass
class LocalProcess:
    """A process started by :class:`LocalTarget`: its url, pid (also its process group) and log file."""

    name: str
    url: str
    pid: int
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def serve_command(spec: ServeSpec, host: str, port: int, deployment: str | None = None) -> list[str]:
    """The ``crucible serve`` command line of ``spec``; ``deployment`` is recorded on its inference events."""
    # cli.py has no __main__ block, and the console script may not be on PATH: call its entry point.
    command = [sys.executable, "-c", "from crucible.cli import main; main()", "serve", "--model", spec.model_name,
               "--version", str(spec.version), "--host", host, "--port", str(port)]
    if deployment:
        command += ["--deployment", deployment]
    if spec.lake_root:
        command += ["--root", spec.lake_root]
    return command + list(spec.extra_args)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) no longer serves.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class LocalTarget:
    """Starts servers (and routers) as detached processes in their own process group, on free ports of
    127.0.0.1, with logs under ``workdir``; stops them by signalling the group (TERM, then KILL after
    ``grace_s``), so workers they started go too. Processes outlive the Python process that started them
    (a Dagster run), and are found again by pid."""

    def __init__(self, workdir: str | Path, *, host: str = "127.0.0.1", ready_timeout_s: float = 120.0,
                 grace_s: float = 20.0, env: Mapping[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host, self.ready_timeout_s, self.grace_s = host, ready_timeout_s, grace_s
        self.env = {**os.environ, **(env or {})}

    def _spawn(self, name: str, command: Sequence[str], log_name: str, port: int) -> LocalProcess:
        log_path = self.workdir / log_name
        with log_path.open("ab") as log:
            process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=self.env, start_new_session=True, cwd=str(self.workdir))
        return LocalProcess(name, f"http://{self.host}:{port}", process.pid, log_path, process)

    def start(self, spec: ServeSpec, deployment: str | None = None) -> LocalProcess:
        """Start ``crucible serve`` for ``spec`` (its events tagged with ``deployment``) and wait until its
        /readyz answers; a server that exits or is not ready in time is stopped and
        :class:`~crucible.deploy.health.NotReady` names its log."""
        name = f"{spec.served_name}-{deployment}" if deployment else spec.served_name
        port = free_port(self.host)
        started = self._spawn(name, serve_command(spec, self.host, port, deployment), f"{name}-{port}.log", port)
        try:
            wait_ready(started.url, self.ready_timeout_s, started.process,
                       describe=lambda: f"Log {started.log_path}:\n{started.log_tail()}")
        except BaseException:
            self.stop(started)
            raise
        return started

    def start_router(self, table: Any, name: str = "router") -> LocalProcess:
        """Start a router process (``python -m crucible.deploy.router``) with ``table`` (a RouteTable)."""
        routes = self.workdir / f"{name}-routes.json"
        routes.write_text(json.dumps(table.to_json()))
        port = free_port(self.host)
        started = self._spawn(name, [sys.executable, "-m", "crucible.deploy.router", "--host", self.host, "--port",
                                     str(port), "--routes", str(routes)], f"{name}-{port}.log", port)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((self.host, port), timeout=1):
                    return started
            except OSError:
                if started.process.poll() is not None or time.monotonic() > deadline:
                    self.stop(started)
                    raise RuntimeError(f"router {name} did not start on port {port}; log {started.log_path}:\n"
                                       f"{started.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, target: LocalProcess | int, grace_s: float | None = None) -> bool:
        """Stop a process group: SIGTERM (the server drains and flushes its events), then SIGKILL after
        ``grace_s``. Returns whether it was still running."""
        pid = target if isinstance(target, int) else target.pid
        process = None if isinstance(target, int) else target.process
        grace = self.grace_s if grace_s is None else grace_s
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                break
            if process is None and not process_alive(pid):
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if process is not None:
            process.wait(timeout=10)
        return True


# -- rendered targets: vLLM, TGI, Kubernetes --------------------------------------------------------

# The documented flags each engine takes, and the type of each flag's value (None: a switch).
VLLM_FLAGS: dict[str, type | tuple[str, ...] | None] = {
    "--host": str, "--port": int, "--served-model-name": str, "--tokenizer": str, "--dtype":
        ("auto", "half", "float16", "bfloat16", "float", "float32"),
    "--max-model-len": int, "--tensor-parallel-size": int, "--pipeline-parallel-size": int,
    "--gpu-memory-utilization": float, "--max-num-seqs": int, "--seed": int, "--chat-template": str,
    "--trust-remote-code": None, "--enable-prefix-caching": None, "--download-dir": str, "--api-key": str,
    "--quantization": str, "--revision": str, "--swap-space": float,
}
TGI_FLAGS: dict[str, type | tuple[str, ...] | None] = {
    "--model-id": str, "--hostname": str, "--port": int, "--num-shard": int, "--sharded": ("true", "false"),
    "--dtype": ("float16", "bfloat16"), "--max-input-tokens": int, "--max-total-tokens": int,
    "--max-batch-prefill-tokens": int, "--max-concurrent-requests": int, "--revision": str,
    "--quantize": ("awq", "eetq", "gptq", "bitsandbytes", "bitsandbytes-nf4", "bitsandbytes-fp4", "fp8"),
    "--trust-remote-code": None, "--huggingface-hub-cache": str, "--json-output": None,
}


def _check_flags(engine: str, arguments: Sequence[str], flags: Mapping[str, Any], required: Sequence[str]) -> None:
    seen: set[str] = set()
    index = 0
    while index < len(arguments):
        flag = arguments[index]
        if flag not in flags:
            raise TargetConfigError(f"{engine}: unknown flag {flag!r}; documented flags: {', '.join(sorted(flags))}")
        if flag in seen:
            raise TargetConfigError(f"{engine}: flag {flag} given twice")
        seen.add(flag)
        kind = flags[flag]
        if kind is None:
            index += 1
            continue
        if index + 1 >= len(arguments) or arguments[index + 1].startswith("--"):
            raise TargetConfigError(f"{engine}: flag {flag} needs a value")
        value = arguments[index + 1]
        if isinstance(kind, tuple):
            if value not in kind:
                raise TargetConfigError(f"{engine}: {flag} {value!r} is not one of {', '.join(kind)}")
        else:
            try:
                converted = kind(value)
            except ValueError:
                raise TargetConfigError(f"{engine}: {flag} {value!r} is not a valid {kind.__name__}") from None
            if kind in (int, float) and converted <= 0 and flag != "--seed":
                raise TargetConfigError(f"{engine}: {flag} must be positive, got {value}")
            if flag == "--gpu-memory-utilization" and not 0 < converted <= 1:
                raise TargetConfigError(f"{engine}: --gpu-memory-utilization must be in (0, 1], got {value}")
            if flag == "--port" and not 1 <= converted <= 65535:
                raise TargetConfigError(f"{engine}: --port must be in 1..65535, got {value}")
        index += 2
    missing = [flag for flag in required if flag not in seen]
    if missing:
        raise TargetConfigError(f"{engine}: missing required flag(s) {', '.join(missing)}")


@dataclass(frozen=True)
class VLLMTarget:
    """``vllm serve <weights> ...``: the OpenAI-compatible vLLM server for a GPU host."""

    port: int = 8000
    tensor_parallel_size: int = 1
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    extra_args: tuple[str, ...] = ()

    def render(self, spec: ServeSpec) -> list[str]:
        command = ["vllm", "serve", spec.artifact_uri, "--served-model-name", spec.served_name, "--host", "0.0.0.0",
                   "--port", str(self.port), "--tensor-parallel-size", str(self.tensor_parallel_size),
                   "--max-model-len", str(self.max_model_len), "--gpu-memory-utilization",
                   str(self.gpu_memory_utilization), "--dtype", self.dtype, *self.extra_args]
        self.validate(command)
        return command

    @staticmethod
    def validate(command: Sequence[str]) -> None:
        if list(command[:2]) != ["vllm", "serve"] or len(command) < 3 or command[2].startswith("--"):
            raise TargetConfigError(f"vllm: expected 'vllm serve <model> [flags]', got {shlex.join(command)}")
        _check_flags("vllm", command[3:], VLLM_FLAGS, required=("--served-model-name", "--port"))


@dataclass(frozen=True)
class TGITarget:
    """``text-generation-launcher --model-id <weights> ...``: Hugging Face Text Generation Inference."""

    port: int = 8080
    num_shard: int = 1
    max_input_tokens: int = 1024
    max_total_tokens: int = 2048
    dtype: str = "bfloat16"
    extra_args: tuple[str, ...] = ()

    def render(self, spec: ServeSpec) -> list[str]:
        command = ["text-generation-launcher", "--model-id", spec.artifact_uri, "--hostname", "0.0.0.0", "--port",
                   str(self.port), "--num-shard", str(self.num_shard), "--max-input-tokens",
                   str(self.max_input_tokens), "--max-total-tokens", str(self.max_total_tokens), "--dtype",
                   self.dtype, *self.extra_args]
        self.validate(command)
        return command

    @staticmethod
    def validate(command: Sequence[str]) -> None:
        if not command or command[0] != "text-generation-launcher":
            raise TargetConfigError(f"tgi: expected 'text-generation-launcher [flags]', got {shlex.join(command)}")
        _check_flags("tgi", command[1:], TGI_FLAGS, required=("--model-id", "--port"))
        values = dict(zip(command[1::2], command[2::2], strict=False))
        if "--max-input-tokens" in values and "--max-total-tokens" in values \
                and int(values["--max-input-tokens"]) >= int(values["--max-total-tokens"]):
            raise TargetConfigError(f"tgi: --max-input-tokens ({values['--max-input-tokens']}) must be below "
                                    f"--max-total-tokens ({values['--max-total-tokens']})")


@cache
def _kubernetes_schema() -> dict[str, Any]:
    return json.loads((TEMPLATES / "kubernetes_schema.json").read_text())


def _dns_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "model"


@dataclass(frozen=True)
class KubernetesTarget:
    """A Deployment and a Service for one version, serving with ``engine`` (crucible, vllm or tgi) on GPUs."""

    image: str = "crucible:latest"
    namespace: str = "default"
    replicas: int = 1
    gpus: int = 1
    engine: str = "crucible"
    port: int = 8000
    cpu: str = "2"
    memory: str = "16Gi"

    def _command(self, spec: ServeSpec) -> tuple[list[str], str, str]:
        """The container command and its readiness and liveness paths."""
        if self.engine == "crucible":
            return (["crucible", "serve", f"{spec.model_name}/v{spec.version}", "--host", "0.0.0.0", "--port",
                     str(self.port)], "/readyz", "/healthz")
        if self.engine == "vllm":
            return VLLMTarget(port=self.port, tensor_parallel_size=max(self.gpus, 1)).render(spec), "/health", "/health"
        if self.engine == "tgi":
            return TGITarget(port=self.port, num_shard=max(self.gpus, 1)).render(spec), "/health", "/health"
        raise TargetConfigError(f"kubernetes: engine {self.engine!r}: expected crucible, vllm or tgi")

    def render(self, spec: ServeSpec) -> list[dict[str, Any]]:
        """The manifests (Deployment, Service) as objects, validated; ``to_yaml`` writes them for kubectl."""
        import yaml

        name = _dns_name(spec.served_name)
        command, readiness, liveness = self._command(spec)
        labels = {"app.kubernetes.io/name": _dns_name(spec.model_name), "app.kubernetes.io/instance": name,
                  "app.kubernetes.io/managed-by": "crucible", "crucible/model-version": str(spec.version)}
        limits: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        if self.gpus:
            limits["nvidia.com/gpu"] = self.gpus  # GPUs are requested through limits only
        values = {
            "name": name, "namespace": self.namespace, "labels": labels, "selector": {"app.kubernetes.io/instance": name},
            "annotations": {"crucible/model": spec.model_name, "crucible/version": str(spec.version),
                            "crucible/artifact-uri": spec.artifact_uri, "crucible/sha256": spec.sha256},
            "replicas": self.replicas, "image": self.image, "command": command,
            "env": [{"name": "CRUCIBLE_MODEL_URI", "value": spec.artifact_uri}], "port": self.port,
            "readiness_path": readiness, "liveness_path": liveness,
            "resources": {"limits": limits, "requests": {"cpu": self.cpu, "memory": self.memory}},
        }
        text = string.Template((TEMPLATES / "kubernetes.yaml").read_text()).substitute(
            {key: json.dumps(value) for key, value in values.items()})
        manifests = [m for m in yaml.safe_load_all(text) if m]
        validate_kubernetes(manifests)
        return manifests

    @staticmethod
    def to_yaml(manifests: Sequence[Mapping[str, Any]]) -> str:
        import yaml

        return yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False)


def validate_kubernetes(manifests: Sequence[Mapping[str, Any]]) -> None:
    """Check each object against its Kubernetes schema, then what the schemas cannot say: the Deployment's
    selector matches its pod labels, the Service selects those pods, and probes use a declared port."""
    import jsonschema

    schema = _kubernetes_schema()
    pods: dict[str, dict[str, str]] = {}
    ports: set[Any] = set()
    for manifest in manifests:
        kind = manifest.get("kind")
        if kind not in ("Deployment", "Service"):
            raise TargetConfigError(f"kubernetes: unsupported kind {kind!r}; expected Deployment or Service")
        validator = jsonschema.Draft202012Validator({**schema[kind], "$defs": schema["$defs"]})
        errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
            raise TargetConfigError(f"kubernetes {kind} {manifest.get('metadata', {}).get('name')}: at {where}: "
                                    f"{errors[0].message}")
        if kind == "Deployment":
            spec = manifest["spec"]
            pod_labels = spec["template"].get("metadata", {}).get("labels", {})
            selector = spec["selector"]["matchLabels"]
            if any(pod_labels.get(k) != v for k, v in selector.items()):
                raise TargetConfigError(f"kubernetes Deployment {manifest['metadata']['name']}: selector {selector} "
                                        f"does not match the pod labels {pod_labels}")
            pods[manifest["metadata"]["name"]] = pod_labels
            for container in spec["template"]["spec"]["containers"]:
                declared = {p.get("name") for p in container.get("ports", [])} | {
                    p["containerPort"] for p in container.get("ports", [])}
                ports |= declared
                for probe_name in ("readinessProbe", "livenessProbe"):
                    probe_port = container.get(probe_name, {}).get("httpGet", {}).get("port")
                    if probe_port is not None and probe_port not in declared:
                        raise TargetConfigError(f"kubernetes Deployment {manifest['metadata']['name']}: "
                                                f"{probe_name} port {probe_port!r} is not a declared container port")
    for manifest in manifests:
        if manifest["kind"] == "Service":
            selector = manifest["spec"].get("selector", {})
            if not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pods.values()):
                raise TargetConfigError(f"kubernetes Service {manifest['metadata']['name']}: selector {selector} "
                                        f"selects no pod of the rendered Deployments")
            for port in manifest["spec"]["ports"]:
                if port.get("targetPort") is not None and port["targetPort"] not in ports:
                    raise TargetConfigError(f"kubernetes Service {manifest['metadata']['name']}: targetPort "
                                            f"{port['targetPort']!r} is not a container port of its pods")


RENDERED_TARGETS = {"vllm": VLLMTarget, "tgi": TGITarget, "kubernetes": KubernetesTarget}


def render_target(target: str, spec: ServeSpec, **options: Any) -> list[str] | list[dict[str, Any]]:
    """The rendered, validated launch command (vllm, tgi) or manifests (kubernetes) of ``spec``."""
    if target not in RENDERED_TARGETS:
        raise ValueError(f"deployment target {target!r} is not rendered; rendered targets: "
                         f"{', '.join(RENDERED_TARGETS)} (local targets run processes)")
    return RENDERED_TARGETS[target](**options).render(spec)
