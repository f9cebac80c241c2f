"""The ``crucible registry`` command through click's runner (and once as a real process): every subcommand,
tokens from --token or the environment, and mistakes printed as one clear line with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from crucible.cli import main
from tests.registry.conftest import make_checkpoint

NO_TOKEN = {"CRUCIBLE_REGISTRY_TOKEN": None}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A lake with an admin, a trainer and an approver (created through the CLI) and two registered versions."""
    root = tmp_path_factory.mktemp("cli")
    world = {"root": root, "lake": str(root / "lake"), "store": str(root / "store")}
    runner = CliRunner()

    def run(*args: str, token: str | None = None, env: dict | None = None):
        command = [*args, "--root", world["lake"], *(["--token", token] if token else [])]
        return runner.invoke(main, ["registry", *command], env={**NO_TOKEN, **(env or {})})

    world["run"] = run
    first = run("principal", "create", "ada", "--role", "admin", "--json")
    assert first.exit_code == 0, first.output
    created = json.loads(first.output)
    assert created["bootstrap"] is True and created["token"].startswith("crt_")
    world["admin"] = created["token"]
    for name, role in (("tom", "trainer"), ("amy", "approver"), ("val", "viewer")):
        result = run("principal", "create", name, "--role", role, "--json", token=world["admin"])
        assert result.exit_code == 0, result.output
        world[role] = json.loads(result.output)["token"]
    for seed, extra in ((1, ["--tag", "math", "--base-model", "tiny-llama", "--training-config", '{"lr": 0.001}']),
                        (2, ["--parent-version", "1", "--training-config", '{"lr": 0.0005}'])):
        checkpoint = make_checkpoint(root / f"ckpt-{seed}", seed)
        result = run("register", "tiny", "--checkpoint", str(checkpoint), "--run-id", f"run-{seed}", "--dataset",
                     "gsm8k", "--dataset-version", str(2 + seed), "--metric", f"gsm8k/exact_match={0.2 * seed}",
                     "--store", world["store"], *extra, token=world["trainer"])
        assert result.exit_code == 0, result.output
        assert f"registered tiny v{seed} (experiment)" in result.output
    return world


def test_principal_bootstrap_happens_once_and_then_needs_an_admin(world):
    run = world["run"]
    again = run("principal", "create", "eve", "--role", "admin")
    assert again.exit_code == 1 and "pass --token or set CRUCIBLE_REGISTRY_TOKEN" in again.output
    refused = run("principal", "create", "eve", "--role", "admin", token=world["trainer"])
    assert refused.exit_code == 1
    assert "principal 'tom' may not create principal 'eve': needs role admin; has trainer" in refused.output
    assert "Traceback" not in refused.output
    listed = json.loads(run("principal", "list", "--json").output)
    assert {(p["name"], tuple(p["roles"])) for p in listed} == {
        ("ada", ("admin",)), ("tom", ("trainer",)), ("amy", ("approver",)), ("val", ("viewer",))}
    assert "crt_" not in run("principal", "list").output


def test_list_and_show(world):
    run = world["run"]
    rows = json.loads(run("list", "--json").output)
    assert [(r["model_name"], r["version"], r["stage"]) for r in rows] == [("tiny", 1, "experiment"),
                                                                          ("tiny", 2, "experiment")]
    assert rows[0]["metrics"] == {"gsm8k/exact_match": 0.2} and rows[0]["tags"] == ["math"]
    table = run("list", "tiny")
    assert table.exit_code == 0 and "gsm8k@v3" in table.output and "gsm8k/exact_match=0.4" in table.output

    shown = json.loads(run("show", "tiny/v2", "--json").output)
    [artifact] = shown["artifacts"]
    assert artifact["artifact_type"] == "checkpoint" and artifact["uri"].startswith(world["store"])
    assert shown["training_config"] == {"lr": 0.0005} and shown["created_by"] == "tom"
    assert {(hop["source"], hop["relation"]) for hop in shown["lineage"]} == {
        ("run:run-2", "produced"), ("dataset:gsm8k@v4", "trained_on"), ("model:tiny/v1", "fine_tuned_from")}
    text = run("show", "tiny")
    assert text.exit_code == 0 and "tiny v2" in text.output and "model:tiny/v1" in text.output


def test_promote_needs_the_right_role_and_takes_the_token_from_the_environment(world):
    run = world["run"]
    staged = run("promote", "tiny/v1", "--to", "staging", token=world["trainer"])
    assert staged.exit_code == 0 and "tiny v1: experiment -> staging" in staged.output
    refused = run("promote", "tiny/v1", token=world["trainer"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert ("principal 'tom' may not move tiny v1 from staging to production: needs role approver or admin; "
            "has trainer") in refused.output
    promoted = run("promote", "tiny/v1", "--json", env={"CRUCIBLE_REGISTRY_TOKEN": world["approver"]})
    assert promoted.exit_code == 0, promoted.output
    event = json.loads(promoted.output)
    assert (event["action"], event["principal"], event["details"]["to"]) == ("promote", "amy", "production")
    assert json.loads(run("show", "tiny@production", "--json").output)["version"] == 1
    bad = run("promote", "tiny/v1", "--to", "experiment", token=world["admin"])
    assert bad.exit_code == 1 and "cannot move from production to experiment" in bad.output


def test_alias_set_move_and_delete(world):
    run = world["run"]
    assert "tiny@champion -> v1" in run("alias", "tiny", "champion", "1", token=world["trainer"]).output
    assert "tiny@champion -> v2 (was v1)" in run("alias", "tiny", "champion", "v2", token=world["trainer"]).output
    assert json.loads(run("show", "tiny@champion", "--json").output)["version"] == 2
    viewer = run("alias", "tiny", "champion", "1", token=world["viewer"])
    assert viewer.exit_code == 1 and "needs role trainer or admin; has viewer" in viewer.output
    assert "removed" in run("alias", "tiny", "champion", "--delete", token=world["trainer"]).output
    gone = run("show", "tiny@champion")
    assert gone.exit_code == 1 and "model 'tiny' has no alias 'champion'" in gone.output
    unset = run("alias", "tiny", "champion", "1")
    assert unset.exit_code == 1 and "pass --token or set CRUCIBLE_REGISTRY_TOKEN" in unset.output
    wrong = run("alias", "tiny", "champion", "1", token="crt_0123456789abcdef.nope")
    assert wrong.exit_code == 1 and "--token/$CRUCIBLE_REGISTRY_TOKEN: registry token" in wrong.output


def test_lineage_both_ways(world):
    run = world["run"]
    up = json.loads(run("lineage", "tiny/v2", "--json").output)
    assert up["node"] == "model:tiny/v2" and up["direction"] == "ancestors"
    assert {"base:tiny-llama", "run:run-1", "dataset:gsm8k@v3"} <= {e["source"] for e in up["edges"]}
    near = json.loads(run("lineage", "tiny/v2", "--depth", "1", "--json").output)
    assert {e["depth"] for e in near["edges"]} == {1}
    down = json.loads(run("lineage", "dataset:gsm8k@v3", "--descendants", "--json").output)
    assert {e["target"] for e in down["edges"]} == {"model:tiny/v1", "model:tiny/v2"}
    assert "fine_tuned_from" in run("lineage", "tiny/v2").output
    bad = run("lineage", "dataset:gsm8k")
    assert bad.exit_code == 1 and "is not a node id" in bad.output


def test_query_and_its_errors(world):
    run = world["run"]
    found = json.loads(run("query", 'metrics."gsm8k/exact_match" > 0.3 and tag != "math"', "--json").output)
    assert [r["version"] for r in found] == [2]
    ordered = json.loads(run("query", "order by version desc limit 1", "--json").output)
    assert [r["version"] for r in ordered] == [2]
    bad = run("query", "stage = = 'x'")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "stage = = 'x'\n" in bad.output and "        ^" in bad.output
    unknown = run("query", "stag = 'x'")
    assert unknown.exit_code == 1 and "stag" in unknown.output
    missing = run("show", "tiny/v9")
    assert missing.exit_code == 1 and "model 'tiny' has no version 9 (versions: 1, 2)" in missing.output


def test_compare(world):
    run = world["run"]
    data = json.loads(run("compare", "tiny/v1", "tiny/v2", "--json").output)
    assert data["config_diff"] == {"lr": {"v1": 0.001, "v2": 0.0005}}
    assert data["metric_deltas"]["gsm8k/exact_match"]["v2"] == pytest.approx(0.2)
    assert data["statistics"] == [] and "no benchmark with results for both" in data["notes"][0]
    markdown = run("compare", "tiny/v1", "tiny/v2", "--markdown").output
    assert "## Training config differences" in markdown and "| lr | 0.001 | 0.0005 |" in markdown
    table = run("compare", "tiny/v1", "tiny/v2")
    assert table.exit_code == 0 and "│ lr  │ 0.001 │ 0.0005 │" in table.output
    assert "model:tiny/v1 -[fine_tuned_from]-> <self>" in table.output
    one = run("compare", "tiny/v1")
    assert one.exit_code == 1 and "at least two versions" in one.output


def test_register_refusals_are_clear(world, tmp_path):
    run = world["run"]
    checkpoint = make_checkpoint(tmp_path / "c", 9)
    args = ["register", "tiny", "--checkpoint", str(checkpoint), "--run-id", "r", "--dataset", "d",
            "--dataset-version", "1", "--store", world["store"]]
    viewer = run(*args, token=world["viewer"])
    assert viewer.exit_code == 1 and "principal 'val' may not register a version of 'tiny'" in viewer.output
    metric = run(*args, "--metric", "acc=high", token=world["trainer"])
    assert metric.exit_code == 2 and "metric values are numbers" in metric.output
    stage = run(*args, "--stage", "production", token=world["trainer"])
    assert stage.exit_code == 1 and "promote it with transition() afterwards" in stage.output


def test_the_installed_command_runs_as_a_real_process(world):
    crucible = Path(sys.executable).with_name("crucible")
    listed = subprocess.run([str(crucible), "registry", "list", "tiny", "--root", world["lake"], "--json"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [r["version"] for r in json.loads(listed.stdout)] == [1, 2]
    denied = subprocess.run([str(crucible), "registry", "promote", "tiny/v2", "--to", "staging", "--root", world["lake"]],
                            capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "CRUCIBLE_REGISTRY_TOKEN": world["viewer"]})
    assert denied.returncode == 1 and "Traceback" not in denied.stderr
    assert denied.stderr.startswith("Error: principal 'val' may not move tiny v2 from experiment to staging")
