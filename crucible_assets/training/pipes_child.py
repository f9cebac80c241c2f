"""The training process that Dagster Pipes starts: runs an SFT recipe and reports logs, metrics and the result.

Started by ``training/sft_checkpoint_external`` (``PipesSubprocessClient``, or a pod through
``PipesK8sClient``) as ``python -m crucible_assets.training.pipes_child``; everything it needs comes in
the Pipes extras. It imports ``dagster_pipes`` only, not Dagster.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from dagster_pipes import PipesContext, open_dagster_pipes


class PipesMetricLogger:
    """Sends each step's metrics to Dagster as a log line (they appear in the run's event log as they happen)."""

    def __init__(self, pipes: PipesContext) -> None:
        self.pipes = pipes

    def log(self, step: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{name}={value:.4g}" for name, value in metrics.items())
        self.pipes.log.info(f"step {step}: {shown}")

    def close(self) -> None: ...


def main() -> None:
    import pandas as pd

    from crucible.train.backends import TrainerSettings
    from crucible.train.pipeline import run_sft_recipe
    from crucible.train.recipes import load_recipe

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        run_dir = Path(extras["run_dir"])
        recipe = load_recipe(extras["recipe_path"])
        rows = pd.read_parquet(extras["examples_path"])
        pipes.log.info(f"training recipe {recipe.name} on {len(rows)} examples in {run_dir}")
        outcome = run_sft_recipe(recipe, rows, run_dir, trainer=TrainerSettings(**extras["trainer"]),
                                 extra_loggers=[PipesMetricLogger(pipes)], resume=bool(extras["resume"]))
        # The parent records the run on the lake from this file; the materialization carries the headline.
        (run_dir / "outcome.json").write_text(json.dumps(asdict(outcome), default=str))
        pipes.report_asset_materialization(metadata={
            "checkpoint": {"raw_value": outcome.checkpoint_dir, "type": "path"},
            "steps": {"raw_value": outcome.steps, "type": "int"},
            "final_loss": {"raw_value": outcome.final_loss, "type": "float"},
            "tokens_per_second": {"raw_value": round(outcome.tokens_per_second, 1), "type": "float"},
            "train_examples": outcome.num_train,
            "trained_in": "external process (Dagster Pipes)",
        })


if __name__ == "__main__":
    main()
