"""LocalBackend: packing keeps examples apart, accumulation, LoRA merge, sampling and logprobs."""

from __future__ import annotations

import random

import pytest
import torch

from crucible.train.backend import AdamParams, Datum, SamplingParams, TrainingBackend
from crucible.train.config import LoraSettings, TinyModelSpec
from crucible.train.local_backend import LocalBackend
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
from crucible.train.packing import pack_datums

SPEC = TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(["the quick brown fox jumps over the lazy dog"] * 10, vocab_size=300)


def random_datums(count: int, seed: int, lengths=(3, 40)) -> list[Datum]:
    rng = random.Random(seed)
    data = []
    for _ in range(count):
        n = rng.randint(*lengths)
        tokens = [rng.randrange(5, 300) for _ in range(n + 1)]
        weights = [0.0] * (n // 3) + [rng.choice([1.0, 0.5]) for _ in range(n - n // 3)]
        data.append(Datum(tokens[:-1], tokens[1:], weights))
    return data


def grads(backend: LocalBackend) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in backend.model.named_parameters() if p.grad is not None}


def test_local_backend_implements_the_port(tokenizer):
    assert isinstance(
        LocalBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu"), TrainingBackend
    )


def test_packed_batch_equals_the_examples_trained_separately(tokenizer):
    batch = random_datums(4, seed=1)
    backend = LocalBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu")

    packed = backend.forward_backward(batch)
    packed_grads = grads(backend)
    backend.model.zero_grad(set_to_none=True)

    separate = [backend.forward_backward([d]) for d in batch]
    expected = sum(r.loss * r.num_trainable_tokens for r in separate) / sum(
        r.num_trainable_tokens for r in separate
    )
    assert packed.num_tokens == sum(len(d.input_ids) for d in batch)
    assert packed.num_trainable_tokens == pytest.approx(sum(d.num_trainable for d in batch))
    assert packed.loss == pytest.approx(expected, abs=1e-5)
    for name, g in grads(backend).items():
        torch.testing.assert_close(packed_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)

    # Independent reference: each example alone through the plain transformers forward pass.
    model = backend.model
    total = weight_sum = 0.0
    with torch.no_grad():
        for d in batch:
            logits = model(input_ids=torch.tensor([d.input_ids])).logits[0]
            nll = torch.nn.functional.cross_entropy(logits, torch.tensor(d.target_ids), reduction="none")
            total += float((nll * torch.tensor(d.weights)).sum())
            weight_sum += d.num_trainable
    assert packed.loss == pytest.approx(total / weight_sum, abs=1e-5)

    # Negative control: the same packed row with attention across examples gives another loss.
    inputs = pack_datums(batch)
    with torch.no_grad():
        leaky = model(input_ids=inputs.input_ids, position_ids=inputs.position_ids, use_cache=False).logits[0]
    nll = torch.nn.functional.cross_entropy(leaky, inputs.target_ids[0], reduction="none")
    leaky_loss = float((nll * inputs.weights[0]).sum()) / weight_sum
    assert abs(leaky_loss - packed.loss) > 1e-3


def test_padded_layout_gives_the_packed_loss(tokenizer):
    batch = random_datums(3, seed=2)
    model = build_tiny_causal_lm(SPEC, tokenizer)
    packed = LocalBackend(model, tokenizer, device="cpu").forward_backward(batch)
    padded = LocalBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu", pack=False)
    assert padded.forward_backward(batch).loss == pytest.approx(packed.loss, abs=1e-5)


def test_gradient_accumulation_matches_one_big_batch(tokenizer):
    batch = random_datums(6, seed=3)
    adam = AdamParams(learning_rate=1e-2, weight_decay=0.1, grad_clip_norm=0.5)
    whole = LocalBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu")
    whole.forward_backward(batch)
    whole_grads = grads(whole)
    stats_whole = whole.optim_step(adam)
    split = LocalBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu")
    split.forward_backward(batch[:2])
    split.forward_backward(batch[2:])
    for name, g in grads(split).items():
        torch.testing.assert_close(whole_grads[name], g, atol=1e-5, rtol=1e-4, msg=name)
    stats_split = split.optim_step(adam)
    # The step's gradient is the mean over all trainable tokens, however the step was split.
    tokens = sum(d.num_trainable for d in batch)
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in whole_grads.values()]))) / tokens
    assert stats_whole["grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert stats_split["grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert stats_whole["num_trainable_tokens"] == pytest.approx(tokens)
    assert norm > 0.5  # so clipping was exercised
    assert all(p.grad is None for p in whole.model.parameters())


def test_lora_trains_adapters_only_and_saves_merged_weights(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backend = LocalBackend(
        build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu", lora=LoraSettings(rank=4)
    )
    trainable = [n for n, p in backend.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    batch = random_datums(4, seed=4)
    for _ in range(3):
        backend.forward_backward(batch)
        backend.optim_step(AdamParams(learning_rate=5e-2))
    folder = backend.save_weights(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    assert len(AutoTokenizer.from_pretrained(folder)) == len(tokenizer)
    prompt = torch.tensor([batch[0].input_ids])
    backend.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=prompt).logits, backend.model(input_ids=prompt).logits, atol=1e-5, rtol=1e-4
        )
    # Training goes on after saving: the live model still has its adapters.
    assert any("lora_" in n for n, _ in backend.model.named_parameters())


def test_sample_greedy_stops_and_logprobs_agree(tokenizer):
    backend = LocalBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu")
    prompt = random_datums(1, seed=5)[0].input_ids
    greedy = backend.sample([prompt], SamplingParams(max_tokens=6))[0]
    assert len(greedy) == 6 and greedy == backend.sample([prompt], SamplingParams(max_tokens=6))[0]
    stopped = backend.sample([prompt], SamplingParams(max_tokens=6, stop_token_ids=(greedy[2],)))[0]
    assert stopped == greedy[: greedy.index(greedy[2]) + 1]
    sampled = [
        backend.sample([prompt], SamplingParams(max_tokens=8, temperature=1.0, seed=7))[0] for _ in range(2)
    ]
    assert sampled[0] == sampled[1]

    # The greedy continuation is the argmax of the per-token log-probabilities.
    sequence = prompt + greedy
    datum = Datum(sequence[:-1], sequence[1:], [1.0] * (len(sequence) - 1))
    logprobs = backend.compute_logprobs([datum, random_datums(1, seed=6)[0]])
    assert len(logprobs[0]) == len(sequence) - 1
    with torch.no_grad():
        logits = backend.model(input_ids=torch.tensor([datum.input_ids])).logits[0]
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(datum.target_ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(logprobs[0]), expected, atol=1e-5, rtol=1e-4)
