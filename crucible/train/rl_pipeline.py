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

from crucible.lake import DeltaLake
from crucible.train.config import MetricLogger, resolve_device
from crucible.train.data import RejectedExample
from crucible.train.pipeline import chat_texts
from crucible.train.recipes import Recipe, save_recipe
from schemas import LINEAGE_EDGES, TRAINING_RUNS


@dataclass
class RLOutcome:
    checkpoint_dir: str
    steps: int
    history: list[dict[str, float]]
    num_prompts: int
    tokens_per_second: float
    completions_per_second: float
    rejected: list[RejectedExample] = field(default_factory=list)
    dagster_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float | None:
        return self.history[-1]["loss"] if self.history else None


def example_record(row: Any) -> dict[str, Any]:
    """An examples-table row as the rewards read it: ``messages`` and ``metadata`` parsed from JSON."""
    return {"example_id": row.example_id, "input": row.input, "target": row.target,
            "messages": json.loads(row.messages), "metadata": json.loads(row.metadata or "{}")}


def parent_sft_run(lake: DeltaLake, run_id: str | None = None) -> dict[str, Any]:
    """The SFT run RL starts from: ``run_id`` when given, else the newest SFT run on the lake."""
    runs = lake.read(TRAINING_RUNS)
    if run_id:
        chosen = runs[runs["run_id"] == run_id] if not runs.empty else runs
        if chosen.empty:
            raise LookupError(f"parent run {run_id!r} is not in {TRAINING_RUNS.path}; pick one of its run_id values")
        return chosen.iloc[0].to_dict()
    sft = runs[runs["method"] == "sft"] if not runs.empty else runs
    if sft.empty:
        raise LookupError(f"no SFT run in {TRAINING_RUNS.path} to start RL from: materialize "
                          "training/sft_checkpoint first, or name a parent run id")
    return sft.sort_values("finished_at").iloc[-1].to_dict()


def lineage_edges(run_id: str, parent_run_id: str, dataset: str, version: int, created_by: str) -> pd.DataFrame:
    """The RL run's edges: parent run -[rl_trained_from]-> run, dataset@version -[trained_on]-> run."""
    now = pd.Timestamp.now(tz="UTC")
    edges = [{"source": f"run:{parent_run_id}", "target": f"run:{run_id}", "relation": "rl_trained_from"},
             {"source": f"dataset:{dataset}@v{version}", "target": f"run:{run_id}", "relation": "trained_on"}]
    frame = pd.DataFrame([{**edge, "created_by": created_by, "created_at": now} for edge in edges])
    # Columns the edge table has beyond these (e.g. registration_id) are null for training edges.
    return frame.reindex(columns=LINEAGE_EDGES.columns)


def _renderer_name(recipe: Recipe, init_checkpoint: str | Path | None) -> str:
    from crucible.inference.engine import recorded_renderer

    if recipe.renderer != "auto":
        return recipe.renderer
    recorded = recorded_renderer(Path(init_checkpoint)) if init_checkpoint else None
    return recorded or recipe.base_model.name_or_path or "chatml"


def run_rl_recipe(recipe: Recipe, examples: pd.DataFrame, run_dir: str | Path, *,
                  init_checkpoint: str | Path | None = None,
                  extra_loggers: Sequence[MetricLogger] = ()) -> RLOutcome:
    """Train the policy at ``init_checkpoint`` (a Hugging Face folder, e.g. the parent SFT run's), or
    the recipe's ``base_model`` when None, with GRPO on the prompts of ``examples`` (ExamplesSchema
    rows); saves ``run_dir/train/final`` and the recipe beside it.

    Examples whose prompt cannot be built (no user turn, too long) are rejected with the reason.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crucible.train.local_backend import LocalBackend
    from crucible.train.loggers import DagsterMetadataLogger, MultiLogger, build_loggers
    from crucible.train.models import load_model_and_tokenizer
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
    settings, hp = recipe.rl, recipe.hyperparameters
    max_prompt_tokens = hp.max_length - settings.max_new_tokens
    if max_prompt_tokens < 1:
        raise ValueError(f"recipe {recipe.name}: hyperparameters.max_length ({hp.max_length}) leaves no room for a "
                         f"prompt before rl.max_new_tokens ({settings.max_new_tokens}); raise max_length")
    resolve_device(hp.device, who=f"recipe {recipe.name}")
    rewards = WeightedRewards(settings.rewards)  # imports user reward functions before any model loads
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    renderer_name = _renderer_name(recipe, init_checkpoint)
    save_recipe(recipe.model_copy(update={"renderer": renderer_name}), run_dir / "recipe.yaml")

    if init_checkpoint is not None:
        model = AutoModelForCausalLM.from_pretrained(init_checkpoint, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(init_checkpoint)
    else:
        model, tokenizer = load_model_and_tokenizer(recipe.base_model, tokenizer_texts=chat_texts(examples),
                                                    seed=hp.seed)
    renderer = get_renderer(renderer_name)
    prompts, rejected = [], []
    for row in examples.itertuples():
        try:
            prompts.append(prompt_of(example_record(row), renderer, tokenizer, max_prompt_tokens))
        except (ValueError, KeyError, TypeError) as error:
            rejected.append(RejectedExample(row.example_id, str(error)))
    if not prompts:
        raise ValueError(f"recipe {recipe.name}: every example was rejected, e.g. {rejected[0].reason}")

    backend = LocalBackend.from_hyperparameters(model, tokenizer, hp)  # device placement and LoRA
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
    dagster_logger = loggers.get(DagsterMetadataLogger)
    return RLOutcome(
        checkpoint_dir=str(checkpoint), steps=len(history), history=history, num_prompts=len(prompts),
        tokens_per_second=sum(h["num_tokens"] for h in history) / seconds if seconds else 0.0,
        completions_per_second=len(history) * hp.batch_size * settings.group_size / seconds if seconds else 0.0,
        rejected=rejected, dagster_metadata=dagster_logger.summary() if dagster_logger else {},
    )
