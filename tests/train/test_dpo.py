"""DPO core: each loss against hand arithmetic and against TRL's DPOTrainer, training raises reward accuracy,
pairs from examples rows and pairs tables, and a second run reuses the stored reference log-probs."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch

from crucible.train.config import ModelSpec, TinyModelSpec, TrainingHyperparameters
from crucible.train.models import build_tiny_causal_lm, load_model_and_tokenizer
from crucible.train.preference import (
    PreferenceBackend,
    PreferencePair,
    fill_reference_logprobs,
    preference_loss,
    run_dpo,
    tokenize_pair,
)
from crucible.train.recipes import RecipeError, apply_overrides, load_recipe
from crucible.train.renderers import get_renderer

SPEC = TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=2, num_heads=2)
WORDS = ["what is two plus two", "four", "five", "the cat sat on the mat", "name a colour", "blue", "loud"]


def conversation(i: int) -> dict:
    return {"prompt": [{"role": "user", "content": f"q{i} what is two plus two"}],
            "chosen": [{"role": "assistant", "content": "four " * (1 + i % 3)}],
            "rejected": [{"role": "assistant", "content": "five is loud" if i % 2 else "blue"}]}


@pytest.fixture(scope="module")
def tiny():
    """A policy (seed 0), a different reference (seed 1) and their tokenizer."""
    policy, tokenizer = load_model_and_tokenizer(ModelSpec(tiny=SPEC), tokenizer_texts=WORDS * 20)
    return policy, build_tiny_causal_lm(SPEC, tokenizer, seed=1), tokenizer


def pairs_of(tokenizer, count: int) -> list[PreferencePair]:
    renderer = get_renderer("chatml")
    return [tokenize_pair(str(i), **conversation(i), renderer=renderer, tokenizer=tokenizer) for i in range(count)]


def plain_completion_logp(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """log p(completion | prompt) from one ordinary forward of the whole sequence, summed in Python."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + completion_ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(prompt_ids) - 1 + k, token].item() for k, token in enumerate(completion_ids))


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.mark.parametrize(("loss_type", "smoothing"), [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0),
                                                      ("hinge", 0.0)])
def test_each_loss_equals_the_formula_worked_by_hand(tiny, loss_type, smoothing):
    policy, reference, tokenizer = tiny
    pairs, beta = pairs_of(tokenizer, 3), 0.7
    # The hand side: unpacked forwards of fresh copies (same seeds, ordinary attention), then plain arithmetic.
    plain_policy, plain_ref = build_tiny_causal_lm(SPEC, tokenizer, seed=0), build_tiny_causal_lm(SPEC, tokenizer, seed=1)
    expected = []
    for pair in pairs:
        pc, pr = (plain_completion_logp(plain_policy, pair.prompt_ids, c) for c in (pair.chosen_ids, pair.rejected_ids))
        rc, rr = (plain_completion_logp(plain_ref, pair.prompt_ids, c) for c in (pair.chosen_ids, pair.rejected_ids))
        h = (pc - rc) - (pr - rr)
        if loss_type == "sigmoid":
            expected.append(-(1 - smoothing) * log_sigmoid(beta * h) - smoothing * log_sigmoid(-beta * h))
        elif loss_type == "ipo":
            h = (pc - rc) / len(pair.chosen_ids) - (pr - rr) / len(pair.rejected_ids)
            expected.append((h - 1 / (2 * beta)) ** 2)
        else:
            expected.append(max(0.0, 1 - beta * h))
    assert len(set(round(e, 6) for e in expected)) == 3  # three different pairs, three different losses

    backend = PreferenceBackend(copy.deepcopy(policy), tokenizer, device="cpu")
    frozen = PreferenceBackend(copy.deepcopy(reference), tokenizer, device="cpu")
    step = backend.forward_backward_preference(pairs, beta=beta, loss_type=loss_type, label_smoothing=smoothing,
                                               reference=frozen)
    assert step.loss_sum / 3 == pytest.approx(sum(expected) / 3, abs=1e-5)
    # The same numbers through the pure function, pair by pair.
    scored, ref = backend.sequence_logprobs(pairs), frozen.sequence_logprobs(pairs)
    losses = preference_loss(scored.chosen, scored.rejected, ref.chosen, ref.rejected, beta=beta, loss_type=loss_type,
                             label_smoothing=smoothing, chosen_lengths=scored.chosen_lengths,
                             rejected_lengths=scored.rejected_lengths).losses
    assert losses.tolist() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_loss_and_rewards_equal_trl_dpo_trainer_on_the_same_batch(tiny, tmp_path, loss_type):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    policy, reference, tokenizer = tiny
    beta, count = 0.3, 4
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=[loss_type], label_smoothing=0.0, bf16=False,
                     gradient_checkpointing=False, precompute_ref_log_probs=False, report_to="none",
                     per_device_train_batch_size=count, use_cpu=True, max_length=None, disable_tqdm=True,
                     save_strategy="no")
    trainer = DPOTrainer(model=copy.deepcopy(policy), ref_model=copy.deepcopy(reference), args=args,
                         train_dataset=Dataset.from_list([conversation(i) for i in range(count)]),
                         processing_class=tokenizer)
    features = [trainer.train_dataset[i] for i in range(count)]
    batch = trainer.data_collator([{key: f[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")}
                                   for f in features])
    trl_loss = trainer.compute_loss(trainer.model, batch).item()
    trl_metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}

    # Our step on TRL's own token ids, with the same policy and reference weights.
    pairs = [PreferencePair(str(i), f["prompt_ids"], f["chosen_ids"], f["rejected_ids"]) for i, f in enumerate(features)]
    backend = PreferenceBackend(copy.deepcopy(policy), tokenizer, device="cpu")
    step = backend.forward_backward_preference(pairs, beta=beta, loss_type=loss_type,
                                               reference=PreferenceBackend(copy.deepcopy(reference), tokenizer,
                                                                           device="cpu"))
    assert trl_loss > 0.01
    assert step.loss_sum / count == pytest.approx(trl_loss, abs=1e-5)
    assert step.chosen_reward_sum / count == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-5)
    assert step.rejected_reward_sum / count == pytest.approx(trl_metrics["rewards/rejected"], abs=1e-5)
    assert step.correct / count == pytest.approx(trl_metrics["rewards/accuracies"])


def test_a_short_run_raises_reward_accuracy_and_margin_on_its_pairs(tiny, tmp_path):
    policy, _, tokenizer = tiny
    backend = PreferenceBackend(copy.deepcopy(policy), tokenizer, device="cpu")
    pairs = fill_reference_logprobs(backend, pairs_of(tokenizer, 8), batch_size=4)

    def margins() -> torch.Tensor:
        scored = backend.sequence_logprobs(pairs)
        ref_c = torch.tensor([p.ref_chosen_logp for p in pairs])
        ref_r = torch.tensor([p.ref_rejected_logp for p in pairs])
        return 0.5 * ((scored.chosen - ref_c) - (scored.rejected - ref_r))

    before = margins()
    assert before.abs().max() < 1e-5  # the reference is the starting policy
    hp = TrainingHyperparameters(learning_rate=1e-2, max_steps=8, batch_size=4, schedule="constant", device="cpu")
    result = run_dpo(backend, pairs, hp, beta=0.5, output_dir=tmp_path)
    after = margins()
    assert (after > 0).float().mean() == 1.0 and after.mean() > 1.0
    history = result.history
    assert history[0]["rewards/accuracies"] == 0.0 and history[-1]["rewards/accuracies"] == 1.0
    assert history[-1]["rewards/margins"] > history[0]["rewards/margins"] + 1.0
    assert history[-1]["loss"] < history[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert {"rewards/chosen", "rewards/rejected", "tokens_per_second", "num_tokens", "lr"} <= set(history[-1])


def test_frozen_reference_trains_exactly_like_cached_reference(tiny, tmp_path):
    policy, _, tokenizer = tiny
    hp = TrainingHyperparameters(learning_rate=5e-3, max_steps=3, batch_size=2, device="cpu")
    cached_backend = PreferenceBackend(copy.deepcopy(policy), tokenizer, device="cpu")
    cached = run_dpo(cached_backend, fill_reference_logprobs(cached_backend, pairs_of(tokenizer, 4), 4), hp,
                     beta=0.1, output_dir=tmp_path / "cached")
    frozen_backend = PreferenceBackend(copy.deepcopy(policy), tokenizer, device="cpu")
    frozen = run_dpo(frozen_backend, pairs_of(tokenizer, 4), hp, beta=0.1, reference=frozen_backend.frozen_copy(),
                     output_dir=tmp_path / "frozen")
    assert [h["loss"] for h in frozen.history] == pytest.approx([h["loss"] for h in cached.history], abs=1e-6)
    with pytest.raises(ValueError, match="have no reference log-probs"):
        run_dpo(frozen_backend, pairs_of(tokenizer, 2), hp, beta=0.1, output_dir=tmp_path / "none")


def test_pairs_from_examples_rows_and_from_a_pairs_table():
    from crucible.train.dpo_pipeline import preference_conversations

    examples = pd.DataFrame([
        {"example_id": "a", "messages": json.dumps([{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]),
         "metadata": json.dumps({"rejected": "go away"})},
        {"example_id": "b", "messages": json.dumps([{"role": "user", "content": "hi"}]),
         "metadata": json.dumps({"chosen": "hey", "rejected": [{"role": "assistant", "content": "no"}]})},
        {"example_id": "c", "messages": json.dumps([{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "x"}]), "metadata": "{}"},
    ])
    found, rejected = preference_conversations(examples)
    assert [(c.pair_id, c.prompt[-1]["content"], c.chosen[0]["content"], c.rejected[0]["content"]) for c in found] == [
        ("a", "hi", "hello", "go away"), ("b", "hi", "hey", "no")]
    assert [r.reason for r in rejected] == ["pair c: metadata has no 'rejected' completion (a preference example "
                                            "needs one: map the file's prompt/chosen to input/target and keep "
                                            "'rejected' unmapped)"]

    table = pd.DataFrame({"pair_id": ["p1", "p2"], "prompt": ["2+2?", json.dumps([{"role": "user", "content": "3+3?"}])],
                          "chosen": ["4", "6"], "rejected": ["5", ""]})
    found, rejected = preference_conversations(table)
    assert [(c.pair_id, c.prompt, c.chosen) for c in found] == [("p1", [{"role": "user", "content": "2+2?"}],
                                                                 [{"role": "assistant", "content": "4"}])]
    assert rejected[0].reason == "pair p2: rejected is empty"
    with pytest.raises(ValueError, match="need a 'prompt' or 'messages' column"):
        preference_conversations(table.drop(columns=["prompt"]))


def test_the_dpo_recipe_validates_its_section():
    recipe = load_recipe("dpo_tiny")
    assert recipe.method == "dpo" and recipe.dpo.reference == "cached" and recipe.dpo.parent_run_id is None
    with pytest.raises(RecipeError, match="label_smoothing applies to loss_type 'sigmoid' only"):
        apply_overrides(recipe, {"dpo.loss_type": "ipo", "dpo.label_smoothing": 0.1})
    with pytest.raises(RecipeError, match="dpo: settings for method 'dpo', but method is 'sft'"):
        apply_overrides(load_recipe("sft_tiny_gsm8k"), {"dpo.beta": 0.2})


def test_a_second_run_reads_the_stored_reference_and_never_runs_the_reference_model(tiny, tmp_path, lake):
    from crucible.train.dpo_pipeline import ReferenceKey, run_dpo_recipe
    from schemas import REFERENCE_LOGPROBS

    policy, _, tokenizer = tiny
    checkpoint = tmp_path / "sft"
    copy.deepcopy(policy).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    rows = pd.DataFrame([{"pair_id": str(i), "prompt": c["prompt"][0]["content"], "chosen": c["chosen"][0]["content"],
                          "rejected": c["rejected"][0]["content"]} for i, c in enumerate(map(conversation, range(6)))])
    recipe = apply_overrides(load_recipe("dpo_tiny"), {"hyperparameters.max_steps": 2, "hyperparameters.batch_size": 3,
                                                       "logging": ["jsonl"]})
    key = ReferenceKey("run:sft-1", "prefs", "train", 3)
    forwards = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: forwards.append(1) if type(module).__name__ == "LlamaForCausalLM" else None)
    try:
        first = run_dpo_recipe(recipe, rows, tmp_path / "run1", start_checkpoint=checkpoint, lake=lake,
                               reference_key=key)
        first_forwards, forwards[:] = len(forwards), []
        second = run_dpo_recipe(recipe, rows, tmp_path / "run2", start_checkpoint=checkpoint, lake=lake,
                                reference_key=key)
    finally:
        hook.remove()
    assert (first.reference_computed, first.reference_cached) == (6, 0)
    assert first_forwards == 2 + 2  # two reference batches of 3 pairs, then one forward per step
    assert (second.reference_computed, second.reference_cached) == (0, 6)
    assert len(forwards) == 2  # the training steps only
    assert [h["loss"] for h in second.history] == pytest.approx([h["loss"] for h in first.history], abs=1e-6)
    stored = lake.read(REFERENCE_LOGPROBS)
    assert len(stored) == 6 and set(stored["reference"]) == {"run:sft-1"}
    assert (stored["chosen_logp"] < 0).all() and (stored["chosen_tokens"] >= 1).all()
    # Another data version is another key: scored again, not reused.
    other = run_dpo_recipe(recipe, rows, tmp_path / "run3", start_checkpoint=checkpoint, lake=lake,
                           reference_key=ReferenceKey("run:sft-1", "prefs", "train", 4))
    assert other.reference_computed == 6 and len(lake.read(REFERENCE_LOGPROBS)) == 12
