"""Training losses as pure functions of tensors, each with its formula in the docstring."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def weighted_token_cross_entropy(
    logits: torch.Tensor, target_ids: torch.Tensor, weights: torch.Tensor, normalizer: float | None = None
) -> torch.Tensor:
    """Weighted next-token cross-entropy, normalized by the trainable tokens.

        loss = sum_i w_i * (logsumexp(z_i) - z_i[y_i]) / N,   N = normalizer or sum_i w_i

    ``logits`` is (tokens, vocab), ``target_ids`` and ``weights`` are (tokens,). The sum runs in
    float32 whatever the logits' dtype. ``normalizer=1`` gives the plain weighted sum, which is what
    a backend accumulates over micro-batches before dividing by the step's trainable tokens.
    An empty or all-zero-weight batch has loss 0.
    """
    import torch.nn.functional as F

    token_nll = F.cross_entropy(logits.float(), target_ids, reduction="none")
    total = (token_nll * weights.float()).sum()
    if normalizer is None:
        normalizer = float(weights.sum())
    return total / normalizer if normalizer > 0 else total * 0.0


def token_logprobs(logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """log p(y_i | x_<=i) = z_i[y_i] - logsumexp(z_i), for (tokens, vocab) logits; float32."""
    import torch

    logits = logits.float()
    return logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
