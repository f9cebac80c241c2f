"""GRPO pieces: the clipped loss and advantages against hand computations, the padded log-probs against
unpadded ones, seeded sampling, the rewards (GSM8K, format, HumanEval in the sandbox, user functions)
and the recipe's rl section."""

import json
import math
import shutil

import pytest
import torch

from crucible.train.recipes import RecipeError, load_recipe, validate_recipe
from crucible.train.rewards import (
    ExactMatchReward,
    FormatReward,
    GSM8KReward,
    HumanEvalReward,
    PythonReward,
    WeightedRewards,
    code_from_completion,
    load_python_reward,
)
from crucible.train.rl import group_advantages, grpo_loss

LN = math.log


def _case():
    # Two completions; the second has one real token (the other is padding).
    logprobs = torch.tensor([[LN(0.6), LN(0.225)], [LN(0.15), 0.0]], requires_grad=True)
    old = torch.tensor([[LN(0.4), LN(0.25)], [LN(0.3), 0.0]])
    advantages = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return logprobs, old, advantages, mask


def test_grpo_loss_matches_a_hand_computation_with_asymmetric_clipping():
    logprobs, old, advantages, mask = _case()
    loss, stats = grpo_loss(logprobs, old, advantages, mask, epsilon_low=0.2, epsilon_high=0.28)
    # Token (0,0): ratio 1.5, A=+1 -> clipped at 1.28 -> L = -1.28 (upper clip active).
    # Token (0,1): ratio 0.9, A=+1 -> inside the clip range -> L = -0.9.
    # Token (1,0): ratio 0.5, A=-2 -> min(-1.0, clip 0.8 * -2 = -1.6) -> L = +1.6 (lower clip active).
    assert loss.item() == pytest.approx((-1.28 - 0.9 + 1.6) / 3, abs=1e-6)
    assert stats["clip_high"].item() == pytest.approx(1 / 3) and stats["clip_low"].item() == pytest.approx(1 / 3)
    loss.backward()
    # Clipped tokens carry no gradient; the free one has dL/dlogp = -ratio * A / N = -0.9 / 3.
    assert logprobs.grad.flatten().tolist() == pytest.approx([0.0, -0.9 / 3, 0.0, 0.0], abs=1e-6)

    sequence, _ = grpo_loss(*_case(), epsilon_low=0.2, epsilon_high=0.28, normalization="sequence")
    assert sequence.item() == pytest.approx(((-1.28 - 0.9) / 2 + 1.6) / 2, abs=1e-6)


def test_grpo_loss_adds_the_k3_kl_penalty_to_the_reference():
    logprobs, old, advantages, mask = _case()
    ref = torch.tensor([[LN(0.4), LN(0.225)], [LN(0.3), 0.0]])
    loss, stats = grpo_loss(logprobs, old, advantages, mask, epsilon_low=0.2, epsilon_high=0.28,
                            ref_logprobs=ref, kl_beta=0.1)
    k3 = [2 / 3 - LN(2 / 3) - 1, 0.0, 2 - LN(2) - 1]  # exp(d) - d - 1 with d = ref - logp
    assert stats["kl"].item() == pytest.approx(sum(k3) / 3, abs=1e-6)
    assert loss.item() == pytest.approx((-1.28 - 0.9 + 1.6 + 0.1 * sum(k3)) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        grpo_loss(logprobs, old, advantages, mask, kl_beta=0.1)


def test_micro_batches_with_the_batch_normalizer_add_up_to_the_whole_batch():
    logprobs, old, advantages, mask = _case()
    whole, _ = grpo_loss(logprobs, old, advantages, mask, epsilon_low=0.2, epsilon_high=0.28)
    parts = [grpo_loss(logprobs[i:i + 1], old[i:i + 1], advantages[i:i + 1], mask[i:i + 1], epsilon_low=0.2,
                       epsilon_high=0.28, normalizer=3.0)[0] for i in range(2)]
    assert (parts[0] + parts[1]).item() == pytest.approx(whole.item(), abs=1e-6)


def test_group_advantages_are_centred_per_group_and_optionally_scaled():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    centred = group_advantages(rewards, 4, scale=False)
    assert centred.tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of [1, 0, 0, 1]
    scaled = group_advantages(rewards, 4, scale=True)
    assert scaled[:4].tolist() == pytest.approx([x / (std + 1e-4) for x in (0.5, -0.5, -0.5, 0.5)])
    assert scaled[4:].tolist() == [0.0] * 4  # a group with equal rewards teaches nothing
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, 3)


@pytest.fixture(scope="module")
def tiny_policy():
    from crucible.train.config import TinyModelSpec
    from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
    from crucible.train.renderers import get_renderer

    renderer = get_renderer("chatml")
    tokenizer = train_bpe_tokenizer(["<|im_start|>user\n1+2=<|im_end|>"] * 4, vocab_size=280)
    model = build_tiny_causal_lm(TinyModelSpec(vocab_size=280, hidden_size=32, num_layers=2, num_heads=4,
                                               max_position_embeddings=64), tokenizer, seed=0).eval()
    return model, tokenizer, renderer


def test_padded_completion_logprobs_equal_each_sequence_alone(tiny_policy):
    from crucible.train.rl import _pad_rollout, completion_logprobs

    model, tokenizer, _ = tiny_policy
    prompts = [[5, 6, 7, 8, 9], [10, 11]]  # different lengths: the second is left-padded
    completions = [[20, 21], [22, 23, 24]]  # and the first is right-padded
    rollout = _pad_rollout(prompts, completions, tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        padded, entropy = completion_logprobs(model, rollout, slice(0, None), temperature=0.7, with_entropy=True)
        for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float() / 0.7
            alone = torch.log_softmax(logits[len(prompt) - 1:-1], -1).gather(
                -1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)
            assert padded[row, :len(completion)].tolist() == pytest.approx(alone.tolist(), abs=1e-5)
    assert rollout.completion_mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    assert entropy.shape == (2, 3) and bool((entropy > 0).all())


def test_a_group_sharing_its_prompt_scores_and_trains_as_each_sequence_alone(tiny_policy):
    from crucible.train.rl import _pad_rollout, completion_logprobs

    model, tokenizer, _ = tiny_policy
    prompts = [[5, 6, 7, 8, 9]] * 3 + [[10, 11]] * 2  # two groups: each prompt runs once, its cache is shared
    completions = [[20, 21], [22, 23, 24], [25], [26, 27, 28, 29], [30]]
    rollout = _pad_rollout(prompts, completions, tokenizer.pad_token_id, "cpu")
    shared, _ = completion_logprobs(model, rollout, slice(0, None), temperature=0.7)
    (shared * rollout.completion_mask).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    total = 0.0
    for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float() / 0.7
        alone = torch.log_softmax(logits[len(prompt) - 1:-1], -1).gather(
            -1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)
        assert shared[row, :len(completion)].tolist() == pytest.approx(alone.tolist(), abs=1e-5)
        total = total + alone.sum()
    total.backward()
    for name, p in model.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-5), name
    model.zero_grad()


def test_each_completion_has_its_own_seed_and_groups_differ(tiny_policy):
    from crucible.inference import InferenceEngine
    from crucible.train.recipes import RLSettings
    from crucible.train.rl import RLPrompt, sample_groups

    model, tokenizer, renderer = tiny_policy
    messages = [{"role": "user", "content": "1+2="}]
    prompt = RLPrompt(messages, renderer.encode(tokenizer, renderer.render_text(messages, add_generation_prompt=True)),
                      {"target": "3"})
    settings = RLSettings(group_size=4, max_new_tokens=6)
    engine = InferenceEngine(model, tokenizer, renderer=renderer)
    first = sample_groups(engine, [prompt, prompt], settings, seed=0, step=0)
    again = sample_groups(engine, [prompt], settings, seed=0, step=0)
    assert [g.token_ids for g in first[:4]] == [g.token_ids for g in again]  # same seeds, alone or batched
    assert len({g.token_ids for g in first[:4]}) > 1  # four samples, not one repeated
    assert [g.token_ids for g in first[:4]] != [g.token_ids for g in first[4:]]  # prompt 2 has other seeds
    assert all(g.token_ids for g in first)


def test_gsm8k_exact_match_and_format_rewards_combine_with_weights():
    rewards = WeightedRewards([GSM8KReward(mode="flexible"), FormatReward(weight=0.5),
                               ExactMatchReward(weight=0.25)])
    examples = [{"target": "42"}, {"target": "42"}, {"target": "7"}]
    totals, parts = rewards.score(["so 40+2\n#### 42", "It is 41.", "7"], examples)
    assert parts == {"gsm8k": [1.0, 0.0, 1.0], "format": [1.0, 0.0, 0.0], "exact_match": [0.0, 0.0, 1.0]}
    assert totals == [1.5, 0.0, 1.25]
    strict = WeightedRewards([GSM8KReward(mode="strict")])
    assert strict.score(["the answer is 42"], [{"target": "42"}])[0] == [0.0]


def test_a_user_reward_function_is_imported_by_name_with_clear_errors(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def brevity(completions, examples):\n    return [1.0 / (1 + len(c)) for c in completions]\n"
        "def broken(completions, examples):\n    return [float('nan')] * len(completions)\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rewards = WeightedRewards([PythonReward(function="my_rewards:brevity", weight=2.0)])
    assert rewards.score(["a", "abc"], [{}, {}])[0] == [1.0, 0.5]
    with pytest.raises(ValueError, match="module 'no_such_module' not found"):
        load_python_reward("no_such_module:f")
    with pytest.raises(ValueError, match="has no 'missing'"):
        load_python_reward("my_rewards:missing")
    with pytest.raises(ValueError, match="not a function"):
        load_python_reward("my_rewards:NOT_CALLABLE")
    with pytest.raises(ValueError, match="reward 'broken' gave nan"):
        WeightedRewards([PythonReward(function="my_rewards:broken", name="broken")]).score(["x"], [{}])


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (scripts/setup.sh)")
def test_humaneval_reward_runs_the_unit_tests_in_the_sandbox():
    example = {"example_id": "HumanEval/x", "input": "def add(a, b):\n    \"\"\"Sum.\"\"\"\n",
               "metadata": {"test": "def check(f):\n    assert f(2, 3) == 5\n", "entry_point": "add"}}
    rewards = WeightedRewards([HumanEvalReward(timeout_s=5)])
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    totals, _ = rewards.score([right, "    return a - b\n"], [example, example])
    assert totals == [1.0, 0.0]
    with pytest.raises(ValueError, match="has no metadata test"):
        rewards.score(["x"], [{"example_id": "gsm8k-1", "input": "q", "metadata": {}}])
    assert code_from_completion("no fence") == "no fence"


def test_the_rl_section_validates_and_belongs_to_method_rl():
    base = {"name": "x", "base_model": {"tiny": {}}, "dataset": {"name": "gsm8k"}}
    recipe = validate_recipe({**base, "method": "rl"})
    assert recipe.rl.group_size == 8 and [r.kind for r in recipe.rl.rewards] == ["gsm8k"]
    with pytest.raises(RecipeError, match="rl: settings for method 'rl'"):
        validate_recipe({**base, "rl": {"group_size": 4}})
    with pytest.raises(RecipeError, match="group_size"):
        validate_recipe({**base, "method": "rl", "rl": {"group_size": 1}})
    with pytest.raises(RecipeError, match="its own 'name'"):
        validate_recipe({**base, "method": "rl", "rl": {"rewards": ["format", {"kind": "format", "pattern": "x"}]}})
    with pytest.raises(RecipeError, match="not a regular expression"):
        validate_recipe({**base, "method": "rl", "rl": {"rewards": [{"kind": "format", "pattern": "("}]}})
    for name in ("rl_tiny_sums", "rl_tiny_gsm8k"):
        shipped = load_recipe(name)
        assert shipped.method == "rl" and shipped.rl.rewards
    assert json.loads(json.dumps(load_recipe("rl_tiny_gsm8k").model_dump(mode="json")))["rl"]["kl_beta"] > 0
