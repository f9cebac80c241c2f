"""GRPO learns: on single-digit sums a tiny model's reward and greedy accuracy rise within seconds on a CPU.

The policy starts from a short SFT warm-up on the task (it learns the answer format and a few sums);
RL (recipe rl_tiny_sums, exact-match plus format reward) must then raise both the sampled reward
and the greedy accuracy by a clear margin. Everything is seeded.
"""

import json
import statistics

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def one_torch_thread():
    # Two threads collapse when another process takes a core (DAGSTER_NOTES.md); one runs steadily.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_grpo_raises_reward_and_greedy_accuracy_on_single_digit_sums(tmp_path):
    from transformers import AutoModelForCausalLM

    from crucible.train.config import TrainingHyperparameters
    from crucible.train.local_backend import LocalBackend
    from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
    from crucible.train.pipeline import conversation_datums
    from crucible.train.recipes import load_recipe
    from crucible.train.renderers import get_renderer
    from crucible.train.rewards import ExactMatchReward, WeightedRewards
    from crucible.train.rl import greedy_reward, prompt_of
    from crucible.train.rl_pipeline import example_record, run_rl_recipe
    from crucible.train.sft import run_sft
    from crucible.train.tiny_tasks import single_digit_sums

    recipe = load_recipe("rl_tiny_sums")
    examples = single_digit_sums(max_operand=4)
    renderer = get_renderer(recipe.renderer)
    # The tokenizer learns the chat markup too, so prompts are ~14 tokens and every step is cheap.
    tokenizer = train_bpe_tokenizer([renderer.render_text(json.loads(m)) for m in examples["messages"]],
                                    vocab_size=recipe.base_model.tiny.vocab_size)
    model = build_tiny_causal_lm(recipe.base_model.tiny, tokenizer, seed=0)
    warmup = TrainingHyperparameters(learning_rate=3e-3, max_steps=25, batch_size=16, schedule="constant",
                                     device="cpu", seed=0)
    datums, _, _ = conversation_datums(examples, renderer, tokenizer, "last_assistant", warmup.max_length)
    backend = LocalBackend.from_hyperparameters(model, tokenizer, warmup)
    sft = run_sft(backend, datums, warmup, output_dir=tmp_path / "sft")

    accuracy = WeightedRewards([ExactMatchReward()])
    prompts = [prompt_of(example_record(row), renderer, tokenizer, 60) for row in examples.itertuples()]
    before = greedy_reward(backend.model, tokenizer, renderer, prompts, accuracy, max_new_tokens=4)

    outcome = run_rl_recipe(recipe, examples, tmp_path / "rl", init_checkpoint=sft.checkpoint_dir)
    trained = AutoModelForCausalLM.from_pretrained(outcome.checkpoint_dir)
    after = greedy_reward(trained, tokenizer, renderer, prompts, accuracy, max_new_tokens=4)

    rewards = [step["reward_mean"] for step in outcome.history]
    first, last = statistics.mean(rewards[:5]), statistics.mean(rewards[-5:])
    assert outcome.steps == recipe.hyperparameters.max_steps
    assert last > first + 0.15, f"mean reward went from {first:.3f} (first 5 steps) to {last:.3f} (last 5)"
    assert after >= before + 0.2, f"greedy accuracy went from {before:.2f} to {after:.2f}"
    # The per-step metrics are all there and sane.
    step = outcome.history[-1]
    for name in ("loss", "reward_std", "reward/exact_match", "reward/format", "entropy", "clip_fraction",
                 "completion_length", "tokens_per_second", "completions_per_second", "grad_norm"):
        assert name in step, name
    assert 0 <= step["clip_fraction"] <= 1 and step["entropy"] >= 0 and step["completion_length"] >= 1
    logged = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == outcome.steps
