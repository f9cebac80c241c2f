"""Learning-rate schedules as pure functions of the step: constant, linear and cosine, with warmup."""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["constant", "linear", "cosine"]


def lr_multiplier(
    step: int, *, schedule: Schedule, max_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> float:
    """Factor applied to the base learning rate for optimizer step ``step`` (0-based).

    Warmup rises linearly, (step + 1) / warmup_steps, so the first step already learns. After it,
    with progress p = (step - warmup) / (max_steps - warmup) in [0, 1):
    constant 1; linear r + (1 - r)(1 - p); cosine r + (1 - r)(1 + cos(pi p)) / 2; r = min_lr_ratio.
    """
    if step < 0 or max_steps < 1:
        raise ValueError(
            f"lr_multiplier: need step >= 0 and max_steps >= 1, got step={step}, max_steps={max_steps}"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "linear":
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}; expected 'constant', 'linear' or 'cosine'")


def learning_rate_at(
    step: int,
    base_lr: float,
    *,
    schedule: Schedule,
    max_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning rate of optimizer step ``step``: ``base_lr * lr_multiplier(...)``."""
    return base_lr * lr_multiplier(
        step, schedule=schedule, max_steps=max_steps, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio
    )
