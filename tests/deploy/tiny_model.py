"""A tiny Llama checkpoint (chat format recorded beside it) and its registered version, for serving tests."""

from __future__ import annotations

from pathlib import Path

from crucible.lake import DeltaLake
from crucible.registry.access import Principal
from crucible.registry.registry import ModelVersion, Registry
from crucible.train.config import TinyModelSpec

SPEC = TinyModelSpec(family="llama", vocab_size=384, hidden_size=64, num_layers=2, num_heads=4,
                     max_position_embeddings=256)
CORPUS = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
          "Question: how many apples are left? Answer: 12 apples are left.", "the cat sat on the mat " * 5]
ADMIN = Principal("ada", frozenset({"admin"}))


def make_tiny_checkpoint(folder: Path, seed: int = 1) -> Path:
    """A checkpoint folder (weights, tokenizer, ``recipe.yaml`` naming the chatml format); seeds differ in weights.

    Its output weights are scaled up so greedy choices sit far from ties: batched and unbatched
    answers must then agree exactly, and a difference is a bug rather than rounding.
    """
    import torch

    from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(CORPUS * 4, vocab_size=SPEC.vocab_size)
    model = build_tiny_causal_lm(SPEC, tokenizer, seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "recipe.yaml").write_text("renderer: chatml\n")
    return folder


def register_tiny(lake: DeltaLake, checkpoint: Path, model: str = "tiny",
                  stage: str | None = "production") -> ModelVersion:
    """Register ``checkpoint`` as the next version of ``model`` (in staging, then moved to ``stage``; None
    leaves it in experiment)."""
    registry = Registry(lake, ADMIN)
    version = registry.register(model, {"checkpoint": checkpoint}, training_run_id=f"run-{checkpoint.name}",
                                dataset="gsm8k", dataset_version=1, stage="staging" if stage else "experiment")
    if stage not in (None, "staging"):
        registry.transition(model, version.version, stage)
    return registry.get(model, version.version)
