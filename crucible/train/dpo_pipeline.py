"""DPO from lake rows: read preference pairs, reuse or compute reference log-probs, train, save.

Where pairs come from (the conventions this module defines):

- ``datasets/examples`` rows. An example is a pair when its ``metadata`` holds ``rejected`` (a text, or a
  list of assistant messages). The prompt is the example's ``messages`` without a final assistant turn; the
  chosen completion is ``metadata.chosen`` when present, else that final assistant turn. A user file
  ``<drop folder>/<name>.jsonl`` of ``{"prompt": ..., "chosen": ..., "rejected": ...}`` lines beside
  ``<name>.yaml`` holding ``input: prompt`` and ``target: chosen`` loads exactly so (the loader turns
  prompt/chosen into the user/assistant chat, and keeps the unmapped ``rejected`` in metadata), so SFT on
  the same dataset trains on the chosen answers.
- any table with ``chosen`` and ``rejected`` columns plus ``prompt`` (text or a JSON list of messages) or
  ``messages`` (the prompt conversation as JSON), ids from ``pair_id`` or ``example_id`` (else the row
  number): the shape a feedback preference-pairs table will have.

The DPO asset calls :func:`run_dpo_recipe`; this module knows nothing of Dagster.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import store_validated
from crucible.train.config import MetricLogger, ModelSpec, resolve_device
from crucible.train.data import RejectedExample
from crucible.train.preference import (
    PreferenceBackend,
    PreferencePair,
    fill_reference_logprobs,
    run_dpo,
    tokenize_pair,
)
from crucible.train.recipes import Recipe, save_recipe
from schemas import REFERENCE_LOGPROBS


@dataclass(frozen=True)
class PreferenceConversation:
    pair_id: str
    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]


@dataclass(frozen=True)
class ReferenceKey:
    """Which stored reference log-probs a run may reuse: this checkpoint on this data version."""

    reference: str  # "run:<training run id>" or a checkpoint folder
    dataset: str
    split: str
    dataset_version: int


@dataclass
class DPOOutcome:
    checkpoint_dir: str
    steps: int
    final_loss: float | None
    tokens_per_second: float
    pairs_per_second: float
    history: list[dict[str, float]]
    num_pairs: int
    reference_cached: int  # pairs whose reference log-probs were read from training/reference_logprobs
    reference_computed: int  # pairs scored by the reference model in this run (0 with a full cache)
    resumed_from_step: int = 0
    rejected: list[RejectedExample] = field(default_factory=list)
    metric_summary: dict[str, Any] = field(default_factory=dict)  # MetricHistoryLogger.summary(), plain data


def _as_messages(value: Any, role: str, what: str) -> list[dict]:
    """A completion or prompt as messages: a text becomes one ``role`` message; a list (or its JSON) is kept."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):  # a text that merely starts with "[" stays a text
            value = json.loads(value)
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{what} is empty")
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return [dict(m) for m in value]
    raise ValueError(f"{what} must be a text or a non-empty list of {{role, content}} messages, got {value!r:.80}")


def _from_example(row: pd.Series) -> PreferenceConversation:
    metadata = json.loads(row["metadata"] or "{}")
    if "rejected" not in metadata:
        raise ValueError("metadata has no 'rejected' completion (a preference example needs one: map the file's "
                         "prompt/chosen to input/target and keep 'rejected' unmapped)")
    messages = json.loads(row["messages"])
    if "chosen" in metadata:
        chosen = _as_messages(metadata["chosen"], "assistant", "metadata.chosen")
        prompt = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
    elif messages and messages[-1]["role"] == "assistant":
        prompt, chosen = messages[:-1], messages[-1:]
    else:
        raise ValueError("no chosen completion: the messages do not end with an assistant turn and metadata has "
                         "no 'chosen'")
    if not prompt:
        raise ValueError("the prompt is empty: the messages hold nothing before the chosen completion")
    return PreferenceConversation(str(row["example_id"]), prompt, chosen,
                                  _as_messages(metadata["rejected"], "assistant", "metadata.rejected"))


def _from_pairs_row(row: pd.Series, number: int) -> PreferenceConversation:
    pair_id = str(row["pair_id"] if "pair_id" in row else row["example_id"] if "example_id" in row else number)
    prompt_value = row["prompt"] if "prompt" in row else row["messages"]
    return PreferenceConversation(pair_id, _as_messages(prompt_value, "user", "prompt"),
                                  _as_messages(row["chosen"], "assistant", "chosen"),
                                  _as_messages(row["rejected"], "assistant", "rejected"))


def preference_conversations(frame: pd.DataFrame) -> tuple[list[PreferenceConversation], list[RejectedExample]]:
    """Pairs of ``frame`` (examples rows, or a pairs table); a row that is not a pair is rejected with why."""
    pairs_shape = {"chosen", "rejected"} <= set(frame.columns)
    if not pairs_shape and not {"example_id", "messages", "metadata"} <= set(frame.columns):
        raise ValueError(f"preference data needs columns chosen, rejected and prompt (or messages), or examples "
                         f"rows (example_id, messages, metadata); got {sorted(frame.columns)}")
    if pairs_shape and not {"prompt", "messages"} & set(frame.columns):
        raise ValueError(f"preference pairs need a 'prompt' or 'messages' column; got {sorted(frame.columns)}")
    conversations, rejected = [], []
    for number, (_, row) in enumerate(frame.iterrows()):
        try:
            conversations.append(_from_pairs_row(row, number) if pairs_shape else _from_example(row))
        except (ValueError, KeyError, TypeError) as error:
            name = row.get("pair_id", row.get("example_id", number))
            rejected.append(RejectedExample(str(name), f"pair {name}: {error}"))
    return conversations, rejected


def tokenize_pairs(conversations: Sequence[PreferenceConversation], renderer, tokenizer,
                   max_length: int) -> tuple[list[PreferencePair], list[RejectedExample]]:
    pairs, rejected = [], []
    for conversation in conversations:
        try:
            pair = tokenize_pair(conversation.pair_id, conversation.prompt, conversation.chosen,
                                 conversation.rejected, renderer, tokenizer)
            pairs.append(pair.truncated(max_length))
        except (ValueError, KeyError, TypeError) as error:
            message = str(error) if str(error).startswith("pair ") else f"pair {conversation.pair_id}: {error}"
            rejected.append(RejectedExample(conversation.pair_id, message))
    return pairs, rejected


# -- the reference log-prob cache ----------------------------------------------------------------


def cached_reference_logprobs(lake: DeltaLake, key: ReferenceKey,
                              pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """``pairs`` with the stored reference log-probs of ``key`` filled in where the tokens are the same."""
    from dataclasses import replace

    stored = lake.read(REFERENCE_LOGPROBS, where={"reference": key.reference, "dataset": key.dataset,
                                                   "split": key.split, "dataset_version": key.dataset_version})
    by_id = {row.pair_id: row for row in stored.itertuples()}
    filled = []
    for pair in pairs:
        row = by_id.get(pair.pair_id)
        if row is not None and row.tokens_sha == pair.tokens_sha:
            pair = replace(pair, ref_chosen_logp=float(row.chosen_logp), ref_rejected_logp=float(row.rejected_logp))
        filled.append(pair)
    return filled


def store_reference_logprobs(lake: DeltaLake, key: ReferenceKey, pairs: Sequence[PreferencePair]) -> None:
    """Merge the reference log-probs of ``pairs`` into training/reference_logprobs under ``key``."""
    now = pd.Timestamp.now(tz="UTC")
    frame = pd.DataFrame([{
        "reference": key.reference, "dataset": key.dataset, "split": key.split,
        "dataset_version": key.dataset_version, "pair_id": pair.pair_id, "tokens_sha": pair.tokens_sha,
        # float32 rounding can leave a one-token sum a hair above zero; a log-prob is at most 0
        "chosen_logp": min(pair.ref_chosen_logp, 0.0), "rejected_logp": min(pair.ref_rejected_logp, 0.0),
        "chosen_tokens": len(pair.chosen_ids), "rejected_tokens": len(pair.rejected_ids), "computed_at": now,
    } for pair in pairs], columns=REFERENCE_LOGPROBS.columns)
    stored = store_validated(lake, REFERENCE_LOGPROBS, frame, source=f"reference {key.reference}")
    if stored.quarantined:
        raise ValueError(f"reference log-probs of {key.reference} on {key.dataset}: {stored.quarantined} rows failed "
                         f"validation, e.g. {stored.reasons[0]}")


# -- the recipe ----------------------------------------------------------------------------------


def run_dpo_recipe(recipe: Recipe, rows: pd.DataFrame, run_dir: str | Path, *, start_checkpoint: str | Path,
                   lake: DeltaLake | None = None, reference_key: ReferenceKey | None = None,
                   extra_loggers: Sequence[MetricLogger] = (), resume: bool = False) -> DPOOutcome:
    """DPO of the model in ``start_checkpoint`` (a Hugging Face folder, e.g. an SFT run's) on the pairs of ``rows``.

    With ``dpo.reference: cached`` the reference is the starting model itself, scored once before training:
    pairs already stored in training/reference_logprobs under ``reference_key`` (same tokens) are reused, the
    rest are scored and stored. With ``frozen`` a frozen copy of the starting model scores every batch.
    """
    from crucible.train.loggers import MetricHistoryLogger, MultiLogger, build_loggers
    from crucible.train.models import load_model_and_tokenizer
    from crucible.train.renderers import get_renderer

    settings, hp = recipe.dpo, recipe.hyperparameters
    if settings is None:
        raise ValueError(f"recipe {recipe.name}: method is {recipe.method!r}, not 'dpo'")
    if recipe.backend.kind != "local":
        raise ValueError(f"recipe {recipe.name}: DPO trains in process; set backend: local")
    if settings.reference == "cached" and (lake is None or reference_key is None):
        raise ValueError(f"recipe {recipe.name}: reference 'cached' needs a lake and a reference key")
    resolve_device(hp.device, who=f"recipe {recipe.name}")
    conversations, rejected = preference_conversations(rows)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, run_dir / "recipe.yaml")

    model, tokenizer = load_model_and_tokenizer(ModelSpec(name_or_path=str(start_checkpoint)), seed=hp.seed)
    renderer = get_renderer(recipe.renderer if recipe.renderer != "auto" else
                            recipe.base_model.name_or_path or "chatml")
    pairs, unusable = tokenize_pairs(conversations, renderer, tokenizer, hp.max_length)
    rejected += unusable
    if not pairs:
        example = f", e.g. {rejected[0].reason}" if rejected else ""
        raise ValueError(f"recipe {recipe.name}: no preference pairs in {recipe.dataset.name}{example}")

    backend = PreferenceBackend.from_hyperparameters(model, tokenizer, hp)
    reference, cached, computed = None, 0, 0
    if settings.reference == "frozen":
        reference = backend.frozen_copy()
    else:
        pairs = cached_reference_logprobs(lake, reference_key, pairs)
        missing = [i for i, p in enumerate(pairs) if p.ref_chosen_logp is None]
        cached, computed = len(pairs) - len(missing), len(missing)
        if missing:
            # The reference is the starting model, which is what the backend holds before its first step.
            scored = fill_reference_logprobs(backend, [pairs[i] for i in missing], hp.batch_size)
            for i, pair in zip(missing, scored, strict=True):
                pairs[i] = pair
            store_reference_logprobs(lake, reference_key, scored)

    loggers = build_loggers(recipe.logging, run_dir, total_steps=hp.max_steps, run_name=recipe.name,
                            run_config=recipe.model_dump(mode="json"))
    all_loggers = MultiLogger([*loggers.loggers, *extra_loggers])
    try:
        result = run_dpo(backend, pairs, hp, beta=settings.beta, loss_type=settings.loss_type,
                         label_smoothing=settings.label_smoothing, reference=reference, output_dir=run_dir / "train",
                         loggers=all_loggers.loggers, resume_from="latest" if resume else None)
    finally:
        all_loggers.close()
    history_logger = loggers.get(MetricHistoryLogger)
    return DPOOutcome(
        checkpoint_dir=str(result.checkpoint_dir), steps=result.steps, final_loss=result.final_loss,
        tokens_per_second=result.tokens_per_second, pairs_per_second=result.pairs_per_second,
        history=result.history, num_pairs=len(pairs), reference_cached=cached, reference_computed=computed,
        resumed_from_step=result.resumed_from_step, rejected=rejected,
        metric_summary=history_logger.summary() if history_logger else {})


