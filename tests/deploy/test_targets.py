"""Targets: Kubernetes manifests, vLLM and TGI command lines rendered from a registered version and validated
(broken ones refused with the reason); local processes started detached and stopped with their whole group."""

from __future__ import annotations

import copy
import json
import os
import time

import pytest

from crucible.deploy.router import RouterClient, RouteTable
from crucible.deploy.targets import (
    KubernetesTarget,
    LocalTarget,
    ServeSpec,
    TargetConfigError,
    TGITarget,
    VLLMTarget,
    process_alive,
    render_target,
    validate_kubernetes,
)
from tests.deploy.backends import Backend
from tests.deploy.test_router import call

SPEC = ServeSpec("Tiny_GPT", 3, "s3://models/tiny/v3/checkpoint", "ab" * 32)


def test_kubernetes_manifests_carry_the_version_probes_and_gpus():
    deployment, service = KubernetesTarget(gpus=2, replicas=2, namespace="ml").render(SPEC)
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    assert deployment["metadata"]["name"] == "tiny-gpt-v3" and deployment["metadata"]["namespace"] == "ml"
    assert deployment["metadata"]["annotations"]["crucible/artifact-uri"] == SPEC.artifact_uri
    assert deployment["metadata"]["annotations"]["crucible/sha256"] == SPEC.sha256
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["crucible", "serve", "Tiny_GPT/v3"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    text = KubernetesTarget.to_yaml([deployment, service])
    assert text.count("kind:") == 2 and "nvidia.com/gpu: 2" in text


def test_kubernetes_with_vllm_in_the_pod_uses_the_vllm_command_and_its_health_path():
    deployment, _ = KubernetesTarget(engine="vllm", gpus=4).render(SPEC)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["vllm", "serve", SPEC.artifact_uri]
    assert "--tensor-parallel-size" in container["command"] and container["readinessProbe"]["httpGet"]["path"] == "/health"


def _broken(change):
    manifests = KubernetesTarget().render(SPEC)
    broken = copy.deepcopy(manifests)
    change(broken)
    return broken


@pytest.mark.parametrize("change, message", [
    (lambda m: m[0]["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}), "readinesProbe"),
    (lambda m: m[0]["spec"].update(replicas="two"), "'two' is not of type 'integer'"),
    (lambda m: m[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(
        {"nvidia.com/gpu": "lots"}), "lots"),
    (lambda m: m[0]["metadata"].update(name="Tiny_GPT"), "does not match"),
    (lambda m: m[0]["spec"]["selector"]["matchLabels"].update(app="other"), "does not match the pod labels"),
    (lambda m: m[1]["spec"].update(selector={"app": "nobody"}), "selects no pod"),
    (lambda m: m[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"].update(port="metrics"),
     "livenessProbe port 'metrics' is not a declared container port"),
    (lambda m: m[1]["spec"]["ports"][0].update(targetPort=9999), "targetPort 9999"),
    (lambda m: m[0]["spec"].pop("template"), "'template' is a required property"),
    (lambda m: m[0].update(kind="StatefulSet"), "unsupported kind 'StatefulSet'"),
])
def test_kubernetes_validation_refuses_broken_manifests(change, message):
    with pytest.raises(TargetConfigError, match=message):
        validate_kubernetes(_broken(change))


def test_vllm_and_tgi_commands_use_documented_flags():
    vllm = VLLMTarget(tensor_parallel_size=2).render(SPEC)
    assert vllm[:3] == ["vllm", "serve", SPEC.artifact_uri]
    assert vllm[vllm.index("--served-model-name") + 1] == "Tiny_GPT-v3" and vllm[vllm.index("--tensor-parallel-size") + 1] == "2"
    tgi = render_target("tgi", SPEC, num_shard=2)
    assert tgi[0] == "text-generation-launcher" and tgi[tgi.index("--model-id") + 1] == SPEC.artifact_uri


@pytest.mark.parametrize("build, message", [
    (lambda: VLLMTarget(extra_args=("--tensor-paralel-size", "2")).render(SPEC), "unknown flag '--tensor-paralel-size'"),
    (lambda: VLLMTarget(gpu_memory_utilization=1.5).render(SPEC), "must be in \\(0, 1\\]"),
    (lambda: VLLMTarget(dtype="fp4").render(SPEC), "'fp4' is not one of"),
    (lambda: VLLMTarget(extra_args=("--port", "9")).render(SPEC), "--port given twice"),
    (lambda: VLLMTarget.validate(["vllm", "serve", "m", "--port"]), "--port needs a value"),
    (lambda: VLLMTarget.validate(["vllm", "serve", "m", "--port", "80"]), "missing required flag.*--served-model-name"),
    (lambda: TGITarget(max_input_tokens=4096, max_total_tokens=2048).render(SPEC), "must be below --max-total-tokens"),
    (lambda: TGITarget(num_shard=0).render(SPEC), "--num-shard must be positive"),
    (lambda: TGITarget(port=70000).render(SPEC), "--port must be in 1..65535"),
    (lambda: render_target("local", SPEC), "is not rendered"),
    (lambda: KubernetesTarget(engine="triton").render(SPEC), "engine 'triton'"),
])
def test_launch_commands_that_their_engine_would_refuse_are_refused(build, message):
    with pytest.raises((TargetConfigError, ValueError), match=message):
        build()


def test_local_target_runs_a_detached_router_process(tmp_path):
    target = LocalTarget(tmp_path, grace_s=5)
    with Backend("a") as a:
        router = target.start_router(RouteTable.single("a", a.url))
        assert os.getpgid(router.pid) == router.pid != os.getpgid(0)  # its own group, not the test's
        assert call(router.url)[1]["backend"] == "a"
        assert RouterClient(router.url).stats().of("a")["requests"] == 1
        assert target.stop(router) is True and not process_alive(router.pid)
        assert target.stop(router.pid) is False  # already gone


def test_stopping_a_local_process_stops_the_children_it_started(tmp_path):
    target = LocalTarget(tmp_path, grace_s=5)
    # A shell that starts a worker and ignores SIGTERM itself: only the group's SIGKILL ends it.
    script = f"trap '' TERM; sleep 60 & echo $! > {tmp_path}/child.pid; wait"
    started = target._spawn("tree", ["bash", "-c", script], "tree.log", 0)
    deadline = time.monotonic() + 10
    while not (tmp_path / "child.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    assert process_alive(child)
    begun = time.monotonic()
    assert target.stop(started, grace_s=0.5) is True
    assert 0.5 <= time.monotonic() - begun < 5
    deadline = time.monotonic() + 5
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(child) and started.process.returncode == -9


def test_local_target_reports_a_server_that_exits_before_it_is_ready(tmp_path, lake):
    target = LocalTarget(tmp_path, ready_timeout_s=60)
    spec = ServeSpec("nobody", 1, "/nowhere", lake_root=str(lake.root))
    started = time.monotonic()
    with pytest.raises(Exception, match="exited with code") as failure:
        target.start(spec, deployment="dep-x")
    assert "nobody" in str(failure.value) and time.monotonic() - started < 60
    assert json.dumps(str(failure.value))  # the message carries the server's log tail
