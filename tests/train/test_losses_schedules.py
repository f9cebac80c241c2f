"""The loss against a hand computation, and the learning-rate schedules at known steps."""

from __future__ import annotations

import math

import pytest
import torch

from crucible.train.losses import token_logprobs, weighted_token_cross_entropy
from crucible.train.schedules import learning_rate_at, lr_multiplier


def test_weighted_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 3.0]])
    targets = torch.tensor([0, 1, 2])
    weights = torch.tensor([1.0, 0.5, 0.0])

    def nll(row, target):
        return math.log(sum(math.exp(z) for z in row)) - row[target]

    by_hand = (1.0 * nll([2.0, 0.0, -1.0], 0) + 0.5 * nll([0.5, 0.5, 3.0], 1)) / 1.5
    assert weighted_token_cross_entropy(logits, targets, weights).item() == pytest.approx(by_hand, rel=1e-6)
    summed = weighted_token_cross_entropy(logits, targets, weights, normalizer=1.0).item()
    assert summed == pytest.approx(by_hand * 1.5, rel=1e-6)
    assert token_logprobs(logits, targets)[0].item() == pytest.approx(-nll([2.0, 0.0, -1.0], 0), rel=1e-6)


def test_all_zero_weights_give_zero_loss_with_a_graph():
    logits = torch.randn(4, 5, requires_grad=True)
    loss = weighted_token_cross_entropy(logits, torch.zeros(4, dtype=torch.long), torch.zeros(4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 0, 0.25),  # warmup: (0 + 1) / 4
        ("constant", 3, 1.0),
        ("constant", 9, 1.0),
        ("linear", 4, 1.0),  # first step after warmup
        ("linear", 7, 0.1 + 0.9 * (1 - 3 / 6)),
        ("cosine", 4, 1.0),
        ("cosine", 7, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6))),
        ("cosine", 9, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 6))),
    ],
)
def test_schedules_with_warmup(schedule, step, expected):
    got = lr_multiplier(step, schedule=schedule, max_steps=10, warmup_steps=4, min_lr_ratio=0.1)
    assert got == pytest.approx(expected)


def test_learning_rate_decays_monotonically_after_warmup():
    rates = [learning_rate_at(s, 1e-3, schedule="cosine", max_steps=50, warmup_steps=5) for s in range(50)]
    assert rates[4] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[4:], rates[5:], strict=False))
    assert rates[-1] > 0


def test_unknown_schedule_is_named_in_the_error():
    with pytest.raises(ValueError, match="'step'"):
        lr_multiplier(3, schedule="step", max_steps=10)
