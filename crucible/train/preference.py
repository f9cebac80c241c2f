"""Direct preference optimisation: the losses, preference pairs as tokens, and the training loop.

A pair is a prompt with a chosen and a rejected completion. The policy scores both completions of every
pair of a micro-batch in ONE packed forward pass (chosen sequences first, then rejected), and the loss
compares its log-ratios against a reference policy's: log-probs stored once per pair (``cached``), or a
frozen copy of the starting model scoring each batch (``frozen``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from crucible.train.backend import AdamParams, Datum
from crucible.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, seed_everything
from crucible.train.config import MetricLogger, TrainingHyperparameters
from crucible.train.local_backend import LocalBackend
from crucible.train.losses import token_logprobs
from crucible.train.packing import pad_datums
from crucible.train.schedules import learning_rate_at
from crucible.train.sft import examples_at

if TYPE_CHECKING:
    import torch

LossType = Literal["sigmoid", "ipo", "hinge"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge")


# -- losses: pure functions of tensors ----------------------------------------------------------


def sigmoid_dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float,
                     label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023), conservative with label smoothing (cDPO), per pair.

        h = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))
        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    ``chosen_logratios`` and ``rejected_logratios`` are (pairs,) sums over each completion's tokens;
    ``eps`` (``label_smoothing``) is the probability that a pair's label is flipped.
    """
    import torch.nn.functional as F

    h = chosen_logratios - rejected_logratios
    return -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def ipo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, chosen_lengths: torch.Tensor,
             rejected_lengths: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, eq. 17) on length-normalised log-ratios, per pair.

        h = (log pi(y_w|x) - log ref(y_w|x)) / |y_w| - (log pi(y_l|x) - log ref(y_l|x)) / |y_l|
        loss = (h - 1 / (2 * beta))^2

    ``beta`` is the paper's tau; ``|y|`` is a completion's token count. Normalising by length keeps beta
    comparable across completion lengths (TRL does the same).
    """
    h = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
    return (h - 1.0 / (2.0 * beta)) ** 2


def hinge_dpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-style hinge on the DPO log-ratio margin, per pair.

        h = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))
        loss = max(0, 1 - beta * h)
    """
    import torch

    return torch.relu(1.0 - beta * (chosen_logratios - rejected_logratios))


@dataclass
class PreferenceLoss:
    """Per-pair losses and implicit rewards ``beta * (log pi - log ref)`` of each completion (no gradient)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def preference_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                    ref_rejected: torch.Tensor, *, beta: float, loss_type: str = "sigmoid",
                    label_smoothing: float = 0.0, chosen_lengths: torch.Tensor | None = None,
                    rejected_lengths: torch.Tensor | None = None) -> PreferenceLoss:
    """The per-pair loss of ``loss_type`` from summed completion log-probs (each tensor is (pairs,))."""
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    if loss_type == "sigmoid":
        losses = sigmoid_dpo_loss(chosen_logratios, rejected_logratios, beta, label_smoothing)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("preference_loss: loss_type 'ipo' needs chosen_lengths and rejected_lengths")
        losses = ipo_loss(chosen_logratios, rejected_logratios, chosen_lengths, rejected_lengths, beta)
    elif loss_type == "hinge":
        losses = hinge_dpo_loss(chosen_logratios, rejected_logratios, beta)
    else:
        raise ValueError(f"preference_loss: unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    return PreferenceLoss(losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach())


# -- pairs as tokens ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePair:
    """A prompt and two completions as token ids, with the reference log-probs once they are known."""

    pair_id: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    ref_chosen_logp: float | None = None
    ref_rejected_logp: float | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids or not self.chosen_ids or not self.rejected_ids:
            raise ValueError(f"pair {self.pair_id}: prompt, chosen and rejected must each have tokens "
                             f"(got {len(self.prompt_ids)}, {len(self.chosen_ids)}, {len(self.rejected_ids)})")

    @property
    def tokens_sha(self) -> str:
        """sha256 of the token ids: a cached reference log-prob is reused only for the same tokens."""
        text = json.dumps([self.prompt_ids, self.chosen_ids, self.rejected_ids], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def datums(self) -> tuple[Datum, Datum]:
        """Chosen and rejected as next-token Datums weighted 1 on the completion's targets only."""
        return _completion_datum(self.prompt_ids, self.chosen_ids), _completion_datum(self.prompt_ids,
                                                                                      self.rejected_ids)

    def truncated(self, max_length: int) -> PreferencePair:
        """Each sequence cut to its first ``max_length`` tokens; the prompt must leave room for a completion."""
        if len(self.prompt_ids) >= max_length:
            raise ValueError(f"pair {self.pair_id}: the prompt alone has {len(self.prompt_ids)} tokens, "
                             f"max_length={max_length} leaves no completion; raise max_length or shorten it")
        room = max_length - len(self.prompt_ids)
        return replace(self, chosen_ids=self.chosen_ids[:room], rejected_ids=self.rejected_ids[:room])


def _completion_datum(prompt_ids: list[int], completion_ids: list[int]) -> Datum:
    tokens = prompt_ids + completion_ids
    weights = [0.0] * (len(prompt_ids) - 1) + [1.0] * len(completion_ids)
    return Datum(input_ids=tokens[:-1], target_ids=tokens[1:], weights=weights)


def tokenize_pair(pair_id: str, prompt: list[dict], chosen: list[dict], rejected: list[dict], renderer,
                  tokenizer) -> PreferencePair:
    """Render ``prompt + chosen`` and ``prompt + rejected`` with the chat format; the completion starts at the
    first token a supervised example would train on (the assistant content, after its role header) and ends
    with its last (the end-of-turn marker)."""
    from crucible.train.renderers import build_supervised_example

    def split(completion: list[dict]) -> tuple[list[int], list[int]]:
        messages = [{**m, "trainable": False} for m in prompt] + [{**m, "trainable": True} for m in completion]
        tokens, weights = build_supervised_example(renderer, tokenizer, messages, "all_assistant")
        trained = [i for i, w in enumerate(weights) if w > 0]
        return tokens[: trained[0]], tokens[trained[0]: trained[-1] + 1]

    prompt_ids, chosen_ids = split(chosen)
    rejected_prompt_ids, rejected_ids = split(rejected)
    if prompt_ids != rejected_prompt_ids:
        raise ValueError(f"pair {pair_id}: the prompt renders differently before the chosen and the rejected "
                         "completion; both completions must be assistant turns after the same prompt")
    return PreferencePair(pair_id, prompt_ids, chosen_ids, rejected_ids)


# -- the in-process backend with a preference step ----------------------------------------------


@dataclass
class SequenceLogprobs:
    """Summed completion log-probs of chosen and rejected (pairs,), their token counts, and tokens read."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    num_tokens: int


@dataclass
class PreferenceStep:
    """Sums over the pairs of one micro-batch (the loop turns them into means over the step)."""

    loss_sum: float
    chosen_reward_sum: float
    rejected_reward_sum: float
    correct: float  # pairs whose chosen reward beats the rejected one
    chosen_logp_sum: float
    rejected_logp_sum: float
    num_pairs: int
    num_tokens: int


def disable_dropout(model) -> None:
    """Dropout off, as in TRL: the policy and reference log-probs of a pair must be comparable."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class PreferenceBackend(LocalBackend):
    """``LocalBackend`` plus the preference step: both completions of every pair in one packed forward.

    Gradients of the per-pair loss *sum* accumulate; ``optim_step`` divides them by the pairs seen since
    the last step, so an update follows the mean loss over the step's pairs however it was split.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        disable_dropout(self.model)

    def sequence_logprobs(self, pairs: Sequence[PreferencePair], *, grad: bool = False) -> SequenceLogprobs:
        """Completion log-probs of every pair: chosen sequences, then rejected, in one forward pass.

        The rows are right-padded, not packed: a preference batch is many short sequences of different
        lengths, where one batched causal attention call beat per-sequence packed attention (3.6 vs 5.7
        CPU-s per step of 8 pairs in bench/bench_dpo.py's model). The LM head runs only on completion
        positions; a token's log-prob is added to its sequence's sum.
        """
        import torch

        datums = [d for pair in pairs for d in pair.datums()]
        ordered = datums[0::2] + datums[1::2]  # all chosen, then all rejected
        if not grad:
            self.model.eval()
        with torch.set_grad_enabled(grad), self._autocast():
            inputs = pad_datums(ordered, self.tokenizer.pad_token_id or 0).to(self.device)
            keep = inputs.weights > 0
            logprobs = token_logprobs(self._logits(inputs, keep), inputs.target_ids[keep])
        self.model.train()
        owner = torch.arange(len(ordered), device=keep.device)[:, None].expand_as(keep)
        sums = torch.zeros(len(ordered), dtype=logprobs.dtype, device=logprobs.device)
        sums = sums.index_add(0, owner[keep], logprobs)
        counts = torch.tensor([len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs],
                              dtype=torch.float32, device=sums.device)
        n = len(pairs)
        return SequenceLogprobs(sums[:n], sums[n:], counts[:n], counts[n:], inputs.num_tokens)

    def forward_backward_preference(self, pairs: Sequence[PreferencePair], *, beta: float, loss_type: str,
                                    label_smoothing: float = 0.0,
                                    reference: PreferenceBackend | None = None) -> PreferenceStep:
        """Accumulate the gradient of the summed per-pair loss; the reference log-probs come from the pairs,
        or from ``reference`` (a frozen model) when given."""
        import torch

        policy = self.sequence_logprobs(pairs, grad=True)
        if reference is not None:
            scored = reference.sequence_logprobs(pairs)
            ref_chosen, ref_rejected = scored.chosen.to(policy.chosen.device), scored.rejected.to(policy.chosen.device)
        else:
            missing = [p.pair_id for p in pairs if p.ref_chosen_logp is None or p.ref_rejected_logp is None]
            if missing:
                raise ValueError(f"pairs {missing[:3]} have no reference log-probs: fill them first "
                                 "(fill_reference_logprobs) or pass a frozen reference")
            ref_chosen = torch.tensor([p.ref_chosen_logp for p in pairs], device=policy.chosen.device)
            ref_rejected = torch.tensor([p.ref_rejected_logp for p in pairs], device=policy.chosen.device)
        result = preference_loss(policy.chosen, policy.rejected, ref_chosen, ref_rejected, beta=beta,
                                 loss_type=loss_type, label_smoothing=label_smoothing,
                                 chosen_lengths=policy.chosen_lengths, rejected_lengths=policy.rejected_lengths)
        total = result.losses.sum()
        total.backward()
        self._pending_tokens += len(pairs)  # optim_step divides by it: the mean over the step's pairs
        return PreferenceStep(
            loss_sum=total.item(), chosen_reward_sum=result.chosen_rewards.sum().item(),
            rejected_reward_sum=result.rejected_rewards.sum().item(),
            correct=(result.chosen_rewards > result.rejected_rewards).float().sum().item(),
            chosen_logp_sum=policy.chosen.detach().sum().item(),
            rejected_logp_sum=policy.rejected.detach().sum().item(), num_pairs=len(pairs),
            num_tokens=policy.num_tokens)

    def frozen_copy(self) -> PreferenceBackend:
        """A reference backend holding a frozen copy of the current weights (no optimizer, no gradients)."""
        frozen = copy.copy(self)
        frozen.model = copy.deepcopy(self.model).eval().requires_grad_(False)
        frozen._optimizer = None
        frozen._pending_tokens = 0.0
        return frozen


def fill_reference_logprobs(reference: PreferenceBackend, pairs: Sequence[PreferencePair],
                            batch_size: int) -> list[PreferencePair]:
    """``pairs`` with ``ref_chosen_logp``/``ref_rejected_logp`` scored by ``reference`` (no gradients)."""
    filled: list[PreferencePair] = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start: start + batch_size]
        scored = reference.sequence_logprobs(batch)
        filled += [replace(pair, ref_chosen_logp=float(c), ref_rejected_logp=float(r))
                   for pair, c, r in zip(batch, scored.chosen.tolist(), scored.rejected.tolist(), strict=True)]
    return filled


# -- the loop ----------------------------------------------------------------------------------


@dataclass
class DPOResult:
    checkpoint_dir: str  # Hugging Face folder of the final weights
    steps: int
    final_loss: float
    history: list[dict[str, float]] = field(default_factory=list)  # step, loss, rewards/..., lr, ...
    tokens_per_second: float = 0.0
    pairs_per_second: float = 0.0
    resumed_from_step: int = 0


def run_dpo(backend: PreferenceBackend, pairs: Sequence[PreferencePair], hyperparameters: TrainingHyperparameters,
            *, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
            reference: PreferenceBackend | None = None, output_dir: str | Path,
            loggers: Sequence[MetricLogger] = (), resume_from: str | Path | None = None) -> DPOResult:
    """Train on ``pairs`` for ``hyperparameters.max_steps`` steps of ``gradient_accumulation_steps`` micro-batches
    of ``batch_size`` pairs, drawn like SFT's examples (seeded, epoch-shuffled, resumable by a data cursor).

    Without ``reference`` every pair must carry its reference log-probs. Per step it logs TRL's metric names:
    ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, plus
    ``logps/chosen``, ``logps/rejected``, ``lr``, ``grad_norm``, ``num_tokens`` and ``tokens_per_second``.
    """
    hp = hyperparameters
    if not pairs:
        raise ValueError("run_dpo: no preference pairs to train on")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"run_dpo: unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    output_dir = Path(output_dir)
    checkpoints = output_dir / "checkpoints"
    seed_everything(hp.seed)
    state: dict = {"step": 0, "data_cursor": 0, "history": []}
    if resume_from is not None:
        path = latest_checkpoint(checkpoints) if str(resume_from) == "latest" else Path(resume_from)
        if path is not None:
            state = load_checkpoint(backend, path)
    start_step = state["step"]

    seconds, tokens_seen, pairs_seen = 0.0, 0, 0
    for step in range(start_step, hp.max_steps):
        started = time.perf_counter()
        lr = learning_rate_at(step, hp.learning_rate, schedule=hp.schedule, max_steps=hp.max_steps,
                              warmup_steps=hp.warmup_steps, min_lr_ratio=hp.min_lr_ratio)
        parts: list[PreferenceStep] = []
        for _ in range(hp.gradient_accumulation_steps):
            batch = examples_at(pairs, hp.seed, state["data_cursor"], hp.batch_size)
            state["data_cursor"] += hp.batch_size
            parts.append(backend.forward_backward_preference(batch, beta=beta, loss_type=loss_type,
                                                             label_smoothing=label_smoothing, reference=reference))
        stats = backend.optim_step(AdamParams(learning_rate=lr, beta1=hp.adam_beta1, beta2=hp.adam_beta2,
                                              eps=hp.adam_eps, weight_decay=hp.weight_decay,
                                              grad_clip_norm=hp.grad_clip_norm))
        elapsed = time.perf_counter() - started
        n = sum(p.num_pairs for p in parts)
        tokens = sum(p.num_tokens for p in parts)
        seconds, tokens_seen, pairs_seen = seconds + elapsed, tokens_seen + tokens, pairs_seen + n
        chosen = sum(p.chosen_reward_sum for p in parts) / n
        rejected = sum(p.rejected_reward_sum for p in parts) / n
        metrics = {
            "step": step + 1, "loss": sum(p.loss_sum for p in parts) / n,
            "rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margins": chosen - rejected,
            "rewards/accuracies": sum(p.correct for p in parts) / n,
            "logps/chosen": sum(p.chosen_logp_sum for p in parts) / n,
            "logps/rejected": sum(p.rejected_logp_sum for p in parts) / n,
            "lr": lr, "grad_norm": stats.get("grad_norm", float("nan")), "num_tokens": tokens,
            "tokens_per_second": tokens / elapsed if elapsed > 0 else 0.0,
        }
        state["history"].append(metrics)
        state["step"] = step + 1
        for logger in loggers:
            logger.log(step + 1, {k: float(v) for k, v in metrics.items() if k != "step"})
        if hp.checkpoint_every and (step + 1) % hp.checkpoint_every == 0 and step + 1 < hp.max_steps:
            save_checkpoint(backend, checkpoints, step + 1, {k: v for k, v in state.items() if k != "step"})

    final_dir = backend.save_weights(output_dir / "final")
    history = state["history"]
    return DPOResult(
        checkpoint_dir=final_dir, steps=state["step"], final_loss=history[-1]["loss"] if history else float("nan"),
        history=history, tokens_per_second=tokens_seen / seconds if seconds else 0.0,
        pairs_per_second=pairs_seen / seconds if seconds else 0.0, resumed_from_step=start_step)
