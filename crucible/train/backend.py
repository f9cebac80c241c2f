"""The training port: the few calls every training method is written against.

Modelled on the Tinker API so that a loop written once runs in process (``LocalBackend``) or
against a remote service (``TinkerBackend``) unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Datum:
    """One training example: model input tokens, next-token targets and a loss weight per target.

    ``input_ids``, ``target_ids`` and ``weights`` have the same length; ``target_ids[i]`` is the
    token the model should predict after reading ``input_ids[: i + 1]``.
    """

    input_ids: list[int]
    target_ids: list[int]
    weights: list[float]

    def __post_init__(self) -> None:
        if not (len(self.input_ids) == len(self.target_ids) == len(self.weights)):
            raise ValueError(
                f"Datum lengths differ: input_ids={len(self.input_ids)}, "
                f"target_ids={len(self.target_ids)}, weights={len(self.weights)}"
            )

    @property
    def num_trainable(self) -> float:
        return float(sum(self.weights))


@dataclass(frozen=True)
class AdamParams:
    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None


@dataclass
class ForwardBackwardResult:
    """Loss of the batch (weighted mean over trainable tokens) and how many tokens it covered."""

    loss: float
    num_trainable_tokens: float
    num_tokens: int
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class TrainingBackend(Protocol):
    """What a training loop may ask of the machine that holds the model."""

    def forward_backward(self, batch: Sequence[Datum], loss: str = "cross_entropy") -> ForwardBackwardResult:
        """Accumulate gradients of ``loss`` over ``batch``; gradients add up until ``optim_step``."""
        ...

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        """Apply accumulated gradients (clipped to ``adam.grad_clip_norm``) and zero them."""
        ...

    def sample(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[list[int]]:
        """Continue each prompt; returns only the generated token ids."""
        ...

    def compute_logprobs(self, batch: Sequence[Datum]) -> list[list[float]]:
        """Log-probability of each target token under the current weights."""
        ...

    def save_state(self, path: str | Path) -> None:
        """Weights and optimizer state, enough to resume training exactly."""
        ...

    def load_state(self, path: str | Path) -> None: ...

    def save_weights(self, path: str | Path) -> str:
        """Save a Hugging Face checkpoint (safetensors + tokenizer); returns its location."""
        ...
