"""Metric loggers for training loops: console progress, JSONL file, Weights & Biases, an in-memory history.

Every logger implements ``MetricLogger`` (``log(step, metrics)`` and ``close()``); a recipe's
``logging`` list picks several at once and :func:`build_loggers` wires them into one ``MultiLogger``.
Heavy libraries (tqdm, wandb, matplotlib) are imported only by the logger that needs them. The
history logger returns plain data; ``crucible_assets`` turns it into Dagster metadata.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from crucible.train.config import MetricLogger

TOKENS_METRIC = "num_tokens"
"""Per-step metric a loop logs with the tokens it processed; the Dagster summary derives tokens/s."""

POSTFIX_METRICS = ("loss", "eval_loss", "lr", "learning_rate")
"""Metrics the console progress bar shows, when a step logs them."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsoleLogging(_Strict):
    """A tqdm progress bar on stderr with the loss and learning rate."""

    kind: Literal["console"] = "console"


class JsonlLogging(_Strict):
    """One JSON object per ``log`` call."""

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field("metrics.jsonl", description="file, relative to the run folder unless absolute")


class WandbLogging(_Strict):
    """A Weights & Biases run; ``offline`` writes under the run folder and needs no network or key."""

    kind: Literal["wandb"] = "wandb"
    project: str = "crucible"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"
    tags: list[str] = Field(default_factory=list)


class DagsterLogging(_Strict):
    """Keeps the metric history in memory; the training asset shows it as Dagster metadata at the end."""

    kind: Literal["dagster"] = "dagster"
    plot: bool = Field(True, description="render a PNG loss curve in the run folder")


LoggerSettings = Annotated[
    ConsoleLogging | JsonlLogging | WandbLogging | DagsterLogging, Field(discriminator="kind")
]


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {name!r}: expected a number, got {type(value).__name__} {value!r}") from None


def _finite_or_none(value: float) -> float | None:
    # NaN and infinity are not JSON; null keeps every line parseable by strict readers.
    return value if math.isfinite(value) else None


def _floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {name: _as_float(name, value) for name, value in metrics.items()}


class ConsoleLogger:
    """A tqdm progress bar (stderr by default) advanced to each logged step, loss and lr in its postfix."""

    def __init__(self, total_steps: int | None = None, *, stream: TextIO | None = None, desc: str = "train"):
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=total_steps, file=stream or sys.stderr, desc=desc, unit="step", dynamic_ncols=True
        )
        self._closed = False

    def log(self, step: int, metrics: dict[str, float]) -> None:
        values = _floats(metrics)
        if step > self._bar.n:
            self._bar.update(step - self._bar.n)
        postfix = {name: f"{values[name]:.4g}" for name in POSTFIX_METRICS if name in values}
        if postfix:
            self._bar.set_postfix(postfix, refresh=True)

    def close(self) -> None:
        if not self._closed:
            self._bar.close()
            self._closed = True


class JsonlLogger:
    """Appends ``{"step": ..., "time": ..., **metrics}`` per call and flushes, so a crash loses nothing.

    Appending lets a resumed run continue the same file. Non-finite values are written as ``null``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._file is None:
            raise RuntimeError(f"JsonlLogger({self.path}) is closed")
        record: dict[str, Any] = {"step": int(step), "time": time.time()}
        record.update({name: _finite_or_none(value) for name, value in _floats(metrics).items()})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class WandbLogger:
    """Logs to a real ``wandb`` run. In ``offline`` mode the run is written under ``<run_dir>/wandb``
    and can be uploaded later with ``wandb sync``; ``online`` needs ``WANDB_API_KEY``."""

    def __init__(
        self,
        project: str,
        run_dir: str | Path,
        *,
        mode: Literal["offline", "online", "disabled"] = "offline",
        entity: str | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, Any] | None = None,
    ):
        import wandb

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # console="off": wandb must not take over stdout/stderr of the Dagster step that hosts it.
        settings = wandb.Settings(
            silent=True, console="off", disable_git=True, save_code=False, x_disable_stats=True
        )
        self._run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            tags=list(tags),
            config=dict(config or {}),
            dir=str(run_dir),
            mode=mode,
            reinit="create_new",
            settings=settings,
        )
        self._closed = False

    @property
    def run_id(self) -> str:
        return self._run.id

    @property
    def run_files_dir(self) -> Path:
        """The folder of this run's files (``.../wandb/offline-run-<time>-<id>`` when offline)."""
        return Path(self._run.dir).parent

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(_floats(metrics), step=int(step))

    def close(self) -> None:
        if not self._closed:
            self._run.finish()
            self._closed = True


class MetricHistoryLogger:
    """Collects the metric history in memory; at the end summarises it for the training asset.

    :meth:`summary` returns plain, JSON-ready Python (``crucible_assets.metadata.training_metadata``
    turns it into Dagster metadata), the history as a markdown table included. Tokens per second is
    the sum of the per-step ``num_tokens`` metric over the wall time from the
    logger's creation to the last ``log`` call.
    """

    MAX_TABLE_ROWS = 20

    def __init__(self, run_dir: str | Path, *, plot: bool = True):
        self.run_dir = Path(run_dir)
        self.plot = plot
        self.history: list[dict[str, float]] = []
        self._started = time.perf_counter()
        self._last_log = self._started
        self._tokens = 0.0
        self.loss_curve_path: Path | None = None
        self._closed = False

    def log(self, step: int, metrics: dict[str, float]) -> None:
        values = _floats(metrics)
        self.history.append({"step": int(step), **values})
        self._tokens += values.get(TOKENS_METRIC, 0.0)
        self._last_log = time.perf_counter()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.plot and self._loss_series():
            self.loss_curve_path = self._render_loss_curve(self.run_dir / "loss_curve.png")

    def final_metrics(self) -> dict[str, float]:
        """The last logged value of every metric (each metric may be logged at different steps)."""
        final: dict[str, float] = {}
        for record in self.history:
            final.update({name: value for name, value in record.items() if name != "step"})
        return final

    def tokens_per_second(self) -> float | None:
        elapsed = self._last_log - self._started
        if self._tokens <= 0 or elapsed <= 0:
            return None
        return self._tokens / elapsed

    def summary(self) -> dict[str, Any]:
        """Final metrics, throughput, history (records and markdown table) and plot location as
        JSON-ready Python values; the loss curve exists once the logger is closed."""
        return {
            "last_step": self.history[-1]["step"] if self.history else None,
            "steps_logged": len(self.history),
            "final": {name: _finite_or_none(value) for name, value in self.final_metrics().items()},
            "tokens_per_second": self.tokens_per_second(),
            "history": [
                {name: _finite_or_none(value) if name != "step" else value for name, value in record.items()}
                for record in self.history
            ],
            "metrics_table": self.markdown_table(),
            "loss_curve_path": str(self.loss_curve_path) if self.loss_curve_path else None,
        }

    def markdown_table(self) -> str:
        """The history as a markdown table, thinned to at most ``MAX_TABLE_ROWS`` rows (last row kept)."""
        if not self.history:
            return "_no metrics logged_"
        names = sorted({name for record in self.history for name in record if name != "step"})
        count = len(self.history)
        stride = max(1, math.ceil(count / self.MAX_TABLE_ROWS))
        indices = sorted(set(range(0, count, stride)) | {count - 1})
        lines = ["| step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for index in indices:
            record = self.history[index]
            cells = [f"{record[name]:.4g}" if name in record else "" for name in names]
            lines.append(f"| {record['step']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def _loss_series(self) -> dict[str, tuple[list[int], list[float]]]:
        series: dict[str, tuple[list[int], list[float]]] = {}
        for record in self.history:
            for name, value in record.items():
                if name != "step" and "loss" in name and math.isfinite(value):
                    steps, values = series.setdefault(name, ([], []))
                    steps.append(int(record["step"]))
                    values.append(value)
        return series

    def _render_loss_curve(self, path: Path) -> Path:
        # A bare Figure renders through Agg without touching pyplot's global backend state.
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6, 3.5), layout="constrained")
        axes = figure.subplots()
        for name, (steps, values) in sorted(self._loss_series().items()):
            axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(alpha=0.3)
        axes.legend()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, format="png")
        return path


DagsterMetadataLogger = MetricHistoryLogger
"""The logger a recipe's ``kind: dagster`` entry builds (its name in recipes)."""

LoggerT = TypeVar("LoggerT")


class MultiLogger:
    """Fans each call out to several loggers; ``close`` closes all of them even if one fails."""

    def __init__(self, loggers: Sequence[MetricLogger]):
        self.loggers = list(loggers)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log(step, metrics)

    def close(self) -> None:
        errors: list[BaseException] = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as error:  # the others must still close; the first error is re-raised below
                errors.append(error)
        if errors:
            raise errors[0]

    def get(self, logger_type: type[LoggerT]) -> LoggerT | None:
        """The first logger of ``logger_type``, e.g. ``get(MetricHistoryLogger)`` for the asset metadata."""
        return next((logger for logger in self.loggers if isinstance(logger, logger_type)), None)


def build_loggers(
    logging_settings: Sequence[LoggerSettings],
    run_dir: str | Path,
    *,
    total_steps: int | None = None,
    run_name: str | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> MultiLogger:
    """Create the loggers a recipe's ``logging`` list enables, writing their files under ``run_dir``.

    ``total_steps`` sizes the progress bar; ``run_name`` and ``run_config`` (e.g. the recipe as a
    dict) label the W&B run.
    """
    run_dir = Path(run_dir)
    loggers: list[MetricLogger] = []
    for settings in logging_settings:
        if isinstance(settings, ConsoleLogging):
            loggers.append(ConsoleLogger(total_steps, desc=run_name or "train"))
        elif isinstance(settings, JsonlLogging):
            path = Path(settings.path)
            loggers.append(JsonlLogger(path if path.is_absolute() else run_dir / path))
        elif isinstance(settings, WandbLogging):
            loggers.append(
                WandbLogger(
                    settings.project,
                    run_dir,
                    mode=settings.mode,
                    entity=settings.entity,
                    name=run_name,
                    tags=settings.tags,
                    config=run_config,
                )
            )
        elif isinstance(settings, DagsterLogging):
            loggers.append(MetricHistoryLogger(run_dir, plot=settings.plot))
        else:
            raise TypeError(f"logging: unknown logger settings {settings!r}")
    return MultiLogger(loggers)
