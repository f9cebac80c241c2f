"""run_sft: the loss falls, eval/checkpoints happen on schedule, and resume is bitwise exact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crucible.train.backend import Datum
from crucible.train.checkpoint import latest_checkpoint, list_checkpoints
from crucible.train.config import TinyModelSpec, TrainingHyperparameters
from crucible.train.local_backend import LocalBackend
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
from crucible.train.sft import examples_at, run_sft

REPO = Path(__file__).resolve().parents[2]
SPEC = TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4)


def pattern_datums(count: int, seed: int) -> list[Datum]:
    """Learnable data: counting sequences with a random start and length; the prompt half has weight 0."""
    rng = random.Random(seed)
    data = []
    for _ in range(count):
        n, start = rng.randint(6, 30), rng.randrange(5, 200)
        tokens = [start + i for i in range(n + 1)]
        data.append(Datum(tokens[:-1], tokens[1:], [0.0] * (n // 2) + [1.0] * (n - n // 2)))
    return data


def tiny_backend(lora=None) -> LocalBackend:
    tokenizer = train_bpe_tokenizer(["counting one two three"] * 4, vocab_size=300)
    return LocalBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu", lora=lora)


class StopAfter:
    """A logger that crashes the loop at a given step, like a process dying after a checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if step == self.step:
            raise KeyboardInterrupt

    def close(self) -> None: ...


def test_data_order_is_a_pure_function_of_seed_and_cursor():
    data = pattern_datums(5, seed=0)
    stream = examples_at(data, seed=3, cursor=0, count=12)
    assert stream[4:9] == examples_at(data, seed=3, cursor=4, count=5)
    assert sorted(map(id, stream[:5])) == sorted(map(id, data))  # each epoch is a permutation
    assert stream != examples_at(data, seed=4, cursor=0, count=12)


def test_run_sft_learns_evaluates_and_checkpoints(tmp_path):
    hp = TrainingHyperparameters(
        learning_rate=1e-2,
        max_steps=12,
        batch_size=4,
        gradient_accumulation_steps=2,
        warmup_steps=2,
        eval_every=4,
        checkpoint_every=5,
        max_length=16,
        device="cpu",
    )
    logged = []

    class Recorder:
        def log(self, step, metrics):
            logged.append((step, metrics))

        def close(self): ...

    result = run_sft(
        tiny_backend(),
        pattern_datums(24, seed=1),
        hp,
        eval_data=pattern_datums(6, seed=2),
        output_dir=tmp_path,
        loggers=[Recorder()],
    )
    losses = [h["loss"] for h in result.loss_history]
    assert result.steps == 12 and len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    assert [e["step"] for e in result.eval_losses] == [4, 8, 12]
    assert result.eval_losses[-1]["eval_loss"] < result.eval_losses[0]["eval_loss"]
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step_000005", "step_000010"]
    assert result.loss_history[0]["lr"] == pytest.approx(0.5e-2)  # warmup
    assert max(h["num_tokens"] for h in result.loss_history) <= 2 * 4 * 16  # truncated to max_length
    assert result.total_trainable_tokens == pytest.approx(
        sum(h["num_trainable_tokens"] for h in result.loss_history)
    )
    assert result.tokens_per_second > 0
    assert [s for s, _ in logged] == list(range(1, 13)) and "eval_loss" in logged[3][1]
    assert (Path(result.checkpoint_dir) / "model.safetensors").exists()


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    hp = TrainingHyperparameters(
        learning_rate=1e-2,
        max_steps=6,
        batch_size=3,
        warmup_steps=2,
        weight_decay=0.1,
        checkpoint_every=1,
        device="cpu",
    )
    data = pattern_datums(10, seed=3)
    straight = run_sft(tiny_backend(), data, hp, output_dir=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run_sft(tiny_backend(), data, hp, output_dir=tmp_path / "crashed", loggers=[StopAfter(4)])
    assert latest_checkpoint(tmp_path / "crashed" / "checkpoints").name == "step_000003"
    resumed = run_sft(tiny_backend(), data, hp, output_dir=tmp_path / "crashed", resume_from="latest")
    assert resumed.resumed_from_step == 3
    assert resumed.loss_history == straight.loss_history
    a = load_file(Path(straight.checkpoint_dir) / "model.safetensors")
    b = load_file(Path(resumed.checkpoint_dir) / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
sys.path.insert(0, {tests!r})
from test_sft import pattern_datums, tiny_backend
from crucible.train.config import LoraSettings, TrainingHyperparameters
from crucible.train.sft import run_sft

class Slow:
    def log(self, step, metrics):
        time.sleep(0.25)
    def close(self):
        pass

hp = TrainingHyperparameters(
    learning_rate=1e-2, max_steps=8, batch_size=3, gradient_accumulation_steps=2, warmup_steps=2,
    schedule="cosine", weight_decay=0.1, checkpoint_every=1, device="cpu",
)
backend = tiny_backend(lora=LoraSettings(rank=4, dropout=0.2, target_modules=["q_proj", "v_proj", "up_proj"]))
result = run_sft(backend, pattern_datums(12, seed=4), hp, output_dir=sys.argv[1], loggers=[Slow()],
                 resume_from="latest" if sys.argv[2] == "resume" else None)
print(json.dumps({{"resumed_from_step": result.resumed_from_step, "dir": result.checkpoint_dir}}))
"""


def run_child(output_dir: Path, mode: str) -> subprocess.Popen:
    script = CHILD.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", script, str(output_dir), mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_sigkilled_run_resumes_bitwise_identical(tmp_path):
    """LoRA with dropout: exact resume needs the weights, Adam state, RNG states and data cursor."""
    kill_after = random.Random(20240611).randint(2, 6)
    straight = run_child(tmp_path / "straight", "fresh")
    victim = run_child(tmp_path / "killed", "fresh")
    marker = tmp_path / "killed" / "checkpoints" / f"step_{kill_after:06d}"
    deadline = time.monotonic() + 150
    while not marker.exists():
        assert victim.poll() is None, "the child finished before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final").exists()

    resumed = finish(run_child(tmp_path / "killed", "resume"))
    reference = finish(straight)
    assert kill_after <= resumed["resumed_from_step"] < 8
    a = (Path(reference["dir"]) / "model.safetensors").read_bytes()
    b = (Path(resumed["dir"]) / "model.safetensors").read_bytes()
    assert a == b
