"""Supervised fine-tuning: the loop, written once against the training port.

Each optimizer step takes ``gradient_accumulation_steps`` micro-batches of ``batch_size``
examples from a seeded, epoch-by-epoch shuffled order; the position in that order (the data
cursor) is all a checkpoint needs to continue with exactly the same batches.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from crucible.train.backend import AdamParams, Datum, TrainingBackend
from crucible.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, seed_everything
from crucible.train.config import MetricLogger, TrainingHyperparameters
from crucible.train.packing import truncate_datum
from crucible.train.profiling import PhaseTimer, training_profiler
from crucible.train.schedules import learning_rate_at


@dataclass
class SFTResult:
    checkpoint_dir: str  # Hugging Face folder of the final weights
    steps: int
    final_loss: float
    loss_history: list[dict[str, float]] = field(default_factory=list)  # step, loss, lr, num_tokens, ...
    eval_losses: list[dict[str, float]] = field(default_factory=list)  # step, eval_loss
    tokens_per_second: float = 0.0  # real (non-padding) tokens per second of training in this process
    total_trainable_tokens: float = 0.0
    total_tokens: int = 0
    resumed_from_step: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # data, forward, backward, ... (profiling.PHASES)
    profile_trace: str | None = None  # Chrome trace JSON of a few steps, when asked for


def example_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example indices of ``epoch``; a pure function of (seed, epoch)."""
    order = list(range(num_examples))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def examples_at(data: Sequence[Datum], seed: int, cursor: int, count: int) -> list[Datum]:
    """The ``count`` examples that follow position ``cursor`` of the endless, epoch-shuffled stream."""
    n = len(data)
    picked = []
    for position in range(cursor, cursor + count):
        epoch, index = divmod(position, n)
        if index == 0 or not picked:
            order = example_order(n, seed, epoch)
        picked.append(data[order[index]])
    return picked


def on_main_process(backend: TrainingBackend, write):
    """Run ``write`` (a file-writing step: checkpoint, final weights) once for all the processes of a run.

    An in-process backend simply writes. A distributed one (``crucible.train.distributed``) first gathers
    whatever state is sharded (a collective every rank joins), lets rank 0 write, and holds the other
    ranks at a barrier until the files exist; they get None.
    """
    gather = getattr(backend, "gather_for_save", None)
    if gather is not None:
        gather()
    result = write() if getattr(backend, "is_main_process", True) else None
    barrier = getattr(backend, "barrier", None)
    if barrier is not None:
        barrier()
    return result


def evaluation_loss(backend: TrainingBackend, data: Sequence[Datum], batch_size: int) -> float:
    """Mean loss over every trainable token of ``data`` (no gradients)."""
    total, tokens = 0.0, 0.0
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        for datum, logprobs in zip(batch, backend.compute_logprobs(batch), strict=True):
            total -= sum(w * lp for w, lp in zip(datum.weights, logprobs, strict=True))
            tokens += datum.num_trainable
    return total / tokens if tokens else float("nan")


def run_sft(
    backend: TrainingBackend,
    train_data: Sequence[Datum],
    hyperparameters: TrainingHyperparameters,
    *,
    eval_data: Sequence[Datum] | None = None,
    output_dir: str | Path,
    loggers: Sequence[MetricLogger] = (),
    resume_from: str | Path | None = None,
    profile_trace: str | Path | None = None,
) -> SFTResult:
    """Train on ``train_data`` for ``hyperparameters.max_steps`` optimizer steps.

    Resumable checkpoints go to ``output_dir/checkpoints`` every ``checkpoint_every`` steps and the
    final Hugging Face weights to ``output_dir/final``. ``resume_from`` is a checkpoint folder, or
    ``"latest"`` for the newest one under ``output_dir/checkpoints`` (a fresh start when none exists).
    A fresh run seeds Python, NumPy and torch from ``hyperparameters.seed``; a resumed one restores
    the generator states, weights, optimizer and data cursor, so it ends bitwise where an
    uninterrupted run ends (same device and thread count). Loggers are not closed here.

    The result's ``phase_seconds`` says where the time went (data, forward, backward, communication,
    optimizer, evaluation, checkpointing; a backend that cannot split forward from backward reports
    ``forward_backward``). ``profile_trace`` (a ``.json`` path) records a few steps with
    ``torch.profiler`` as a Chrome trace (open it in Perfetto or chrome://tracing).
    """
    hp = hyperparameters
    if not train_data:
        raise ValueError("run_sft: train_data is empty")
    output_dir = Path(output_dir)
    checkpoints = output_dir / "checkpoints"
    train = [truncate_datum(d, hp.max_length) for d in train_data]
    evaluation = [truncate_datum(d, hp.max_length) for d in eval_data or []]

    seed_everything(hp.seed)
    state = {
        "step": 0,
        "data_cursor": 0,
        "loss_history": [],
        "eval_losses": [],
        "trainable_tokens": 0.0,
        "tokens": 0,
    }
    if resume_from is not None:
        path = latest_checkpoint(checkpoints) if str(resume_from) == "latest" else Path(resume_from)
        if path is not None:
            state = load_checkpoint(backend, path)
    start_step = state["step"]

    timer = PhaseTimer()
    # A backend that times its own phases (LocalBackend: data layout, forward, backward, communication,
    # optimizer) reports them apart; around any other, the loop times each call of the port as a whole.
    attach = getattr(backend, "attach_timer", None)
    if attach is not None:
        attach(timer)

    def port_phase(name: str):
        return nullcontext() if attach is not None else timer.phase(name)

    train_seconds, tokens_this_run = 0.0, 0
    with training_profiler(profile_trace, timer, steps=hp.max_steps - start_step) as profiler_step:
        for step in range(start_step, hp.max_steps):
            started = time.perf_counter()
            lr = learning_rate_at(
                step,
                hp.learning_rate,
                schedule=hp.schedule,
                max_steps=hp.max_steps,
                warmup_steps=hp.warmup_steps,
                min_lr_ratio=hp.min_lr_ratio,
            )
            loss_sum, trainable, tokens = 0.0, 0.0, 0
            for _ in range(hp.gradient_accumulation_steps):
                with timer.phase("data"):
                    batch = examples_at(train, hp.seed, state["data_cursor"], hp.batch_size)
                state["data_cursor"] += hp.batch_size
                with port_phase("forward_backward"):
                    result = backend.forward_backward(batch)
                loss_sum += result.loss * result.num_trainable_tokens
                trainable += result.num_trainable_tokens
                tokens += result.num_tokens
            adam = AdamParams(
                learning_rate=lr,
                beta1=hp.adam_beta1,
                beta2=hp.adam_beta2,
                eps=hp.adam_eps,
                weight_decay=hp.weight_decay,
                grad_clip_norm=hp.grad_clip_norm,
            )
            with port_phase("optimizer"):
                stats = backend.optim_step(adam)
            profiler_step()
            train_seconds += time.perf_counter() - started
            tokens_this_run += tokens
            state["trainable_tokens"] += trainable
            state["tokens"] += tokens

            metrics = {
                "step": step + 1,
                "loss": loss_sum / trainable if trainable else float("nan"),
                "lr": lr,
                "num_tokens": tokens,
                "num_trainable_tokens": trainable,
                "grad_norm": stats.get("grad_norm", float("nan")),
            }
            state["loss_history"].append(metrics)
            state["step"] = step + 1
            if evaluation and hp.eval_every and ((step + 1) % hp.eval_every == 0 or step + 1 == hp.max_steps):
                with timer.phase("evaluation"):
                    eval_loss = evaluation_loss(backend, evaluation, hp.batch_size)
                state["eval_losses"].append({"step": step + 1, "eval_loss": eval_loss})
                metrics = {**metrics, "eval_loss": eval_loss}
            for logger in loggers:
                logger.log(step + 1, {k: float(v) for k, v in metrics.items() if k != "step"})
            if hp.checkpoint_every and (step + 1) % hp.checkpoint_every == 0 and step + 1 < hp.max_steps:
                loop_state = {k: v for k, v in state.items() if k != "step"}
                with timer.phase("checkpointing"):
                    on_main_process(backend, partial(save_checkpoint, backend, checkpoints, step + 1, loop_state))
    with timer.phase("checkpointing"):
        final_dir = on_main_process(backend, partial(backend.save_weights, output_dir / "final"))
    history = state["loss_history"]
    return SFTResult(
        checkpoint_dir=final_dir or str(output_dir / "final"),
        steps=state["step"],
        final_loss=history[-1]["loss"] if history else float("nan"),
        loss_history=history,
        eval_losses=state["eval_losses"],
        tokens_per_second=tokens_this_run / train_seconds if train_seconds else 0.0,
        total_trainable_tokens=state["trainable_tokens"],
        total_tokens=state["tokens"],
        resumed_from_step=start_step,
        phase_seconds=timer.summary(),
        profile_trace=str(profile_trace) if profile_trace is not None and Path(profile_trace).exists() else None,
    )
