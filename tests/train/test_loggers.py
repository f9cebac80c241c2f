"""Metric loggers write real files: JSONL lines, a wandb offline run, a PNG loss curve."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest

from crucible.train.config import MetricLogger
from crucible.train.loggers import (
    ConsoleLogger,
    ConsoleLogging,
    DagsterLogging,
    DagsterMetadataLogger,
    JsonlLogger,
    JsonlLogging,
    MultiLogger,
    WandbLogger,
    WandbLogging,
    build_loggers,
)

STEPS = [
    (1, {"loss": 2.5, "lr": 1e-3, "num_tokens": 100}),
    (2, {"loss": 2.0, "lr": 9e-4, "num_tokens": 120}),
    (2, {"eval_loss": 2.2}),
    (3, {"loss": 1.5, "lr": 5e-4, "num_tokens": 80}),
]


def feed(logger: MetricLogger) -> None:
    for step, metrics in STEPS:
        logger.log(step, metrics)
    logger.close()


def test_jsonl_writes_one_flushed_object_per_call(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    logger = JsonlLogger(path)
    logger.log(1, {"loss": 2.5})
    # Flushed at once: readable before close.
    assert json.loads(path.read_text().splitlines()[0])["loss"] == 2.5
    for step, metrics in STEPS[1:]:
        logger.log(step, metrics)
    logger.close()

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 2, 3]
    assert records[2] == {"step": 2, "time": records[2]["time"], "eval_loss": 2.2}
    assert records[3]["num_tokens"] == 80.0


def test_jsonl_writes_non_finite_values_as_null_and_appends_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    first = JsonlLogger(path)
    first.log(1, {"loss": math.nan, "grad_norm": math.inf})
    first.close()
    resumed = JsonlLogger(path)
    resumed.log(2, {"loss": 1.0})
    resumed.close()

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["loss"] is None and records[0]["grad_norm"] is None
    assert records[1]["loss"] == 1.0


def test_non_numeric_metric_is_rejected_by_name(tmp_path: Path) -> None:
    logger = JsonlLogger(tmp_path / "metrics.jsonl")
    with pytest.raises(TypeError, match="metric 'loss'"):
        logger.log(1, {"loss": "low"})
    logger.close()


def test_console_shows_progress_loss_and_lr_on_the_given_stream(capsys: pytest.CaptureFixture[str]) -> None:
    logger = ConsoleLogger(total_steps=3)
    feed(logger)

    err = capsys.readouterr().err
    assert "3/3" in err
    assert "loss=1.5" in err
    assert "lr=0.0005" in err


def test_wandb_offline_run_writes_its_files_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = WandbLogger(
        "crucible-tests", tmp_path, mode="offline", name="unit", config={"learning_rate": 1e-3}
    )
    files_dir = logger.run_files_dir
    feed(logger)

    assert files_dir.parent == tmp_path / "wandb"
    assert files_dir.name.startswith("offline-run-") and files_dir.name.endswith(logger.run_id)
    # The record log stores protobufs uncompressed: project, config and metric names are in it. W&B's
    # service process writes it, and on a loaded machine it may still be flushing after finish().
    names = (b"crucible-tests", b"learning_rate", b"loss", b"eval_loss", b"num_tokens")
    deadline = time.monotonic() + 60
    while True:
        run_log = (files_dir / f"run-{logger.run_id}.wandb").read_bytes()
        if all(name in run_log for name in names) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert run_log.startswith(b":W&B")
    for name in names:
        assert name in run_log


def test_dagster_logger_summarises_history_and_plots_the_loss(tmp_path: Path) -> None:
    logger = DagsterMetadataLogger(tmp_path)
    feed(logger)

    summary = logger.summary()
    assert summary["final"] == {"loss": 1.5, "lr": 5e-4, "num_tokens": 80.0, "eval_loss": 2.2}
    assert summary["last_step"] == 3 and summary["steps_logged"] == 4
    assert summary["tokens_per_second"] > 0
    assert logger.loss_curve_path == tmp_path / "loss_curve.png"
    assert logger.loss_curve_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = logger.markdown_table().splitlines()
    assert table[0] == "| step | eval_loss | loss | lr | num_tokens |"
    assert len(table) == 2 + len(STEPS)


def test_dagster_metadata_values(tmp_path: Path) -> None:
    import dagster as dg

    from crucible_assets.metadata import training_metadata

    logger = DagsterMetadataLogger(tmp_path)
    feed(logger)
    logger.close()
    metadata = training_metadata(logger.summary())

    assert metadata["final/loss"] == dg.MetadataValue.float(1.5)
    assert metadata["last_step"] == dg.MetadataValue.int(3)
    assert isinstance(metadata["tokens_per_second"], dg.FloatMetadataValue)
    assert isinstance(metadata["metrics_table"], dg.MarkdownMetadataValue)
    assert metadata["metrics_history"].data[0] == {"step": 1, "loss": 2.5, "lr": 1e-3, "num_tokens": 100.0}
    assert metadata["loss_curve_path"] == dg.MetadataValue.path(str(tmp_path / "loss_curve.png"))
    assert "data:image/png;base64," in metadata["loss_curve"].md_str
    # Accepted by Dagster as asset metadata.
    assert dg.Output(None, metadata=metadata).metadata["final/loss"] == dg.MetadataValue.float(1.5)


def test_markdown_table_is_thinned_but_keeps_the_last_step(tmp_path: Path) -> None:
    logger = DagsterMetadataLogger(tmp_path, plot=False)
    for step in range(1, 101):
        logger.log(step, {"loss": 1.0 / step})
    logger.close()

    rows = logger.markdown_table().splitlines()[2:]
    assert len(rows) <= DagsterMetadataLogger.MAX_TABLE_ROWS + 1
    assert rows[-1].startswith("| 100 |")
    assert logger.loss_curve_path is None


def test_multilogger_closes_every_logger_even_when_one_fails(tmp_path: Path) -> None:
    class Broken:
        def log(self, step: int, metrics: dict[str, float]) -> None:
            pass

        def close(self) -> None:
            raise RuntimeError("broken close")

    jsonl = JsonlLogger(tmp_path / "metrics.jsonl")
    multi = MultiLogger([Broken(), jsonl])
    multi.log(1, {"loss": 1.0})
    with pytest.raises(RuntimeError, match="broken close"):
        multi.close()
    assert jsonl._file is None
    assert multi.get(JsonlLogger) is jsonl and multi.get(DagsterMetadataLogger) is None


def test_build_loggers_from_recipe_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = [
        ConsoleLogging(),
        JsonlLogging(path="logs/metrics.jsonl"),
        WandbLogging(project="crucible-tests", mode="offline"),
        DagsterLogging(),
    ]
    loggers = build_loggers(settings, tmp_path, total_steps=3, run_name="build-test", run_config={"seed": 0})
    feed(loggers)

    assert [type(logger) for logger in loggers.loggers] == [
        ConsoleLogger,
        JsonlLogger,
        WandbLogger,
        DagsterMetadataLogger,
    ]
    assert len((tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()) == len(STEPS)
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert loggers.get(DagsterMetadataLogger).summary()["final"]["loss"] == 1.5
    assert "build-test" in capsys.readouterr().err


def test_core_import_stays_light() -> None:
    import subprocess

    code = (
        "import sys, crucible.train.loggers, crucible.train.recipes, crucible.train.tinker_backend;"
        "heavy = {'torch', 'wandb', 'tinker', 'dagster', 'matplotlib', 'tqdm', 'transformers'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
