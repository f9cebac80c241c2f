"""Packing: several examples in one row, each with its own positions and no attention across them.

A micro-batch of Datums becomes a single row of sum(len) tokens (no padding at all) with
per-example position ids and cumulative sequence offsets ``cu_seq_lens``. The attention
implementation ``packed_causal_attention`` (registered with transformers as ``crucible_packed``)
runs causal attention inside each example only, so every example sees exactly what it would see
alone. Measured on CPU (transformers 5.24, torch 2.13) it is ~1.4x faster per step than one
block-diagonal 4D mask over the row, because attention work grows with sum(len_i^2), not (sum len)^2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from crucible.train.backend import Datum

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

PACKED_ATTENTION = "crucible_packed"


@dataclass
class PackedBatch:
    """Model inputs for a micro-batch; ``cu_seq_lens`` is None for the padded layout."""

    input_ids: torch.Tensor  # (rows, T) int64
    position_ids: torch.Tensor  # (rows, T) int64
    target_ids: torch.Tensor  # (rows, T) int64
    weights: torch.Tensor  # (rows, T) float32, 0 on padding
    seq_lens: list[int]
    cu_seq_lens: torch.Tensor | None  # (examples + 1,) int32 offsets into the single row
    num_tokens: int  # real (non-padding) tokens

    def to(self, device: torch.device | str) -> PackedBatch:
        cu = None if self.cu_seq_lens is None else self.cu_seq_lens.to(device)
        return PackedBatch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.target_ids.to(device),
            self.weights.to(device),
            self.seq_lens,
            cu,
            self.num_tokens,
        )


def truncate_datum(datum: Datum, max_length: int) -> Datum:
    """Keep the first ``max_length`` tokens of ``datum``."""
    if len(datum.input_ids) <= max_length:
        return datum
    return Datum(datum.input_ids[:max_length], datum.target_ids[:max_length], datum.weights[:max_length])


def pack_datums(batch: Sequence[Datum]) -> PackedBatch:
    """Concatenate ``batch`` into one row with per-example position ids and offsets."""
    import torch

    if not batch or any(len(d.input_ids) == 0 for d in batch):
        raise ValueError("pack_datums: need at least one Datum, and no empty Datum")
    seq_lens = [len(d.input_ids) for d in batch]
    offsets = [0]
    for n in seq_lens:
        offsets.append(offsets[-1] + n)
    return PackedBatch(
        input_ids=torch.tensor([[t for d in batch for t in d.input_ids]], dtype=torch.long),
        position_ids=torch.tensor([[p for n in seq_lens for p in range(n)]], dtype=torch.long),
        target_ids=torch.tensor([[t for d in batch for t in d.target_ids]], dtype=torch.long),
        weights=torch.tensor([[w for d in batch for w in d.weights]], dtype=torch.float32),
        seq_lens=seq_lens,
        cu_seq_lens=torch.tensor(offsets, dtype=torch.int32),
        num_tokens=offsets[-1],
    )


def pad_datums(batch: Sequence[Datum], pad_id: int = 0) -> PackedBatch:
    """One row per example, right-padded to the longest; padding carries weight 0.

    With right padding and causal attention no real token can see a pad token, so no mask is needed.
    """
    import torch

    if not batch:
        raise ValueError("pad_datums: need at least one Datum")
    seq_lens = [len(d.input_ids) for d in batch]
    width = max(seq_lens)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    target_ids = torch.zeros((len(batch), width), dtype=torch.long)
    weights = torch.zeros((len(batch), width), dtype=torch.float32)
    for row, d in enumerate(batch):
        n = len(d.input_ids)
        input_ids[row, :n] = torch.tensor(d.input_ids, dtype=torch.long)
        target_ids[row, :n] = torch.tensor(d.target_ids, dtype=torch.long)
        weights[row, :n] = torch.tensor(d.weights, dtype=torch.float32)
    position_ids = torch.arange(width).expand(len(batch), width).clone()
    return PackedBatch(input_ids, position_ids, target_ids, weights, seq_lens, None, sum(seq_lens))


def packed_causal_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed example of a single row (query: (1, heads, T, dim)).

    Reads the example offsets from ``cu_seq_lens_q``; without them (generation, padded rows) it is
    transformers' ordinary SDPA attention. Equal-length examples run as one batched call.
    """
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if cu_seq_lens is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if query.shape[0] != 1:
        raise ValueError(f"packed attention expects one packed row, got a batch of {query.shape[0]}")
    offsets = cu_seq_lens.tolist()
    lens = [end - start for start, end in pairwise(offsets)]
    gqa = key.shape[1] != query.shape[1]
    total, heads, kv_heads, dim = query.shape[2], query.shape[1], key.shape[1], query.shape[3]

    if len(set(lens)) == 1:
        n, length = len(lens), lens[0]

        def as_batch(x: torch.Tensor, h: int) -> torch.Tensor:
            return x.transpose(1, 2).reshape(n, length, h, x.shape[-1]).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            as_batch(query, heads),
            as_batch(key, kv_heads),
            as_batch(value, kv_heads),
            dropout_p=dropout,
            is_causal=True,
            scale=scaling,
            enable_gqa=gqa,
        )
        return out.transpose(1, 2).reshape(1, total, heads, dim), None

    outputs = []
    for start, end in pairwise(offsets):
        out = F.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout,
            is_causal=True,
            scale=scaling,
            enable_gqa=gqa,
        )
        outputs.append(out.transpose(1, 2))
    return torch.cat(outputs, dim=1), None


def use_packed_attention(model: PreTrainedModel) -> None:
    """Register ``packed_causal_attention`` with transformers and switch ``model`` to it."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_causal_attention)
    model.set_attn_implementation(PACKED_ATTENTION)
