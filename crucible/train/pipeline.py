"""Supervised fine-tuning from examples-table rows: render chats, build the backend, train, save.

This is the one function the training asset calls; it knows nothing of Dagster.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crucible.train.backend import Datum
from crucible.train.backends import TrainerSettings, configure_recipe, load_model_for, make_backend
from crucible.train.config import MetricLogger
from crucible.train.data import RejectedExample
from crucible.train.recipes import Recipe, save_recipe

__all__ = ["RejectedExample", "SFTOutcome", "chat_texts", "conversation_datums", "merged_history", "run_sft_recipe"]


@dataclass
class SFTOutcome:
    checkpoint_dir: str
    steps: int
    final_loss: float | None
    tokens_per_second: float
    history: list[dict[str, float]]
    num_train: int
    num_eval: int
    resumed_from_step: int = 0
    rejected: list[RejectedExample] = field(default_factory=list)
    metric_summary: dict[str, Any] = field(default_factory=dict)
    """``MetricHistoryLogger.summary()`` when the recipe logs to ``dagster`` (plain data; the asset renders it)."""
    phase_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per phase of the run (data, forward, backward, communication, optimizer, evaluation, checkpointing,
    other, total); under torchrun, rank 0's."""
    profile_trace: str | None = None
    """The ``torch.profiler`` Chrome trace (JSON) of a few steps, when the trainer's ``profile`` is on."""


def conversation_datums(examples: pd.DataFrame, renderer, tokenizer, train_on: str,
                        max_length: int) -> tuple[list[Datum], list[str], list[RejectedExample]]:
    """One ``Datum`` per example (next-token targets, weights shifted onto the targets).

    An example the renderer refuses (nothing left to train on, bad roles) is rejected with its id
    and the reason, never silently trained as a zero-loss example.
    """
    from crucible.train.renderers import build_supervised_example

    datums, ids, rejected = [], [], []
    for row in examples.itertuples():
        try:
            tokens, weights = build_supervised_example(renderer, tokenizer, json.loads(row.messages), train_on,
                                                       max_length=max_length + 1)
        except (ValueError, KeyError, TypeError) as error:
            rejected.append(RejectedExample(row.example_id, f"example {row.example_id}: {error}"))
            continue
        datums.append(Datum(input_ids=tokens[:-1], target_ids=tokens[1:], weights=weights[1:]))
        ids.append(row.example_id)
    return datums, ids, rejected


def merged_history(result) -> list[dict[str, float]]:
    """Training and evaluation metrics of each step in one record per step."""
    by_step: dict[int, dict[str, float]] = {}
    for record in [*result.loss_history, *result.eval_losses]:
        by_step.setdefault(int(record["step"]), {}).update(record)
    return [by_step[step] for step in sorted(by_step)]


def chat_texts(examples: pd.DataFrame) -> list[str]:
    return [turn["content"] for messages in examples["messages"] for turn in json.loads(messages)]


def run_sft_recipe(recipe: Recipe, examples: pd.DataFrame, run_dir: str | Path, *,
                   trainer: TrainerSettings | None = None, extra_loggers: Sequence[MetricLogger] = (),
                   eval_fraction: float = 0.1, resume: bool = False) -> SFTOutcome:
    """Fine-tune ``recipe.base_model`` on ``examples`` (ExamplesSchema rows) and save an HF checkpoint.

    With ``resume`` the run continues from the newest resumable checkpoint in ``run_dir`` (a run
    that was killed), ending exactly where an uninterrupted run would have. ``trainer`` carries the
    machine's settings (device override, Tinker key, launcher, profiling); the backend is chosen by
    ``make_backend``. With ``launcher="torchrun"`` the loop runs in ``nproc_per_node`` worker processes
    (``crucible.train.distributed``) and the recipe's loggers receive its metrics when it has finished.
    With ``profile`` a Chrome trace of a few steps is written to ``run_dir/profile/trace.json``.
    """
    from crucible.train.loggers import MetricHistoryLogger, MultiLogger, build_loggers
    from crucible.train.renderers import get_renderer
    from crucible.train.sft import run_sft

    if examples.empty:
        raise ValueError(f"recipe {recipe.name}: no examples of {recipe.dataset.name}/{recipe.dataset.split} to train on")
    trainer = trainer or TrainerSettings()
    recipe = configure_recipe(recipe, trainer)  # refuses an unusable device before anything is loaded
    hp = recipe.hyperparameters
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, run_dir / "recipe.yaml")

    launch_dir = run_dir / "launch"
    if trainer.launcher == "torchrun":
        from crucible.train.distributed import prepare_model

        model_dir, tokenizer_dir, tokenizer = prepare_model(recipe, chat_texts(examples), launch_dir)
    else:
        model, tokenizer = load_model_for(recipe, tokenizer_texts=chat_texts(examples))
    renderer_name = recipe.renderer
    if renderer_name == "auto":
        renderer_name = recipe.base_model.name_or_path or "chatml"
    renderer = get_renderer(renderer_name)
    datums, _, rejected = conversation_datums(examples, renderer, tokenizer, recipe.train_on, hp.max_length)
    if not datums:
        raise ValueError(f"recipe {recipe.name}: every example was rejected, e.g. {rejected[0].reason}")

    order = list(range(len(datums)))
    random.Random(hp.seed).shuffle(order)
    num_eval = int(len(datums) * eval_fraction) if hp.eval_every and len(datums) >= 10 else 0
    eval_data = [datums[i] for i in order[:num_eval]]
    train_data = [datums[i] for i in order[num_eval:]]

    loggers = build_loggers(recipe.logging, run_dir, total_steps=hp.max_steps, run_name=recipe.name,
                            run_config=recipe.model_dump(mode="json"))
    all_loggers = MultiLogger([*loggers.loggers, *extra_loggers])
    profile_trace = run_dir / "profile" / "trace.json" if trainer.profile else None
    try:
        if trainer.launcher == "torchrun":
            from crucible.train.distributed import launch_sft

            result = launch_sft(launch_dir=launch_dir, hyperparameters=hp, model_dir=model_dir,
                                tokenizer_dir=tokenizer_dir, train_data=train_data, eval_data=eval_data,
                                output_dir=run_dir / "train", nproc_per_node=trainer.nproc_per_node,
                                strategy=trainer.strategy, resume=resume, profile_trace=profile_trace,
                                num_threads=trainer.num_threads)
            for record in merged_history(result):  # the workers' metrics, step by step
                all_loggers.log(int(record["step"]), {k: float(v) for k, v in record.items() if k != "step"})
        else:
            backend = make_backend(recipe, model, tokenizer, trainer)
            result = run_sft(backend, train_data, hp, eval_data=eval_data or None, output_dir=run_dir / "train",
                             loggers=all_loggers.loggers, resume_from="latest" if resume else None,
                             profile_trace=profile_trace)
    finally:
        all_loggers.close()
    history_logger = loggers.get(MetricHistoryLogger)
    return SFTOutcome(
        checkpoint_dir=str(result.checkpoint_dir), steps=result.steps, final_loss=result.final_loss,
        tokens_per_second=result.tokens_per_second, history=merged_history(result), num_train=len(train_data),
        num_eval=len(eval_data), resumed_from_step=result.resumed_from_step, rejected=rejected,
        metric_summary=history_logger.summary() if history_logger else {},
        phase_seconds=result.phase_seconds, profile_trace=result.profile_trace,
    )
