"""Typed training settings shared by every method, its recipes and its loggers."""

from __future__ import annotations

import os
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModelSpec(_Strict):
    """A small causal LM built from a transformers config (tests, demos, CPU)."""

    family: Literal["llama", "qwen2"] = "llama"
    vocab_size: int = Field(512, ge=64)
    hidden_size: int = Field(64, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int | None = None
    max_position_embeddings: int = Field(512, ge=16)


class ModelSpec(_Strict):
    """Either a Hugging Face model id / local path, or a tiny model built from a config."""

    name_or_path: str | None = None
    tiny: TinyModelSpec | None = None
    gguf_file: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSpec:
        if (self.name_or_path is None) == (self.tiny is None):
            raise ValueError("model: give exactly one of 'name_or_path' or 'tiny'")
        return self


class LoraSettings(_Strict):
    rank: int = Field(8, ge=1)
    alpha: float = 16.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TrainingHyperparameters(_Strict):
    """Optimisation settings of one run; every field can be overridden from the launchpad."""

    learning_rate: float = Field(1e-3, gt=0)
    max_steps: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1, description="examples per micro-batch")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(256, ge=8, description="tokens per example; longer ones are truncated")
    pack: bool = Field(True, description="pack examples into one row with per-example position ids")
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip_norm: float | None = 1.0
    eval_every: int = Field(0, ge=0, description="steps between evaluation losses; 0 = never")
    checkpoint_every: int = Field(0, ge=0, description="steps between resumable checkpoints; 0 = never")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lora: LoraSettings | None = None


@runtime_checkable
class MetricLogger(Protocol):
    """Receives scalar metrics by step; loggers are used together (console + JSONL + ...)."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class DeviceUnavailableError(ValueError):
    """A run asks for a device this machine's torch cannot use; the message says what to change."""


def resolve_device(requested: str, who: str) -> str:
    """The torch device a run uses: ``auto`` is CUDA when torch sees a GPU, else CPU.

    ``cuda`` (or ``cuda:<i>``) without a usable GPU is refused here, before a model is loaded, with
    ``who`` (e.g. ``"recipe sft_tiny_gsm8k"``) named; torch would only say "Torch not compiled with
    CUDA enabled" once training starts.
    """
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = f"this torch ({torch.__version__}) has no CUDA (a CPU build)"
        else:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
            why = (f"this torch (CUDA {torch.version.cuda}) sees no GPU (no GPU visible, "
                   f"CUDA_VISIBLE_DEVICES={visible})")
        raise DeviceUnavailableError(
            f"{who} asks for device {requested!r} but {why}; use device: auto or cpu, "
            "or install a CUDA build of torch on a machine with a GPU")
    return requested
