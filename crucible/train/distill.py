"""Knowledge distillation: token-level losses against a teacher's logits, the loop, and the recipe pipeline.

Three modes share the losses: ``off_policy`` distils on the dataset's completions, ``on_policy`` on
completions the student samples (GKD), and ``sequence`` fine-tunes the student on the teacher's own
generations with the SFT loop. Teacher and student must share one vocabulary.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from crucible.train.backend import Datum
from crucible.train.config import MetricLogger, TrainingHyperparameters
from crucible.train.recipes import DistillSettings, Recipe, save_recipe

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from crucible.lake import DeltaLake
    from crucible.train.backends import TrainerSettings
    from crucible.train.data import RejectedExample
    from crucible.train.local_backend import LocalBackend
    from crucible.train.renderers import Renderer

LATEST_SFT = "latest_sft"


# -- losses ---------------------------------------------------------------------------------------


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    import torch

    return torch.log_softmax(logits.float() / temperature, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """sum_v p(v) (log p(v) - log q(v)) over the last axis."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token forward KL, mean-seeking (the student covers every mode of the teacher):

        KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v)),   p = softmax(z / tau)

    Logits are (tokens, vocab); returns (tokens,) in float32.
    """
    return _kl(_log_probs(teacher_logits, temperature), _log_probs(student_logits, temperature))


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-token reverse KL, mode-seeking (the student puts its mass where the teacher's is):

        KL(p_S || p_T) = sum_v p_S(v) (log p_S(v) - log p_T(v)),   p = softmax(z / tau)
    """
    return _kl(_log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature))


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """Per-token generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, eq. 1):

        m = beta p_T + (1 - beta) p_S
        JSD_beta = beta KL(p_T || m) + (1 - beta) KL(p_S || m)

    Near the ends JSD_beta vanishes like beta KL(p_T || p_S) (beta -> 0) and (1 - beta) KL(p_S || p_T)
    (beta -> 1), so the ends are defined as those KLs: beta = 0 is :func:`forward_kl` and beta = 1 is
    :func:`reverse_kl` (the convention of TRL's ``GKDTrainer.generalized_jsd_loss``).
    """
    import math

    import torch

    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"generalized_jsd: beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, temperature)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, temperature)
    log_s, log_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    log_m = torch.logaddexp(log_t + math.log(beta), log_s + math.log1p(-beta))
    return beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss: str = "forward_kl",
                     beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """The per-token divergence a recipe names: ``forward_kl``, ``reverse_kl`` or ``jsd`` (with ``beta``)."""
    if loss == "forward_kl":
        return forward_kl(student_logits, teacher_logits, temperature)
    if loss == "reverse_kl":
        return reverse_kl(student_logits, teacher_logits, temperature)
    if loss == "jsd":
        return generalized_jsd(student_logits, teacher_logits, beta, temperature)
    raise ValueError(f"unknown distillation loss {loss!r}; expected forward_kl, reverse_kl or jsd")


@dataclass
class DistillationLoss:
    """``total`` carries the gradient; ``divergence`` and ``cross_entropy`` are its detached parts."""

    total: torch.Tensor
    divergence: float
    cross_entropy: float


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target_ids: torch.Tensor,
                      weights: torch.Tensor, *, loss: str = "forward_kl", beta: float = 0.5,
                      temperature: float = 1.0, alpha: float = 0.0,
                      normalizer: float | None = None) -> DistillationLoss:
    """Weighted mix of the divergence from the teacher and cross-entropy on the labels:

        loss = sum_i w_i [ (1 - alpha) D(p_T,i, p_S,i) + alpha (-log p_S(y_i)) ] / N,   N = normalizer or sum_i w_i

    ``D`` is :func:`token_divergence` at ``temperature``; the cross-entropy uses the untempered logits.
    Prompt tokens carry ``w_i = 0`` and add nothing (TRL's ``labels == -100``). Logits are
    (tokens, vocab) for the same positions; an all-zero-weight batch has loss 0.
    """
    from crucible.train.losses import weighted_token_cross_entropy

    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"distillation_loss: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; the models must share a vocabulary")
    weights = weights.float()
    n = float(weights.sum()) if normalizer is None else normalizer
    divergence = (token_divergence(student_logits, teacher_logits, loss, beta, temperature) * weights).sum()
    cross_entropy = weighted_token_cross_entropy(student_logits, target_ids, weights, normalizer=1.0)
    total = (1.0 - alpha) * divergence + alpha * cross_entropy
    if n <= 0:
        return DistillationLoss(total * 0.0, 0.0, 0.0)
    return DistillationLoss(total / n, divergence.item() / n, cross_entropy.item() / n)


# -- teacher and student --------------------------------------------------------------------------


class VocabularyMismatchError(ValueError):
    """Teacher and student do not share one vocabulary, so their distributions cannot be compared."""


_PROBE_TEXTS = ("The quick brown fox jumps over the lazy dog. 12345 + 678 = 13023",
                "Natalia sold clips to 48 of her friends in April, and half as many in May.")


def check_shared_vocabulary(student_name: str, student_tokenizer: PreTrainedTokenizerBase, student_vocab_size: int,
                            teacher_name: str, teacher_tokenizer: PreTrainedTokenizerBase, teacher_vocab_size: int,
                            probe_size: int = 256) -> None:
    """Raise :class:`VocabularyMismatchError`, naming both models, unless the logits have one width and
    the tokenizers map tokens to ids alike on a probe (special tokens, ids spread over the vocabulary,
    and a few encoded sentences)."""
    both = f"student {student_name} and teacher {teacher_name}"
    if student_vocab_size != teacher_vocab_size:
        raise VocabularyMismatchError(
            f"{both} do not share a vocabulary: the student's logits have {student_vocab_size} entries, the "
            f"teacher's {teacher_vocab_size}; use a student of the teacher's family or build it with "
            f"vocab_size: {teacher_vocab_size} and the teacher's tokenizer")
    if len(student_tokenizer) != len(teacher_tokenizer):
        raise VocabularyMismatchError(
            f"{both} do not share a vocabulary: the student's tokenizer has {len(student_tokenizer)} tokens, "
            f"the teacher's {len(teacher_tokenizer)}")
    step = max(1, len(teacher_tokenizer) // probe_size)
    ids = sorted({*range(0, len(teacher_tokenizer), step), *teacher_tokenizer.all_special_ids})
    differing = [(i, t, s) for i, t, s in zip(ids, teacher_tokenizer.convert_ids_to_tokens(ids),
                                               student_tokenizer.convert_ids_to_tokens(ids), strict=True) if t != s]
    if differing:
        shown = ", ".join(f"id {i}: teacher {t!r}, student {s!r}" for i, t, s in differing[:3])
        raise VocabularyMismatchError(
            f"{both} do not share a vocabulary: {len(differing)} of {len(ids)} probed ids map to different "
            f"tokens ({shown}); the student must use the teacher's tokenizer")
    for text in _PROBE_TEXTS:
        teacher_ids = teacher_tokenizer.encode(text, add_special_tokens=False)
        student_ids = student_tokenizer.encode(text, add_special_tokens=False)
        if teacher_ids != student_ids:
            raise VocabularyMismatchError(
                f"{both} do not share a vocabulary: they tokenize {text[:40]!r}... differently "
                f"(teacher {teacher_ids[:8]}, student {student_ids[:8]}); the student must use the teacher's tokenizer")


@dataclass(frozen=True)
class TeacherSource:
    """Where the teacher comes from: a training run, a checkpoint folder or a hub model.

    ``node`` is its lineage node id (``run:<id>``, ``checkpoint:<folder>`` or ``base:<name>``).
    """

    kind: str  # "run" | "checkpoint" | "hub"
    location: str  # the folder or hub name to load
    node: str
    run_id: str | None = None

    @property
    def name(self) -> str:
        return f"run {self.run_id}" if self.run_id else self.location


def resolve_teacher(teacher: str, lake: DeltaLake | None = None) -> TeacherSource:
    """``latest_sft`` (the newest SFT run on the lake), a run id of ``training/runs``, a Hugging Face
    checkpoint folder, or else a hub model name."""
    from schemas import TRAINING_RUNS

    runs = lake.read(TRAINING_RUNS) if lake is not None else pd.DataFrame(columns=["run_id", "method"])
    if teacher == LATEST_SFT:
        sft = runs[runs["method"] == "sft"]
        if sft.empty:
            raise LookupError(f"teacher {LATEST_SFT!r}: no SFT run in {TRAINING_RUNS.path} to distil from; "
                              "materialize training/sft_checkpoint first, or set distill.teacher to a run id, "
                              "a checkpoint folder or a model name")
        run = sft.sort_values("finished_at").iloc[-1]
        return TeacherSource("run", run["checkpoint_uri"], f"run:{run['run_id']}", run["run_id"])
    match = runs[runs["run_id"] == teacher]
    if not match.empty:
        return TeacherSource("run", match.iloc[0]["checkpoint_uri"], f"run:{teacher}", teacher)
    path = Path(teacher)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"teacher {teacher}: the folder holds no Hugging Face model (config.json)")
        return TeacherSource("checkpoint", str(path.resolve()), f"checkpoint:{path.resolve()}")
    if teacher.startswith((".", "/", "~")) or path.suffix:
        raise FileNotFoundError(f"teacher {teacher}: no such checkpoint folder, and not a run id of "
                                f"{TRAINING_RUNS.path}")
    return TeacherSource("hub", teacher, f"base:{teacher}")


def load_teacher(source: TeacherSource) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The teacher in float32, frozen and in eval mode, with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source.location)
    except OSError as error:
        raise FileNotFoundError(f"teacher {source.name}: cannot load {source.location} ({error})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    return model.eval(), tokenizer


def student_name(recipe: Recipe) -> str:
    spec = recipe.base_model
    return spec.name_or_path or f"tiny-{spec.tiny.family}"


def build_student(recipe: Recipe, teacher: PreTrainedModel, teacher_tokenizer: PreTrainedTokenizerBase,
                  teacher_name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The recipe's base model as the student; a tiny one is built on the teacher's tokenizer.

    Raises :class:`VocabularyMismatchError` before any training when the two cannot share a vocabulary.
    """
    from crucible.train.models import build_tiny_causal_lm, load_model_and_tokenizer

    spec = recipe.base_model
    teacher_size = teacher.config.vocab_size
    if spec.tiny is not None:
        check_shared_vocabulary(student_name(recipe), teacher_tokenizer, spec.tiny.vocab_size, teacher_name,
                                teacher_tokenizer, teacher_size)
        return build_tiny_causal_lm(spec.tiny, teacher_tokenizer, seed=recipe.hyperparameters.seed), teacher_tokenizer
    model, tokenizer = load_model_and_tokenizer(spec)
    check_shared_vocabulary(student_name(recipe), tokenizer, model.config.vocab_size, teacher_name,
                            teacher_tokenizer, teacher_size)
    return model, tokenizer


# -- data -----------------------------------------------------------------------------------------


def prompt_of(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its last assistant message: what a model is asked."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
    return messages[:last]


def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, renderer: Renderer,
                     prompts: Sequence[list[dict]], *, max_new_tokens: int, temperature: float, seeds: Sequence[int],
                     device: str, batch_size: int = 8) -> list[str]:
    """One sampled answer per prompt from ``model`` (through the inference engine), seeded per prompt."""
    from crucible.inference.engine import GenerationRequest, InferenceEngine

    was_training = model.training
    engine = InferenceEngine(model, tokenizer, device=device, batch_size=batch_size, renderer=renderer)
    requests = [GenerationRequest(messages=list(p), max_new_tokens=max_new_tokens, temperature=temperature, seed=s)
                for p, s in zip(prompts, seeds, strict=True)]
    answers = [g.text for g in engine.generate(requests)]
    model.train(was_training)
    return answers


def prompt_ids(renderer: Renderer, tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """The tokens a model reads before answering ``messages``: the chat rendered with a generation prompt."""
    return renderer.encode(tokenizer, renderer.render_text(messages, add_generation_prompt=True))


def stop_token_ids(renderer: Renderer, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """End-of-sequence and the renderer's end-of-turn markers that are single tokens."""
    stops = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for stop in renderer.stop_sequences():
        ids = tokenizer.encode(stop, add_special_tokens=False)
        if len(ids) == 1:
            stops.add(ids[0])
    return tuple(sorted(stops))


def student_rollouts(backend: LocalBackend, renderer: Renderer, prompts: Sequence[list[dict]], *,
                     max_new_tokens: int, temperature: float, seed: int) -> list[Datum]:
    """One completion per prompt sampled from the student, as Datums weighted on the completion only.

    The sampled token ids are trained on as they are (no decode/re-encode round trip), which is what
    makes the data on-policy.
    """
    from crucible.train.backend import SamplingParams

    asked = [prompt_ids(renderer, backend.tokenizer, p) for p in prompts]
    params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature,
                            stop_token_ids=stop_token_ids(renderer, backend.tokenizer), seed=seed)
    datums = []
    for prompt, completion in zip(asked, backend.sample(asked, params), strict=True):
        tokens = prompt + completion
        datums.append(Datum(tokens[:-1], tokens[1:], [0.0] * (len(prompt) - 1) + [1.0] * len(completion)))
    return datums


def answered(prompts: Sequence[list[dict]], answers: Sequence[str], ids: Sequence[str]) -> pd.DataFrame:
    """Examples-table-like rows (``example_id``, ``messages``): each prompt with its answer appended."""
    return pd.DataFrame({
        "example_id": list(ids),
        "messages": [json.dumps([*p, {"role": "assistant", "content": a}]) for p, a in zip(prompts, answers, strict=True)],
    })


# -- the token-level loop -------------------------------------------------------------------------


@dataclass
class DistillResult:
    checkpoint_dir: str
    steps: int
    final_loss: float
    loss_history: list[dict[str, float]] = field(default_factory=list)  # step, loss, divergence, ...
    eval_kls: list[dict[str, float]] = field(default_factory=list)  # step, eval_kl (step 0 = before training)
    tokens_per_second: float = 0.0
    total_trainable_tokens: float = 0.0
    total_tokens: int = 0


def _logits(model: PreTrainedModel, batch: Sequence[Datum], pad_id: int, device: Any):
    from crucible.train.packing import pad_datums

    inputs = pad_datums(batch, pad_id).to(device)
    keep = inputs.weights > 0
    logits = model(input_ids=inputs.input_ids, position_ids=inputs.position_ids, use_cache=False).logits
    return logits[keep], inputs.target_ids[keep], inputs.weights[keep], inputs.num_tokens


def mean_token_divergence(student: PreTrainedModel, teacher: PreTrainedModel, data: Sequence[Datum], *,
                          loss: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
                          batch_size: int = 8, pad_id: int = 0) -> float:
    """Weighted mean per-token divergence of the student from the teacher over ``data``'s trained tokens."""
    import torch

    device = next(student.parameters()).device
    was_training = student.training
    student.eval()
    total, tokens = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data[start:start + batch_size]
            student_logits, _, weights, _ = _logits(student, batch, pad_id, device)
            teacher_logits, _, _, _ = _logits(teacher, batch, pad_id, device)
            divergence = token_divergence(student_logits, teacher_logits, loss, beta, temperature)
            total += float((divergence * weights).sum())
            tokens += float(weights.sum())
    student.train(was_training)
    return total / tokens if tokens else float("nan")


def _optimizer(model: PreTrainedModel, hp: TrainingHyperparameters) -> torch.optim.Optimizer:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    # As in LocalBackend: decay matrices, not norms and biases.
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=hp.learning_rate,
                             betas=(hp.adam_beta1, hp.adam_beta2), eps=hp.adam_eps)


def run_token_distillation(backend: LocalBackend, teacher: PreTrainedModel,
                           hyperparameters: TrainingHyperparameters, settings: DistillSettings, *,
                           output_dir: str | Path, train_data: Sequence[Datum] | None = None,
                           prompts: Sequence[list[dict]] | None = None, renderer: Renderer | None = None,
                           eval_data: Sequence[Datum] | None = None,
                           loggers: Sequence[MetricLogger] = ()) -> DistillResult:
    """Distil ``teacher`` into the student that ``backend`` holds, for ``max_steps`` optimizer steps.

    ``off_policy`` trains on ``train_data`` (weights mark the completion tokens); ``on_policy``
    samples, for each micro-batch of ``prompts``, one completion per prompt from the current student
    (``backend.sample`` at ``settings.temperature``, prompts rendered by ``renderer``) and scores it
    against the teacher. Batches follow the SFT loop's seeded, epoch-shuffled order. The student's
    logits come from ``backend.model`` and its own AdamW (the port's ``forward_backward`` knows
    cross-entropy only). ``eval_kl`` (forward KL at temperature 1 on ``eval_data``) is measured before
    training, every ``eval_every`` steps and at the end. The final weights go to ``output_dir/final``.
    """
    import torch

    from crucible.train.checkpoint import seed_everything
    from crucible.train.packing import truncate_datum
    from crucible.train.schedules import learning_rate_at
    from crucible.train.sft import examples_at

    hp, on_policy = hyperparameters, settings.mode == "on_policy"
    source = prompts if on_policy else train_data
    if not source:
        raise ValueError(f"run_token_distillation: no {'prompts' if on_policy else 'train_data'} for mode {settings.mode}")
    if on_policy and renderer is None:
        raise ValueError("run_token_distillation: on_policy mode needs a renderer to build the student's prompts")
    student, tokenizer, device = backend.model, backend.tokenizer, backend.device
    student.train()
    teacher.to(device).eval()
    pad_id = tokenizer.pad_token_id or 0
    evaluation = [truncate_datum(d, hp.max_length) for d in eval_data or []]
    seed_everything(hp.seed)
    optimizer = _optimizer(student, hp)

    def evaluate(step: int) -> dict[str, float]:
        return {"step": step, "eval_kl": mean_token_divergence(student, teacher, evaluation, batch_size=hp.batch_size,
                                                               pad_id=pad_id)}

    eval_kls = [evaluate(0)] if evaluation else []
    history, cursor, seconds, total_trainable, total_tokens = [], 0, 0.0, 0.0, 0
    for step in range(hp.max_steps):
        started = time.perf_counter()
        lr = learning_rate_at(step, hp.learning_rate, schedule=hp.schedule, max_steps=hp.max_steps,
                              warmup_steps=hp.warmup_steps, min_lr_ratio=hp.min_lr_ratio)
        batches, sampled = [], 0
        for _ in range(hp.gradient_accumulation_steps):
            picked = examples_at(source, hp.seed, cursor, hp.batch_size)
            if on_policy:
                picked = student_rollouts(backend, renderer, picked, max_new_tokens=settings.max_new_tokens,
                                          temperature=settings.temperature, seed=hp.seed * 1_000_003 + cursor)
                sampled += sum(d.num_trainable for d in picked)
            batches.append([truncate_datum(d, hp.max_length) for d in picked])
            cursor += hp.batch_size
        trainable = sum(d.num_trainable for batch in batches for d in batch)
        divergence = cross_entropy = 0.0
        tokens = 0
        for batch in batches:
            student_logits, targets, weights, num_tokens = _logits(student, batch, pad_id, device)
            with torch.no_grad():
                teacher_logits = _logits(teacher, batch, pad_id, device)[0]
            parts = distillation_loss(student_logits, teacher_logits, targets, weights, loss=settings.loss,
                                      beta=settings.beta, temperature=settings.temperature, alpha=settings.alpha,
                                      normalizer=trainable)
            parts.total.backward()
            divergence += parts.divergence
            cross_entropy += parts.cross_entropy
            tokens += num_tokens
        for group in optimizer.param_groups:
            group["lr"] = lr
        params = [p for p in student.parameters() if p.grad is not None]
        if hp.grad_clip_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, hp.grad_clip_norm))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - started
        total_trainable += trainable
        total_tokens += tokens

        metrics = {"step": step + 1,
                   "loss": (1 - settings.alpha) * divergence + settings.alpha * cross_entropy,
                   "divergence": divergence, "cross_entropy": cross_entropy, "lr": lr, "grad_norm": grad_norm,
                   "num_tokens": tokens, "num_trainable_tokens": trainable}
        if on_policy:
            metrics["sampled_tokens"] = sampled
        if evaluation and ((hp.eval_every and (step + 1) % hp.eval_every == 0) or step + 1 == hp.max_steps):
            eval_kls.append(evaluate(step + 1))
            metrics["eval_kl"] = eval_kls[-1]["eval_kl"]
        history.append(metrics)
        for logger in loggers:
            logger.log(step + 1, {k: float(v) for k, v in metrics.items() if k != "step"})

    final = backend.save_weights(Path(output_dir) / "final")
    return DistillResult(checkpoint_dir=final, steps=hp.max_steps, final_loss=history[-1]["loss"],
                         loss_history=history, eval_kls=eval_kls,
                         tokens_per_second=total_tokens / seconds if seconds else 0.0,
                         total_trainable_tokens=total_trainable, total_tokens=total_tokens)


# -- the recipe pipeline --------------------------------------------------------------------------


@dataclass
class DistillOutcome:
    checkpoint_dir: str
    steps: int
    final_loss: float | None
    tokens_per_second: float
    history: list[dict[str, float]]
    num_train: int
    num_eval: int
    teacher: TeacherSource
    student: str
    eval_kl_before: float | None = None
    eval_kl_after: float | None = None
    rejected: list[RejectedExample] = field(default_factory=list)
    metric_summary: dict[str, Any] = field(default_factory=dict)  # MetricHistoryLogger.summary(), when logged


def run_distill_recipe(recipe: Recipe, examples: pd.DataFrame, run_dir: str | Path, teacher: TeacherSource, *,
                       trainer: TrainerSettings | None = None, extra_loggers: Sequence[MetricLogger] = (),
                       eval_fraction: float = 0.1) -> DistillOutcome:
    """Distil ``teacher`` into ``recipe.base_model`` on ``examples`` (ExamplesSchema rows) and save it.

    A tenth of the examples (at least 10 needed) is held out: its prompts and dataset answers measure
    the forward KL from teacher to student before and after. ``sequence`` mode has the teacher answer
    the training prompts and fine-tunes the student on those answers with the SFT loop (``run_sft``).
    ``trainer`` carries the machine's settings (device override); the backend is always in process.
    """
    from crucible.inference.engine import recorded_renderer
    from crucible.train.backends import TrainerSettings, configure_recipe, make_backend, run_device
    from crucible.train.loggers import MetricHistoryLogger, MultiLogger, build_loggers
    from crucible.train.pipeline import conversation_datums, merged_history
    from crucible.train.renderers import get_renderer
    from crucible.train.sft import run_sft

    if recipe.method != "distill" or recipe.distill is None:
        raise ValueError(f"recipe {recipe.name}: method is {recipe.method!r}, not 'distill'")
    if recipe.backend.kind != "local":
        raise ValueError(f"recipe {recipe.name}: distillation runs in process; set backend: local")
    if examples.empty:
        raise ValueError(f"recipe {recipe.name}: no examples of {recipe.dataset.name}/{recipe.dataset.split}")
    trainer = trainer or TrainerSettings()
    recipe = configure_recipe(recipe, trainer)  # refuses an unusable device before anything is loaded
    settings, hp = recipe.distill, recipe.hyperparameters
    device = run_device(recipe, trainer)  # where the teacher works; the student's backend decides the same way
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_recipe(recipe, run_dir / "recipe.yaml")

    teacher_model, tokenizer = load_teacher(teacher)
    student, tokenizer = build_student(recipe, teacher_model, tokenizer, teacher.name)
    renderer = get_renderer(recipe.renderer if recipe.renderer != "auto" else
                            recorded_renderer(Path(teacher.location)) or teacher.location)
    order = list(range(len(examples)))
    random.Random(hp.seed).shuffle(order)
    num_eval = int(len(order) * eval_fraction) if len(order) >= 10 else 0
    held_out, training = examples.iloc[order[:num_eval]], examples.iloc[order[num_eval:]]
    eval_data, _, _ = conversation_datums(held_out, renderer, tokenizer, "last_assistant", hp.max_length)
    train_on = recipe.train_on if settings.mode == "off_policy" else "last_assistant"
    if settings.mode == "off_policy":
        train_data, _, rejected = conversation_datums(training, renderer, tokenizer, train_on, hp.max_length)
        prompts = None
    else:
        rejected = []
        prompts = [prompt_of(json.loads(m)) for m in training["messages"]]
        train_data = None
    if settings.mode == "sequence":
        answers = generate_answers(teacher_model, tokenizer, renderer, prompts, max_new_tokens=settings.max_new_tokens,
                                   temperature=settings.temperature, seeds=[hp.seed + i for i in range(len(prompts))],
                                   device=device, batch_size=hp.batch_size)
        train_data, _, rejected = conversation_datums(answered(prompts, answers, list(training["example_id"])),
                                                      renderer, tokenizer, train_on, hp.max_length)
    if not (train_data or prompts):
        raise ValueError(f"recipe {recipe.name}: every example was rejected, e.g. {rejected[0].reason}")

    loggers = build_loggers(recipe.logging, run_dir, total_steps=hp.max_steps, run_name=recipe.name,
                            run_config=recipe.model_dump(mode="json"))
    all_loggers = MultiLogger([*loggers.loggers, *extra_loggers])
    pad_id = tokenizer.pad_token_id or 0
    try:
        if settings.mode == "sequence":
            teacher_model.to(device)
            before = mean_token_divergence(student.to(device), teacher_model, eval_data, pad_id=pad_id) if eval_data else None
            backend = make_backend(recipe, student, tokenizer, trainer)
            result = run_sft(backend, train_data, hp, output_dir=run_dir / "train", loggers=all_loggers.loggers)
            after = mean_token_divergence(backend.model, teacher_model, eval_data, pad_id=pad_id) if eval_data else None
            history = merged_history(result)
            if after is not None:
                history[-1]["eval_kl"] = after
        else:
            backend = make_backend(recipe, student, tokenizer, trainer)
            result = run_token_distillation(backend, teacher_model, hp, settings, output_dir=run_dir / "train",
                                            train_data=train_data, prompts=prompts, renderer=renderer,
                                            eval_data=eval_data or None, loggers=all_loggers.loggers)
            before = result.eval_kls[0]["eval_kl"] if result.eval_kls else None
            after = result.eval_kls[-1]["eval_kl"] if result.eval_kls else None
            history = result.loss_history
    finally:
        all_loggers.close()
    if before is not None:
        history = [{"step": 0, "eval_kl": before}, *history]  # the student as built, before any update
    history_logger = loggers.get(MetricHistoryLogger)
    return DistillOutcome(
        checkpoint_dir=str(result.checkpoint_dir), steps=result.steps, final_loss=result.final_loss,
        tokens_per_second=result.tokens_per_second, history=history,
        num_train=len(train_data or prompts), num_eval=len(eval_data), teacher=teacher, student=student_name(recipe),
        eval_kl_before=before, eval_kl_after=after, rejected=rejected,
        metric_summary=history_logger.summary() if history_logger else {},
    )
