"""RL from examples-table rows: load the starting checkpoint, build prompts and rewards, train, save.

This is the one function the RL asset calls; it knows nothing of Dagster.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crucible.train.backends import TrainerSettings, configure_recipe, load_model_for, make_backend
from crucible.train.config import MetricLogger
from crucible.train.data import RejectedExample
from crucible.train.pipeline import chat_texts
from crucible.train.recipes import Recipe, save_recipe


@dataclass
class RLOutcome:
    checkpoint_dir: str
    steps: int
    history: list[dict[str, float]]
    num_prompts: int
    tokens_per_second: float
    completions_per_second: float
    rejected: list[RejectedExample] = field(default_factory=list)
    metric_summary: dict[str, Any] = field(default_factory=dict)
    """``MetricHistoryLogger.summary()`` when the recipe logs to ``dagster`` (plain data; the asset renders it)."""

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


def example_record(row: Any) -> dict[str, Any]:
    """An examples-table row as the rewards read it: ``messages`` and ``metadata`` parsed from JSON."""
    return {"example_id": row.example_id, "input": row.input, "target": row.target,
            "messages": json.loads(row.messages), "metadata": json.loads(row.metadata or "{}")}


def _renderer_name(recipe: Recipe, init_checkpoint: str | Path | None) -> str:
    from crucible.inference.engine import recorded_renderer

    if recipe.renderer != "auto":
        return recipe.renderer
    recorded = recorded_renderer(Path(init_checkpoint)) if init_checkpoint else None
    return recorded or recipe.base_model.name_or_path or "chatml"


def run_rl_recipe(recipe: Recipe, examples: pd.DataFrame, run_dir: str | Path, *,
                  init_checkpoint: str | Path | None = None, trainer: TrainerSettings | None = None,
                  extra_loggers: Sequence[MetricLogger] = ()) -> RLOutcome:
    """Train the policy at ``init_checkpoint`` (a Hugging Face folder, e.g. the parent SFT run's), or
    the recipe's ``base_model`` when None, with GRPO on the prompts of ``examples`` (ExamplesSchema
    rows); saves ``run_dir/train/final`` and the recipe beside it.

    Examples whose prompt cannot be built (no user turn, too long) are rejected with the reason.
    ``trainer`` carries the machine's settings (device override); the backend is chosen by ``make_backend``
    and is always in process.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crucible.train.loggers import MetricHistoryLogger, MultiLogger, build_loggers
    from crucible.train.renderers import get_renderer
    from crucible.train.rewards import WeightedRewards
    from crucible.train.rl import prompt_of, run_grpo

    if recipe.method != "rl" or recipe.rl is None:
        raise ValueError(f"recipe {recipe.name}: method is {recipe.method!r}; run_rl_recipe needs method 'rl'")
    if recipe.backend.kind != "local":
        raise ValueError(f"recipe {recipe.name}: RL runs in process only; set backend: local")
    if examples.empty:
        raise ValueError(f"recipe {recipe.name}: no examples of {recipe.dataset.name}/{recipe.dataset.split} "
                         "to take prompts from")
    trainer = trainer or TrainerSettings()
    recipe = configure_recipe(recipe, trainer)  # refuses an unusable device before anything is loaded
    settings, hp = recipe.rl, recipe.hyperparameters
    max_prompt_tokens = hp.max_length - settings.max_new_tokens
    if max_prompt_tokens < 1:
        raise ValueError(f"recipe {recipe.name}: hyperparameters.max_length ({hp.max_length}) leaves no room for a "
                         f"prompt before rl.max_new_tokens ({settings.max_new_tokens}); raise max_length")
    rewards = WeightedRewards(settings.rewards)  # imports user reward functions before any model loads
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    renderer_name = _renderer_name(recipe, init_checkpoint)
    save_recipe(recipe.model_copy(update={"renderer": renderer_name}), run_dir / "recipe.yaml")

    if init_checkpoint is not None:
        model = AutoModelForCausalLM.from_pretrained(init_checkpoint, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(init_checkpoint)
    else:
        model, tokenizer = load_model_for(recipe, tokenizer_texts=chat_texts(examples))
    renderer = get_renderer(renderer_name)
    prompts, rejected = [], []
    for row in examples.itertuples():
        try:
            prompts.append(prompt_of(example_record(row), renderer, tokenizer, max_prompt_tokens))
        except (ValueError, KeyError, TypeError) as error:
            rejected.append(RejectedExample(row.example_id, str(error)))
    if not prompts:
        raise ValueError(f"recipe {recipe.name}: every example was rejected, e.g. {rejected[0].reason}")

    backend = make_backend(recipe, model, tokenizer, trainer)  # device placement and LoRA
    loggers = build_loggers(recipe.logging, run_dir, total_steps=hp.max_steps, run_name=recipe.name,
                            run_config=recipe.model_dump(mode="json"))
    all_loggers = MultiLogger([*loggers.loggers, *extra_loggers])
    try:
        history = run_grpo(backend.model, tokenizer, renderer, prompts, rewards, settings, hp,
                           device=str(backend.device), loggers=all_loggers.loggers)
    finally:
        all_loggers.close()
    checkpoint = backend.save_weights(run_dir / "train" / "final")
    seconds = sum(h["sample_seconds"] + h["reward_seconds"] + h["update_seconds"] for h in history)
    history_logger = loggers.get(MetricHistoryLogger)
    return RLOutcome(
        checkpoint_dir=str(checkpoint), steps=len(history), history=history, num_prompts=len(prompts),
        tokens_per_second=sum(h["num_tokens"] for h in history) / seconds if seconds else 0.0,
        completions_per_second=len(history) * hp.batch_size * settings.group_size / seconds if seconds else 0.0,
        rejected=rejected, metric_summary=history_logger.summary() if history_logger else {},
    )
