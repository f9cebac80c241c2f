"""The main job: the whole life cycle on the embedded default, recorded in a real Dagster instance.

``python -m crucible_assets.demo`` loads GSM8K, fine-tunes a tiny model on CPU, evaluates and
registers it, serves three days of traffic (drift planted on the last), lets the drift sensor
decide, runs the retraining it asks for, and prints what was produced. Open the same instance in
the web UI with ``dagster dev -w workspace.yaml`` (same ``DAGSTER_HOME``) to see every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
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


def _retrain_config(profile: dict, training: dict | None = None) -> dict:
    ops = {"training__sft_checkpoint": {"config": {**profile.get("training", {}), **(training or {})}}}
    if profile.get("evaluation"):
        ops["evaluation__eval_results"] = {"config": profile["evaluation"]}
    return {"ops": ops}


def run_lifecycle(days: list[str], drift_day: str | None, instance, defs, resources: dict,
                  datasets: tuple[str, ...] = ("gsm8k",), profile: dict | None = None, echo=print) -> dict:
    """Run every stage through ``defs``' jobs on ``instance``; returns what each stage produced.

    ``profile`` holds launchpad configs for training, evaluation and traffic (the tiny model's
    defaults when empty).
    """
    profile = profile or {}
    import dagster as dg

    from crucible_assets.monitoring.sensors import drift_retraining_sensor
    from crucible_assets.partitions import datasets_partitions

    def execute(job_name: str, **kwargs):
        started = time.perf_counter()
        result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, **kwargs)
        if not result.success:
            raise RuntimeError(f"job {job_name} failed ({kwargs})")
        echo(f"  {job_name} {kwargs.get('partition_key', '')} ok in {time.perf_counter() - started:.1f}s")
        return result

    produced: dict = {}
    echo(f"1/4 datasets: loading {', '.join(datasets)} into datasets/examples and datasets/splits")
    instance.add_dynamic_partitions(datasets_partitions.name, list(datasets))
    for name in datasets:
        execute("dataset_ingest_job", partition_key=name)

    echo("2/4 training → evaluation → registry")
    execute("retrain_job", run_config=_retrain_config(profile))

    echo(f"3/4 feedback and drift for {', '.join(days)}")
    for day in days:
        share = 0.9 if day == drift_day else 0.0
        execute("daily_feedback_job", partition_key=day, run_config={"ops": {"feedback__inference_events": {
            "config": {**profile.get("traffic", {}), "long_prompt_share": share}}}})

    echo("4/4 drift sensor")
    sensor = defs.get_sensor_def(drift_retraining_sensor.name)
    requests = []
    cursor = None
    for _ in range(len(days) + 1):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                          resources=resources)
        tick = sensor.evaluate_tick(context)
        cursor = tick.cursor
        requests.extend(tick.run_requests or [])
        if not tick.run_requests and tick.skip_message:
            echo(f"  sensor skipped: {tick.skip_message}")
    for request in requests:
        echo(f"  sensor requested a run: {request.run_config['ops']['training__sft_checkpoint']['config']['trigger_reason']}")
        reason = request.run_config["ops"]["training__sft_checkpoint"]["config"]
        execute("retrain_job", run_config=_retrain_config(profile, reason), tags=request.tags)
    produced["retraining_runs"] = len(requests)
    return produced


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
        lines.append(f"  model {version.model_name} v{version.version}: sha256 {version.sha256[:12]}…, "
                     f"metrics {version.metrics}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=os.environ.get("CRUCIBLE_HOME", ".crucible"),
                        help="folder for the lake, artifacts and the Dagster instance")
    parser.add_argument("--days", type=int, default=3, help="days of simulated traffic")
    parser.add_argument("--start", default="2026-11-01", help="first day of traffic")
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny",
                        help="tiny: a Llama built from a config (seconds); smollm2: the real SmolLM2-135M-Instruct "
                             "with LoRA (minutes on CPU)")
    args = parser.parse_args(argv)

    home = Path(args.home).resolve()
    _prepare_home(home)
    started = time.perf_counter()

    import dagster as dg

    from crucible_assets.definitions import build_defs, default_resources

    first = dt.date.fromisoformat(args.start)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range(args.days)]
    resources = default_resources()
    defs = build_defs(resources)
    with dg.DagsterInstance.get() as instance:
        from crucible.data.loaders import BUILTIN_DATASETS

        profile = smollm2_profile(home / "cache") if args.model == "smollm2" else {}
        run_lifecycle(days, days[-1], instance, defs, resources, datasets=tuple(BUILTIN_DATASETS), profile=profile)
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
