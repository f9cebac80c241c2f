"""Reinforcement learning with group-relative advantages (GRPO): the loss, the advantages and the loop.

Each step samples ``group_size`` completions of ``batch_size`` prompts with the inference engine
(per-sample seeds, the renderer's stop sequences), scores them with the recipe's rewards, centres
each reward on its group's mean, and takes ``passes`` clipped policy-gradient steps on the batch.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from crucible.train.config import MetricLogger, TrainingHyperparameters
from crucible.train.schedules import learning_rate_at
from crucible.train.sft import examples_at

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from crucible.inference import Generation
    from crucible.train.recipes import RLSettings
    from crucible.train.renderers import Renderer
    from crucible.train.rewards import WeightedRewards


# -- the maths, as pure functions of tensors ---------------------------------------------------


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages of rewards laid out group after group (prompt i's completions together).

        A_ij = r_ij - mean_j(r_i)                      (scale=False, Dr. GRPO)
        A_ij = (r_ij - mean_j(r_i)) / (std_j(r_i) + eps)   (scale=True, GRPO; unbiased std)

    A group whose completions all got the same reward has advantage 0: it teaches nothing.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"group_advantages: {rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    normalization: Literal["token", "sequence"] = "token",
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped importance-sampling loss on group-relative advantages, with an optional KL penalty.

    For completion i, token t (``mask`` 1 on completion tokens, 0 on padding), all (batch, tokens):

        rho_it = exp(logp_it - old_logp_it)                          old = the policy that sampled
        L_it   = -min(rho_it * A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) * A_i) + beta * k3_it
        k3_it  = exp(ref_it - logp_it) - (ref_it - logp_it) - 1      (Schulman's k3 estimator of KL)

        token:     loss = sum_it m_it L_it / N,   N = normalizer or sum_it m_it
        sequence:  loss = sum_i (sum_t m_it L_it / sum_t m_it) / N,   N = normalizer or #completions

    ``normalizer`` is the whole batch's count when the batch is split into micro-batches, so that the
    gradients of the parts add up to the gradient of the whole. ``advantages`` is (batch,).
    Returns the loss and statistics (detached): ``clip_low`` and ``clip_high`` (fraction of tokens
    where the lower/upper clip is the active term), ``ratio`` (mean rho) and ``kl`` (mean k3; 0
    without a reference).
    """
    import torch

    mask = mask.to(logprobs.dtype)
    advantage = advantages.to(logprobs.dtype).unsqueeze(1)
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    per_token = -torch.min(ratio * advantage, clipped * advantage)
    kl = torch.zeros_like(logprobs)
    if ref_logprobs is not None:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
        if kl_beta:
            per_token = per_token + kl_beta * kl
    elif kl_beta:
        raise ValueError("grpo_loss: kl_beta > 0 needs ref_logprobs")
    if normalization == "token":
        total = (per_token * mask).sum()
        count = float(normalizer) if normalizer is not None else float(mask.sum())
    elif normalization == "sequence":
        total = ((per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).sum()
        count = float(normalizer) if normalizer is not None else float(mask.shape[0])
    else:
        raise ValueError(f"grpo_loss: normalization {normalization!r}; expected 'token' or 'sequence'")
    loss = total / count if count > 0 else total * 0.0
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1.0)
        stats = {
            "clip_low": (((ratio < 1.0 - epsilon_low) & (advantage < 0)).to(mask.dtype) * mask).sum() / tokens,
            "clip_high": (((ratio > 1.0 + epsilon_high) & (advantage > 0)).to(mask.dtype) * mask).sum() / tokens,
            "ratio": (ratio * mask).sum() / tokens,
            "kl": (kl * mask).sum() / tokens,
        }
    return loss, stats


def sample_seed(seed: int, step: int, prompt: int, sample: int) -> int:
    """The sampling seed of one completion: a pure function of its place in the run."""
    return random.Random(f"{seed}:{step}:{prompt}:{sample}").getrandbits(62)


# -- the loop ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RLPrompt:
    """A prompt to sample from: its chat messages (ending before the answer) and token ids, and the
    example (examples-table row, ``metadata`` parsed) that the rewards read."""

    messages: list[dict]
    prompt_ids: list[int]
    example: Mapping[str, Any]


@dataclass
class _Rollout:
    """One step's samples, padded for the update: prompts left-padded, completions right-padded."""

    input_ids: torch.Tensor  # (batch, prompt width + completion width)
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_mask: torch.Tensor  # (batch, completion width): 1 on sampled tokens
    completion_width: int


def _pad_rollout(prompts: Sequence[list[int]], completions: Sequence[Sequence[int]], pad_id: int,
                 device: Any) -> _Rollout:
    import torch

    prompt_width = max(len(p) for p in prompts)
    completion_width = max(1, max(len(c) for c in completions))
    rows, masks, completion_masks = [], [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        left, right = prompt_width - len(prompt), completion_width - len(completion)
        rows.append([pad_id] * left + list(prompt) + list(completion) + [pad_id] * right)
        masks.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
        completion_masks.append([1] * len(completion) + [0] * right)
    attention_mask = torch.tensor(masks, device=device)
    # Positions count real tokens only, as the inference engine counts them while sampling.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return _Rollout(torch.tensor(rows, device=device), attention_mask, position_ids,
                    torch.tensor(completion_masks, device=device, dtype=torch.float32), completion_width)


def completion_logprobs(model: PreTrainedModel, rollout: _Rollout, rows: slice, temperature: float,
                        with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(token) of each completion token of ``rows`` (batch, completion width) at ``temperature``,
    and the policy's entropy at those positions when asked (no gradient through it).

    Rows with the same (padded) prompt, a GRPO group, run that prompt once: its keys and values are
    then copied to each row (gradients flow back through the copy) and only the completions run per row.
    """
    import torch

    width = rollout.completion_width
    input_ids = rollout.input_ids[rows]
    prompt_width = input_ids.shape[1] - width
    # The mask belongs to the key: a pad id that is also a real token must not merge two prompts.
    prompts, source = torch.unique(torch.cat([input_ids[:, :prompt_width], rollout.attention_mask[rows,
                                   :prompt_width]], dim=1), dim=0, return_inverse=True)
    if len(prompts) < len(input_ids):
        logits = _shared_prompt_logits(model, rollout, rows, prompts, source, prompt_width)
    else:
        output = model(input_ids=input_ids, attention_mask=rollout.attention_mask[rows],
                       position_ids=rollout.position_ids[rows], use_cache=False, logits_to_keep=width + 1)
        # The logit at position t predicts token t + 1: drop the last one, keep those before each completion token.
        logits = output.logits[:, :-1, :]
    log_p = torch.log_softmax(logits.float() / temperature, dim=-1)
    logprobs = log_p.gather(-1, input_ids[:, -width:].unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(log_p.exp() * log_p).sum(-1)
    return logprobs, entropy


def _shared_prompt_logits(model: PreTrainedModel, rollout: _Rollout, rows: slice, prompts: torch.Tensor,
                          source: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """The logits before each completion token (batch, completion width, vocab), each distinct prompt
    run once through ``model`` and its cache expanded to the rows that share it."""
    import torch

    width = rollout.completion_width
    ids, mask = prompts[:, :prompt_width], prompts[:, prompt_width:]
    output = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                   use_cache=True, logits_to_keep=1)
    head = output.logits[source]  # the last prompt position predicts each row's first completion token
    if width == 1:
        return head
    cache = getattr(output, "cache", None)
    cache = cache if cache is not None else output.past_key_values
    cache.batch_select_indices(source)
    inner = getattr(model, "get_base_model", lambda: model)()  # a LoRA policy forwards to its base model
    argument = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
    end = prompt_width + width - 1  # the last completion token predicts nothing that is scored
    rest = model(input_ids=rollout.input_ids[rows][:, prompt_width:end],
                 attention_mask=rollout.attention_mask[rows][:, :end],
                 position_ids=rollout.position_ids[rows][:, prompt_width:end], use_cache=True,
                 **{argument: cache}).logits
    return torch.cat([head, rest], dim=1)


def _reference_logprobs(reference: Any, model: PreTrainedModel, rollout: _Rollout, rows: slice,
                        temperature: float) -> torch.Tensor:
    import torch

    with torch.no_grad():
        if reference is None:  # a LoRA policy: the reference is its base, adapters off
            with model.disable_adapter():
                return completion_logprobs(model, rollout, rows, temperature)[0]
        return completion_logprobs(reference, rollout, rows, temperature)[0]


def make_reference(model: PreTrainedModel) -> PreTrainedModel | None:
    """A frozen copy of the starting policy for the KL penalty; None for a LoRA model (its base is the reference)."""
    if hasattr(model, "disable_adapter"):
        return None
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


def make_optimizer(model: PreTrainedModel) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; weight decay (set per step) on matrices only, as in SFT."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "decay": True},
              {"params": [p for p in params if p.dim() < 2], "decay": False}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=0.0, weight_decay=0.0)


def sample_groups(engine: Any, prompts: Sequence[RLPrompt], settings: RLSettings, *, seed: int,
                  step: int) -> list[Generation]:
    """``group_size`` sampled completions of each prompt, group after group, each with its own seed."""
    from crucible.inference import GenerationRequest

    requests = [GenerationRequest(messages=prompt.messages, max_new_tokens=settings.max_new_tokens,
                                  temperature=settings.temperature, top_p=settings.top_p,
                                  seed=sample_seed(seed, step, i, j))
                for i, prompt in enumerate(prompts) for j in range(settings.group_size)]
    generations = engine.generate(requests, batch_size=len(requests))
    for index, generation in enumerate(generations):
        expected = len(prompts[index // settings.group_size].prompt_ids)
        if generation.prompt_tokens != expected:
            raise ValueError(f"RL prompt {index // settings.group_size}: the engine encoded "
                             f"{generation.prompt_tokens} prompt tokens, the renderer {expected}; "
                             "the prompt is longer than the model's context")
    return generations


def model_device(model: PreTrainedModel) -> torch.device:
    """Where the model's weights are: a run samples and scores there, never on a device picked again."""
    return next(model.parameters()).device


def run_grpo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    renderer: Renderer,
    prompts: Sequence[RLPrompt],
    rewards: WeightedRewards,
    settings: RLSettings,
    hyperparameters: TrainingHyperparameters,
    *,
    device: str | None = None,
    loggers: Sequence[MetricLogger] = (),
) -> list[dict[str, float]]:
    """Train ``model`` in place for ``hyperparameters.max_steps`` GRPO steps; returns the metrics of each step.

    A step: take ``batch_size`` prompts from the seeded, epoch-shuffled stream; sample a group of
    completions of each; score them; compute group advantages; then ``passes`` optimizer steps on
    the batch. The first pass runs on the weights that sampled, so its log-probs (detached) are the
    old log-probs of every pass: no separate forward is spent on them. ``device`` None samples where
    the model's weights are (where the backend put them): the device is chosen once, by the backend.
    """
    import torch

    from crucible.inference import InferenceEngine

    hp, s = hyperparameters, settings
    if not prompts:
        raise ValueError("run_grpo: no prompts to train on")
    torch.manual_seed(hp.seed)
    reference = make_reference(model) if s.kl_beta > 0 else None
    uses_reference = s.kl_beta > 0
    optimizer = make_optimizer(model)
    device = device or str(model_device(model))
    engine = InferenceEngine(model, tokenizer, device=device, batch_size=len(prompts) * s.group_size,
                             renderer=renderer, name="policy")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    history: list[dict[str, float]] = []
    cursor = 0
    for step in range(hp.max_steps):
        started = time.perf_counter()
        batch = examples_at(prompts, hp.seed, cursor, hp.batch_size)
        cursor += hp.batch_size
        generations = sample_groups(engine, batch, s, seed=hp.seed, step=step)
        sampled = time.perf_counter()
        examples = [prompt.example for prompt in batch for _ in range(s.group_size)]
        totals, parts = rewards.score([g.text for g in generations], examples)
        scored = time.perf_counter()
        reward = torch.tensor(totals)
        advantages = group_advantages(reward, s.group_size, scale=s.scale_rewards).to(device)
        rollout = _pad_rollout([prompt.prompt_ids for prompt in batch for _ in range(s.group_size)],
                               [g.token_ids for g in generations], pad_id, device)

        # Dropout would make the first pass's log-probs differ from the sampler's: train without it.
        model.eval()
        size = s.micro_batch_size or len(generations)
        chunks = [slice(start, start + size) for start in range(0, len(generations), size)]
        token_count = float(rollout.completion_mask.sum())
        normalizer = token_count if s.loss_normalization == "token" else float(len(generations))
        old: dict[int, torch.Tensor] = {}
        ref: dict[int, torch.Tensor] = {}
        totals_by_pass = {"loss": 0.0, "clip_low": 0.0, "clip_high": 0.0, "kl": 0.0}
        entropy_sum, grad_norm = 0.0, 0.0
        lr = learning_rate_at(step, hp.learning_rate, schedule=hp.schedule, max_steps=hp.max_steps,
                              warmup_steps=hp.warmup_steps, min_lr_ratio=hp.min_lr_ratio)
        for group in optimizer.param_groups:
            group.update(lr=lr, betas=(hp.adam_beta1, hp.adam_beta2), eps=hp.adam_eps,
                         weight_decay=hp.weight_decay if group["decay"] else 0.0)
        for pass_index in range(s.passes):
            for number, rows in enumerate(chunks):
                first = pass_index == 0
                logprobs, entropy = completion_logprobs(model, rollout, rows, s.temperature, with_entropy=first)
                mask = rollout.completion_mask[rows]
                if first:
                    old[number] = logprobs.detach()
                    entropy_sum += float((entropy * mask).sum())
                    if uses_reference:
                        ref[number] = _reference_logprobs(reference, model, rollout, rows, s.temperature)
                loss, stats = grpo_loss(
                    logprobs, old[number], advantages[rows], mask, epsilon_low=s.epsilon_low,
                    epsilon_high=s.epsilon_high, ref_logprobs=ref.get(number), kl_beta=s.kl_beta,
                    normalization=s.loss_normalization, normalizer=normalizer)
                loss.backward()
                share = float(mask.sum()) / token_count if token_count else 0.0
                totals_by_pass["loss"] += float(loss.detach()) / s.passes
                for name in ("clip_low", "clip_high", "kl"):
                    totals_by_pass[name] += float(stats[name]) * share / s.passes
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if hp.grad_clip_norm is not None and params:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, hp.grad_clip_norm))
            elif params:
                grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        finished = time.perf_counter()

        lengths = [len(g.token_ids) for g in generations]
        prompt_tokens = sum(len(prompt.prompt_ids) for prompt in batch) * s.group_size
        seconds = finished - started
        metrics = {
            "step": step + 1,
            "loss": totals_by_pass["loss"],
            "reward_mean": float(reward.mean()),
            "reward_std": float(reward.std()) if len(totals) > 1 else 0.0,
            **{f"reward/{label}": sum(values) / len(values) for label, values in parts.items()},
            "entropy": entropy_sum / token_count if token_count else 0.0,
            "clip_fraction": totals_by_pass["clip_low"] + totals_by_pass["clip_high"],
            "clip_fraction_low": totals_by_pass["clip_low"],
            "clip_fraction_high": totals_by_pass["clip_high"],
            "completion_length": sum(lengths) / len(lengths),
            "stopped_fraction": sum(g.finish_reason == "stop" for g in generations) / len(generations),
            "num_tokens": prompt_tokens + sum(lengths),
            "tokens_per_second": (prompt_tokens + sum(lengths)) / seconds,
            "completions_per_second": len(generations) / seconds,
            "sample_seconds": sampled - started,
            "reward_seconds": scored - sampled,
            "update_seconds": finished - scored,
            "lr": lr,
            "grad_norm": grad_norm,
        }
        if uses_reference:
            metrics["kl"] = totals_by_pass["kl"]
        history.append(metrics)
        for logger in loggers:
            logger.log(step + 1, {k: float(v) for k, v in metrics.items() if k != "step"})
    model.eval()
    return history


def greedy_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, renderer: Renderer,
                  prompts: Sequence[RLPrompt], rewards: WeightedRewards, *, max_new_tokens: int,
                  device: str | None = None) -> float:
    """Mean total reward of the greedy completion of each prompt (accuracy, for a 0/1 reward); ``device``
    None generates where the model's weights are."""
    from crucible.inference import GenerationRequest, InferenceEngine

    engine = InferenceEngine(model, tokenizer, device=device or str(model_device(model)),
                             batch_size=max(1, len(prompts)), renderer=renderer)
    generations = engine.generate([GenerationRequest(messages=p.messages, max_new_tokens=max_new_tokens)
                                   for p in prompts])
    totals, _ = rewards.score([g.text for g in generations], [p.example for p in prompts])
    return sum(totals) / len(totals) if totals else math.nan


def prompt_of(example: Mapping[str, Any], renderer: Renderer, tokenizer: PreTrainedTokenizerBase,
              max_prompt_tokens: int) -> RLPrompt:
    """The RL prompt of an examples-table row: its chat up to (not including) the first assistant turn.

    Raises ValueError naming the example when it has no user turn or its prompt is too long.
    """
    messages = list(example["messages"])
    cut = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    messages = messages[:cut]
    if not any(m.get("role") == "user" for m in messages):
        raise ValueError(f"example {example.get('example_id')}: no user message before the answer to prompt with")
    ids = renderer.encode(tokenizer, renderer.render_text(messages, add_generation_prompt=True))
    if len(ids) > max_prompt_tokens:
        raise ValueError(f"example {example.get('example_id')}: prompt is {len(ids)} tokens, over the "
                         f"{max_prompt_tokens} left by max_length minus max_new_tokens")
    return RLPrompt(messages, ids, example)
