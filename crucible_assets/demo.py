"""The main job: the whole life cycle on the embedded default, recorded in a real Dagster instance.

``python -m crucible_assets.demo`` loads GSM8K, fine-tunes a tiny model on CPU, evaluates and
registers it, serves three days of traffic (drift planted on the last), lets the drift sensor
decide, runs the retraining it asks for, and prints what was produced. Open the same instance in
the web UI with ``dagster dev -w workspace.yaml`` (same ``DAGSTER_HOME``) to see every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path


def _prepare_home(home: Path) -> None:
    os.environ.setdefault("CRUCIBLE_HOME", str(home))
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home")))
    from crucible_assets.instance import ensure_instance_config

    ensure_instance_config(dagster_home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def smollm2_profile(cache_dir: Path) -> dict[str, dict]:
    """Launchpad configs that swap the tiny model for the real SmolLM2-135M-Instruct (LoRA), sized
    so that training, evaluation and traffic stay within minutes on 2 CPU cores."""
    from crucible.train.models import offline_smollm2

    folder = offline_smollm2(cache_dir)
    return {
        "training": {"recipe": "sft_smollm2_gsm8k", "dataset_limit": 32,
                     "overrides": {"base_model.name_or_path": str(folder)},
                     "hyperparameters": {"max_steps": 4, "batch_size": 4, "max_length": 256, "eval_every": 0,
                                         "checkpoint_every": 0, "device": "cpu"}},
        "evaluation": {"limit": 4, "max_new_tokens": 24},
        "traffic": {"events_per_day": 12, "max_new_tokens": 8},
    }


def _retrain_config(profile: dict, request_config: dict | None = None) -> dict:
    """retrain_job's run config: the profile's training/evaluation settings, plus what a sensor asked for
    (the feedback window to curate and train on, and why)."""
    ops = {"training__sft_checkpoint": {"config": dict(profile.get("training", {}))}}
    if profile.get("evaluation"):
        ops["evaluation__eval_results"] = {"config": profile["evaluation"]}
    for op, settings in ((request_config or {}).get("ops") or {}).items():
        ops.setdefault(op, {"config": {}})["config"].update(settings.get("config", {}))
    return {"ops": ops}


RETRAINING_SENSORS = ("drift_retraining_sensor", "quality_retraining_sensor", "curated_volume_retraining_sensor")


def demo_real_traffic(day: dt.date, version: int, resources: dict, instance, defs, echo=print) -> dict:
    """Real (non-simulated) traffic for ``day``: a JSONL file dropped in the feedback inbox (ingested
    through the inbox sensor's run) and events and thumbs posted over HTTP; PII in both is scrubbed."""
    import json

    import dagster as dg
    import requests

    from crucible.feedback.http import FeedbackServer

    inbox = Path(resources["feedback"].inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    stamp = f"{day.isoformat()}T09:00:00Z"
    base = {"deployment": "support-bot", "model_name": "crucible-sft", "model_version": version, "timestamp": stamp}
    lines = [
        {**base, "event_id": f"demo-file-{i}", "prompt": prompt, "response": answer, "latency_ms": 120.0 + i}
        for i, (prompt, answer) in enumerate([
            ("My card 4111 1111 1111 1111 was charged twice, refund please", "I have opened a refund request."),
            ("Send the invoice INV-2024-000123 to jane.doe@example.com", "Done: the invoice is on its way."),
            ("Login fails from 203.0.113.7 with Bearer abcdef1234567890abcdef", "Please reset your password."),
        ])]
    lines.append({**base, "event_id": "demo-file-bad", "prompt": "", "response": "a record with no prompt"})
    path = inbox / f"support-{day.isoformat()}.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    sensor = defs.get_sensor_def("feedback_inbox_sensor")
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources=resources))
    for request in tick.run_requests or []:
        result = defs.resolve_job_def("feedback_ingest_job").execute_in_process(
            instance=instance, run_config=request.run_config, tags={**request.tags, "dagster/run_key": request.run_key})
        if not result.success:
            raise RuntimeError(f"feedback_ingest_job failed for {path}")
    echo(f"  inbox: {path.name} ingested ({len(lines)} lines, one without a prompt goes to quarantine)")
    server = FeedbackServer(resources["lake"].lake(), scrubber=resources["feedback"].scrubber()).start()
    try:
        events = [{**base, "event_id": f"demo-http-{i}", "prompt": f"Call me on +1 415-555-01{i:02d} about order "
                   f"#2023114{i}", "response": "Sure, we will call you back."} for i in range(3)]
        posted = requests.post(f"{server.url}/v1/events", json=events, timeout=30)
        thumbs = requests.post(f"{server.url}/v1/feedback", json=[
            {"event_id": "demo-http-0", "signal": "thumbs_up"}, {"event_id": "demo-http-1", "signal": "thumbs_down"}],
            timeout=30)
    finally:
        server.stop()
    echo(f"  HTTP: POST /v1/events -> {posted.status_code}, POST /v1/feedback -> {thumbs.status_code}")
    return {"http_events": posted.status_code, "http_feedback": thumbs.status_code}


def run_lifecycle(days: list[str], drift_day: str | None, instance, defs, resources: dict,
                  datasets: tuple[str, ...] = ("gsm8k",), profile: dict | None = None, echo=print,
                  real_traffic: bool = True) -> dict:
    """Run every stage through ``defs``' jobs on ``instance``; returns what each stage produced.

    ``profile`` holds launchpad configs for training, evaluation and traffic (the tiny model's
    defaults when empty). The retraining sensors decide on the simulated days; a retraining they
    request curates the feedback of its window and trains on the recipe's data plus those examples.
    """
    profile = profile or {}
    import dagster as dg

    from crucible.registry.store import latest_version
    from crucible_assets.partitions import datasets_partitions
    from crucible_assets.registry import MODEL_NAME

    def execute(job_name: str, **kwargs):
        started = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, **kwargs)
        if not result.success:
            raise RuntimeError(f"job {job_name} failed ({kwargs})")
        echo(f"  {job_name} {kwargs.get('partition_key', '')} ok in {time.perf_counter() - started:.1f}s")
        return result

    produced: dict = {}
    echo(f"1/5 datasets: loading {', '.join(datasets)} into datasets/examples and datasets/splits")
    instance.add_dynamic_partitions(datasets_partitions.name, list(datasets))
    for name in datasets:
        execute("dataset_ingest_job", partition_key=name)

    echo("2/5 training → evaluation → registry")
    execute("retrain_job", run_config=_retrain_config(profile))

    echo(f"3/5 feedback, quality, embeddings and drift for {', '.join(days)} (a backfill, one run per day)")
    from dagster._core.utils import make_new_backfill_id

    backfill_id = make_new_backfill_id()
    for day in days:
        share = 0.9 if day == drift_day else 0.0
        execute("daily_feedback_job", partition_key=day, tags={"dagster/backfill": backfill_id},
                run_config={"ops": {"feedback__inference_events": {
                    "config": {**profile.get("traffic", {}), "long_prompt_share": share}}}})
    record_backfill(instance, defs, backfill_id, days)

    echo("4/5 retraining sensors (drift, quality, curated volume)")
    requests, ticks = [], []
    for name in RETRAINING_SENSORS:
        sensor = defs.get_sensor_def(name)
        started = time.time()
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, resources=resources))
        run_ids = []
        for request in tick.run_requests or []:
            echo(f"  {name} requested {request.run_key}: {request.tags.get('crucible/trigger')}")
            # Executed before the next sensor looks, as the daemon would launch it: the next sensor
            # then sees the window's run (by its tag) and does not request a second one.
            result = execute("retrain_job", run_config=_retrain_config(profile, request.run_config),
                             tags={**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": name})
            run_ids.append(result.run_id)
            requests.append(request)
        if not tick.run_requests:
            echo(f"  {name} skipped: {tick.skip_message}")
        ticks.append({"sensor": name, "timestamp": started, "end_timestamp": time.time(), "cursor": tick.cursor,
                      "run_ids": run_ids, "run_keys": [r.run_key for r in tick.run_requests or []],
                      "skip_reason": None if tick.run_requests else tick.skip_message})
    produced["retraining_runs"] = len(requests)
    produced["sensor_ticks"] = ticks

    echo("5/5 preference pairs, and real traffic from the inbox and HTTP")
    if requests:
        window = requests[0].run_config["ops"]["feedback__curated_examples"]["config"]
        execute("feedback_export_job", run_config={"ops": {"feedback__preference_pairs": {"config": window}}})
    if real_traffic:
        version = latest_version(resources["lake"].lake(), MODEL_NAME)
        next_day = dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)
        produced.update(demo_real_traffic(next_day, int(version["version"]), resources, instance, defs, echo))
    return produced


def _feedback_lines(lake, versions) -> list[str]:
    """What the feedback loop did: traffic by source, PII scrubbed, curated examples, and the lineage of
    each version trained on feedback."""
    import schemas
    from crucible.registry.lineage import model_node, path_between

    lines = []
    if lake.exists(schemas.INFERENCE_EVENTS):
        events = lake.read(schemas.INFERENCE_EVENTS)
        by_source = events["source"].str.split(":").str[0].value_counts().to_dict()
        lines.append(f"  feedback: {len(events)} events ({', '.join(f'{k} {v}' for k, v in by_source.items())}), "
                     f"{int(events['pii_redactions'].sum())} PII values scrubbed")
    if lake.exists(schemas.LINEAGE_EDGES):
        edges = lake.read(schemas.LINEAGE_EDGES)
        for window in sorted(set(edges.loc[edges["source"].str.startswith("feedback:"), "source"])):
            for version in versions.itertuples():
                path = path_between(edges, window, model_node(version.model_name, version.version))
                if path:
                    lines.append("  lineage: " + " → ".join(path))
    return lines


def summary(lake) -> str:
    import schemas

    lines = ["", "Crucible lifecycle summary", f"  lake: {lake.root}"]
    for spec in schemas.ALL_TABLES:
        if lake.exists(spec):
            lines.append(f"  {spec.path:<28} {len(lake.read(spec)):>7} rows  (Delta version {lake.version(spec)})")
    runs = lake.read(schemas.TRAINING_RUNS).sort_values("finished_at")
    for run in runs.itertuples():
        lines.append(f"  run {run.run_id}: {run.steps} steps, final loss {run.final_loss:.3f}, "
                     f"{run.tokens_per_second:.0f} tok/s, reason: {run.trigger_reason}")
    versions = lake.read(schemas.MODEL_VERSIONS).sort_values("version")
    for version in versions.itertuples():
        headline = {name: value for name, value in json.loads(version.metrics).items() if name.count("/") == 1}
        lines.append(f"  model {version.model_name} v{version.version}: sha256 {version.sha256[:12]}…, "
                     + ", ".join(f"{name} {value:.3f}" for name, value in sorted(headline.items())))
    lines.extend(_feedback_lines(lake, versions))
    evaluations = lake.read(schemas.EVAL_SUMMARIES).sort_values(["model_version", "benchmark", "metric"])
    evaluations = evaluations[~evaluations["metric"].str.contains("/")]  # per-subject rows stay in the table
    for row in evaluations.itertuples():
        lines.append(f"  eval {row.model_version} {row.benchmark:<10} {row.metric:<22} {row.value:.3f} "
                     f"[{row.ci_low:.3f}, {row.ci_high:.3f}] n={row.n}")
    drift = lake.read(schemas.DRIFT_REPORTS).sort_values(["day", "detector"])
    for row in drift.itertuples():
        lines.append(f"  drift {row.day} {row.detector}: {row.statistic:.3f} "
                     f"{'DRIFTED' if row.drifted else 'ok'}")
    return "\n".join(lines)


WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"


def record_backfill(instance, defs, backfill_id: str, days: list[str]) -> None:
    """Record the demo's daily runs (tagged with ``backfill_id``) as a completed asset backfill of
    daily_feedback_job's assets over ``days``, as if a person had launched it from the UI."""
    import time as clock

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

    graph = defs.resolve_asset_graph()
    keys = sorted(defs.resolve_job_def("daily_feedback_job").asset_layer.executable_asset_keys)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=graph, partition_names=days, asset_selection=keys,
        backfill_timestamp=clock.time(), tags={}, dynamic_partitions_store=instance, all_partitions=False,
        title=f"Daily feedback {days[0]}..{days[-1]}", description="The demo's days of traffic, one run per day.",
        run_config=None)
    done = backfill.asset_backfill_data._replace(requested_subset=backfill.asset_backfill_data.target_subset,
                                                 materialized_subset=backfill.asset_backfill_data.target_subset,
                                                 requested_runs_for_target_roots=True)
    instance.add_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS).with_asset_backfill_data(
        done, dynamic_partitions_store=instance, asset_graph=graph))


def record_sensor_ticks(instance, ticks: list[dict], workspace: Path = WORKSPACE) -> int:
    """Record the demo's sensor evaluations in the instance as the daemon would (a tick per evaluation
    and each sensor's cursor), so the web UI shows when each sensor ran and what it requested, and a
    sensor switched on later continues from its cursor. Sensors stay stopped, as they ship."""
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        SensorInstigatorData,
        TickData,
        TickStatus,
    )
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace)])) as context:
        entries = context.create_request_context().get_code_location_entries().values()
        repositories = [repo for entry in entries if entry.code_location
                        for repo in entry.code_location.get_repositories().values()]
        for tick in ticks:
            sensor = next(repo.get_sensor(tick["sensor"]) for repo in repositories if repo.has_sensor(tick["sensor"]))
            data = SensorInstigatorData(last_tick_timestamp=tick["end_timestamp"], cursor=tick["cursor"],
                                        last_run_key=(tick["run_keys"] or [None])[-1],
                                        last_tick_start_timestamp=tick["timestamp"], sensor_type=sensor.sensor_type,
                                        last_tick_success_timestamp=tick["end_timestamp"])
            state = instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
            if state is None:
                instance.add_instigator_state(InstigatorState(sensor.get_remote_origin(), InstigatorType.SENSOR,
                                                              InstigatorStatus.STOPPED, data))
            else:
                instance.update_instigator_state(state.with_data(data))
            instance.create_tick(TickData(
                instigator_origin_id=sensor.get_remote_origin_id(), instigator_name=tick["sensor"],
                instigator_type=InstigatorType.SENSOR,
                status=TickStatus.SUCCESS if tick["run_ids"] else TickStatus.SKIPPED, timestamp=tick["timestamp"],
                run_ids=tick["run_ids"], run_keys=tick["run_keys"], skip_reason=tick["skip_reason"],
                cursor=tick["cursor"], selector_id=sensor.selector_id, end_timestamp=tick["end_timestamp"]))
    return len(ticks)


def _detail_to_log(path: Path) -> None:
    """Send everything written to stderr (Dagster's event log, warnings, progress bars) to ``path``; the
    stages and the summary go to stdout. On a failure the end of the log is shown on the terminal."""
    import atexit

    path.parent.mkdir(parents=True, exist_ok=True)
    terminal = os.dup(2)
    log = path.open("w")
    os.dup2(log.fileno(), 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    print(f"(Dagster's event log and warnings: {path})")

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(terminal, 2)

    atexit.register(restore)
    previous_hook = sys.excepthook

    def show_failure(kind, value, trace) -> None:
        restore()
        tail = path.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(["", f"--- last lines of {path} ---", *tail]), file=sys.__stderr__)
        previous_hook(kind, value, trace)

    sys.excepthook = show_failure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("CRUCIBLE_HOME", ".crucible"),
                        help="folder for the lake, artifacts and the Dagster instance")
    parser.add_argument("--days", type=int, default=3, help="days of simulated traffic")
    parser.add_argument("--start", default="2026-11-01", help="first day of traffic")
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny",
                        help="tiny: a Llama built from a config (seconds); smollm2: the real SmolLM2-135M-Instruct "
                             "with LoRA (minutes on CPU)")
    parser.add_argument("--verbose", action="store_true", help="show Dagster's event log here instead of in "
                                                               "<home>/demo.log")
    args = parser.parse_args(argv)

    home = Path(args.home).resolve()
    _prepare_home(home)
    started = time.perf_counter()
    if not args.verbose:
        _detail_to_log(home / "demo.log")

    import dagster as dg

    from crucible_assets.definitions import build_defs, default_resources

    first = dt.date.fromisoformat(args.start)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
    resources = default_resources()
    defs = build_defs(resources)
    with dg.DagsterInstance.get() as instance:
        from crucible.data.loaders import BUILTIN_DATASETS

        profile = smollm2_profile(home / "cache") if args.model == "smollm2" else {}
        produced = run_lifecycle(days, days[-1], instance, defs, resources, datasets=tuple(BUILTIN_DATASETS),
                                 profile=profile)
        sys.stdout.flush()
        terminal = os.dup(1)
        if not args.verbose:  # the code server that the workspace starts logs to stdout: into the log
            os.dup2(2, 1)
        try:
            recorded = record_sensor_ticks(instance, produced["sensor_ticks"])
        finally:
            sys.stdout.flush()
            os.dup2(terminal, 1)
        print(f"  recorded {recorded} sensor ticks and cursors in the instance (the UI shows them)")
        lake = resources["lake"].lake()
        print(summary(lake))
        print(f"  Dagster instance: {instance.root_directory} ({len(instance.get_runs())} runs)")
        token_file = Path(resources["registry"].token_file)
        if token_file.exists():
            from crucible.registry.service import admin_token_file

            print(f"  registry: runs act as the service principal whose token is in {token_file}; the local admin's "
                  f"token (for `crucible registry principal create`) is in {admin_token_file(token_file)}")
    print(f"  finished in {time.perf_counter() - started:.0f}s; "
          "browse it with: DAGSTER_HOME=" f"{os.environ['DAGSTER_HOME']} dagster dev -w workspace.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
