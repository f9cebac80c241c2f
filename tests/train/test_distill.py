"""Distillation: each loss against a hand computation and TRL, the three modes, and the vocabulary guard."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
import torch

from crucible.train.config import ModelSpec, TinyModelSpec, TrainingHyperparameters
from crucible.train.distill import (
    VocabularyMismatchError,
    build_student,
    distillation_loss,
    forward_kl,
    generalized_jsd,
    load_teacher,
    mean_token_divergence,
    prompt_of,
    resolve_teacher,
    reverse_kl,
    run_distill_recipe,
)
from crucible.train.recipes import validate_recipe

# Student uniform over 3 tokens; teacher (1/4, 1/2, 1/4).
UNIFORM = torch.tensor([[0.0, 0.0, 0.0]])
PEAKED = torch.log(torch.tensor([[1.0, 2.0, 1.0]]))


def test_forward_and_reverse_kl_match_hand_computation():
    # KL(T||S) = 2 (1/4) ln((1/4)/(1/3)) + (1/2) ln((1/2)/(1/3)) = (1/2) ln(9/8)
    assert forward_kl(UNIFORM, PEAKED).item() == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)
    # KL(S||T) = (1/3) [2 ln((1/3)/(1/4)) + ln((1/3)/(1/2))] = (1/3) ln(32/27)
    assert reverse_kl(UNIFORM, PEAKED).item() == pytest.approx(math.log(32 / 27) / 3, abs=1e-6)
    # Temperature 2 flattens the teacher to (1, sqrt 2, 1) / (2 + sqrt 2); the student stays uniform.
    p = [1 / (2 + math.sqrt(2)), math.sqrt(2) / (2 + math.sqrt(2)), 1 / (2 + math.sqrt(2))]
    assert forward_kl(UNIFORM, PEAKED, temperature=2.0).item() == pytest.approx(
        sum(q * math.log(3 * q) for q in p), abs=1e-6)
    assert forward_kl(PEAKED, PEAKED).item() == pytest.approx(0.0, abs=1e-7)


def test_generalized_jsd_matches_hand_computation_and_its_limits():
    # m = (7/24, 5/12, 7/24); JSD = 1/2 KL(T||m) + 1/2 KL(S||m)
    kl_t_m = 0.5 * math.log(6 / 7) + 0.5 * math.log(6 / 5)
    kl_s_m = (2 / 3) * math.log(8 / 7) + (1 / 3) * math.log(4 / 5)
    assert generalized_jsd(UNIFORM, PEAKED, beta=0.5).item() == pytest.approx(0.5 * kl_t_m + 0.5 * kl_s_m, abs=1e-6)
    assert generalized_jsd(UNIFORM, PEAKED, beta=0.0).item() == pytest.approx(forward_kl(UNIFORM, PEAKED).item())
    assert generalized_jsd(UNIFORM, PEAKED, beta=1.0).item() == pytest.approx(reverse_kl(UNIFORM, PEAKED).item())
    # Near the ends the JSD vanishes like beta * forward KL and (1 - beta) * reverse KL.
    small = 1e-3
    assert (generalized_jsd(UNIFORM.double(), PEAKED.double(), beta=small).item() / small
            == pytest.approx(forward_kl(UNIFORM, PEAKED).item(), rel=2e-2))
    assert (generalized_jsd(UNIFORM.double(), PEAKED.double(), beta=1 - small).item() / small
            == pytest.approx(reverse_kl(UNIFORM, PEAKED).item(), rel=2e-2))
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(UNIFORM, PEAKED, beta=1.5)


def test_distillation_loss_masks_prompt_tokens_and_mixes_cross_entropy():
    # Token 0 is a prompt token (weight 0) with a huge divergence; tokens 1 and 2 are the completion.
    student = torch.cat([torch.tensor([[30.0, 0.0, 0.0]]), UNIFORM, UNIFORM])
    teacher = torch.cat([torch.tensor([[0.0, 0.0, 30.0]]), PEAKED, PEAKED])
    targets, weights = torch.tensor([0, 1, 2]), torch.tensor([0.0, 1.0, 1.0])
    kl = 0.5 * math.log(9 / 8)
    parts = distillation_loss(student, teacher, targets, weights, alpha=0.25)
    # Each completion token: 0.75 KL + 0.25 (-ln 1/3); the mean over the two of them.
    assert parts.total.item() == pytest.approx(0.75 * kl + 0.25 * math.log(3), abs=1e-6)
    assert parts.divergence == pytest.approx(kl, abs=1e-6) and parts.cross_entropy == pytest.approx(math.log(3))
    assert distillation_loss(student, teacher, targets, weights).total.item() == pytest.approx(kl, abs=1e-6)
    halved = distillation_loss(student, teacher, targets, weights, normalizer=4.0).total.item()
    assert halved == pytest.approx(kl / 2, abs=1e-6)
    assert distillation_loss(student, teacher, targets, torch.zeros(3)).total.item() == 0.0
    with pytest.raises(ValueError, match="share a vocabulary"):
        distillation_loss(student, teacher[:, :2], targets, weights)


@pytest.mark.slow  # importing TRL's experimental trainers takes ~10 s
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_jsd_equals_trl_generalized_jsd_loss(beta, temperature, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    generator = torch.Generator().manual_seed(7)
    student = torch.randn(2, 5, 11, generator=generator) * 3
    teacher = torch.randn(2, 5, 11, generator=generator) * 3
    labels = torch.randint(0, 11, (2, 5), generator=generator)
    labels[0, :2] = -100  # prompt tokens
    labels[1, :3] = -100
    expected = GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta, temperature=temperature)
    keep = labels.reshape(-1) != -100
    ours = distillation_loss(student.reshape(-1, 11), teacher.reshape(-1, 11), labels.reshape(-1).clamp(min=0),
                             keep.float(), loss="jsd", beta=beta, temperature=temperature)
    assert abs(ours.total.item() - expected.item()) < 1e-6


# -- runs on tiny models ----------------------------------------------------------------------------

HP = dict(learning_rate=3e-3, batch_size=8, max_length=48, schedule="constant", device="cpu", seed=0)


def sums(count: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        messages = [{"role": "user", "content": f"What is {a} plus {b}?"},
                    {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
        rows.append({"example_id": f"{seed}-{i}", "messages": json.dumps(messages)})
    return pd.DataFrame(rows)


def distill_recipe(mode: str, **settings) -> object:
    hp = {**HP, **settings.pop("hyperparameters", {})}
    return validate_recipe({
        "name": f"distill_test_{mode}", "method": "distill",
        "base_model": {"tiny": {"vocab_size": 320, "hidden_size": 32, "num_layers": 1, "num_heads": 4}},
        "dataset": {"name": "sums"}, "renderer": "chatml", "train_on": "last_assistant",
        "hyperparameters": hp, "logging": [], "distill": {"mode": mode, **settings},
    })


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny teacher (hidden 64, 2 layers, seed 1) fine-tuned for a few steps so that it is confident."""
    from crucible.train.local_backend import LocalBackend
    from crucible.train.models import load_model_and_tokenizer
    from crucible.train.pipeline import chat_texts, conversation_datums
    from crucible.train.renderers import get_renderer
    from crucible.train.sft import run_sft

    data = sums(64, seed=0)
    spec = ModelSpec(tiny=TinyModelSpec(vocab_size=320, hidden_size=64, num_layers=2, num_heads=4))
    model, tokenizer = load_model_and_tokenizer(spec, tokenizer_texts=chat_texts(data) * 4, seed=1)
    datums, _, _ = conversation_datums(data, get_renderer("chatml"), tokenizer, "last_assistant", 48)
    out = tmp_path_factory.mktemp("teacher")
    hp = TrainingHyperparameters(**{**HP, "max_steps": 25})
    result = run_sft(LocalBackend(model, tokenizer, device="cpu"), datums, hp, output_dir=out)
    return result.checkpoint_dir


def held_out_kl(student, teacher_dir) -> float:
    from crucible.train.pipeline import conversation_datums
    from crucible.train.renderers import get_renderer

    teacher, tokenizer = load_teacher(resolve_teacher(teacher_dir))
    datums, _, _ = conversation_datums(sums(16, seed=99), get_renderer("chatml"), tokenizer, "last_assistant", 48)
    return mean_token_divergence(student, teacher, datums, pad_id=tokenizer.pad_token_id)


def test_off_policy_distillation_lowers_kl_on_held_out_prompts(teacher_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = distill_recipe("off_policy", loss="forward_kl", hyperparameters={"max_steps": 20})
    teacher = resolve_teacher(teacher_dir)
    teacher_model, tokenizer = load_teacher(teacher)
    fresh, _ = build_student(recipe, teacher_model, tokenizer, teacher.name)
    outcome = run_distill_recipe(recipe, sums(64, seed=0), tmp_path / "run", teacher)

    trained = AutoModelForCausalLM.from_pretrained(outcome.checkpoint_dir)
    before, after = held_out_kl(fresh, teacher_dir), held_out_kl(trained, teacher_dir)
    assert after < 0.5 * before, (before, after)
    assert outcome.eval_kl_after < outcome.eval_kl_before and outcome.num_eval == 6
    assert outcome.steps == 20 and [h["step"] for h in outcome.history] == list(range(0, 21))
    assert outcome.history[0]["eval_kl"] == outcome.eval_kl_before and outcome.history[-1]["eval_kl"] == outcome.eval_kl_after
    assert outcome.teacher.kind == "checkpoint" and outcome.student == "tiny-llama"


@pytest.mark.parametrize("loss", ["reverse_kl", "jsd"])
def test_on_policy_mode_samples_from_the_student_and_trains(teacher_dir, tmp_path, loss):
    recipe = distill_recipe("on_policy", loss=loss, max_new_tokens=6, hyperparameters={"max_steps": 2, "batch_size": 4})
    outcome = run_distill_recipe(recipe, sums(12, seed=0), tmp_path / "run", resolve_teacher(teacher_dir))
    assert outcome.steps == 2 and outcome.num_train == 11
    steps = outcome.history[1:]  # history[0] is the held-out KL before training
    # Only the sampled completions (at most 6 tokens each, 4 prompts a step) are trained on, not the prompts.
    assert all(0 < h["sampled_tokens"] == h["num_trainable_tokens"] <= 4 * 6 for h in steps)
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in steps)


def test_sequence_mode_fine_tunes_the_student_on_teacher_generations(teacher_dir, tmp_path):
    from crucible.inference.engine import InferenceEngine

    recipe = distill_recipe("sequence", max_new_tokens=8, hyperparameters={"max_steps": 3, "batch_size": 4})
    outcome = run_distill_recipe(recipe, sums(12, seed=0), tmp_path / "run", resolve_teacher(teacher_dir))
    assert outcome.steps == 3 and (tmp_path / "run" / "train" / "final" / "model.safetensors").exists()
    assert outcome.eval_kl_before is not None and outcome.eval_kl_after is not None
    engine = InferenceEngine.from_checkpoint(outcome.checkpoint_dir)
    assert engine.chat(["What is 1 plus 2?"], max_new_tokens=4)[0].completion_tokens > 0


def test_prompt_is_the_conversation_before_the_last_answer():
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert prompt_of(chat) == chat[:2] and prompt_of(chat[:2]) == chat[:2]


# -- vocabulary guard -------------------------------------------------------------------------------


def test_student_of_another_vocabulary_size_is_refused_naming_both(teacher_dir):
    recipe = distill_recipe("off_policy")
    recipe = recipe.model_copy(update={"base_model": ModelSpec(tiny=TinyModelSpec(vocab_size=512))})
    teacher = resolve_teacher(teacher_dir)
    model, tokenizer = load_teacher(teacher)
    with pytest.raises(VocabularyMismatchError, match=r"student tiny-llama and teacher .*teacher.*512 entries.*320"):
        build_student(recipe, model, tokenizer, teacher.name)


def test_student_with_a_different_token_mapping_is_refused_before_training(teacher_dir, tmp_path):
    from crucible.train.models import DEFAULT_SPECIAL_TOKENS, build_tiny_causal_lm, train_bpe_tokenizer
    from crucible.train.pipeline import chat_texts

    # Same corpus, same size, but the special tokens in another order: ids 0 and 1 swap meaning.
    _, teacher_tokenizer = load_teacher(resolve_teacher(teacher_dir))
    order = (DEFAULT_SPECIAL_TOKENS[1], DEFAULT_SPECIAL_TOKENS[0], *DEFAULT_SPECIAL_TOKENS[2:])
    tokenizer = train_bpe_tokenizer(chat_texts(sums(64, seed=0)) * 4, vocab_size=320, special_tokens=order)
    assert len(tokenizer) == len(teacher_tokenizer)
    student_dir = tmp_path / "student"
    build_tiny_causal_lm(TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=1), tokenizer).save_pretrained(student_dir)
    tokenizer.save_pretrained(student_dir)
    recipe = distill_recipe("off_policy").model_copy(update={"base_model": ModelSpec(name_or_path=str(student_dir))})
    with pytest.raises(VocabularyMismatchError, match=rf"student {student_dir} and teacher {teacher_dir}.*id 0: teacher '<pad>', student '<s>'"):
        run_distill_recipe(recipe, sums(12, seed=0), tmp_path / "run", resolve_teacher(teacher_dir))
    assert not (tmp_path / "run" / "train").exists()
