"""torchrun training: 2 CPU processes take exactly the single-process steps; FSDP on GPUs when present."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from crucible.train.backend import Datum
from crucible.train.backends import TrainerSettings
from crucible.train.distributed import DistributedLaunchError, launch_sft, shard_of
from crucible.train.pipeline import run_sft_recipe
from crucible.train.recipes import apply_overrides, load_recipe


def chat_rows(count: int, seed: int = 0) -> pd.DataFrame:
    """Short question/answer chats of varied lengths, so the shards of a batch differ in token counts."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        answer = " ".join(["so"] * rng.randint(0, 6) + [f"the sum is {a + b}"])
        messages = [{"role": "user", "content": f"what is {a} plus {b}?"},
                    {"role": "assistant", "content": answer}]
        rows.append({"example_id": f"ex{i}", "messages": json.dumps(messages)})
    return pd.DataFrame(rows)


def tiny_recipe(**hyperparameters):
    return apply_overrides(load_recipe("sft_tiny_gsm8k"), {
        "base_model.tiny.hidden_size": 32, "base_model.tiny.vocab_size": 320, "logging": ["jsonl"],
        "hyperparameters": {"max_steps": 4, "batch_size": 5, "gradient_accumulation_steps": 2,
                            "learning_rate": 1e-2, "warmup_steps": 1, "eval_every": 2, "checkpoint_every": 2,
                            "max_length": 48, "device": "cpu", **hyperparameters},
    })


def test_each_rank_takes_an_interleaved_shard_and_together_they_cover_the_batch():
    batch = [Datum([i], [i], [1.0]) for i in range(5)]
    shards = [shard_of(batch, rank, 2) for rank in range(2)]
    assert [d.input_ids[0] for d in shards[0]] == [0, 2, 4]
    assert [d.input_ids[0] for d in shards[1]] == [1, 3]
    assert shard_of(batch[:1], 1, 2) == []  # a rank may get nothing; it still joins the sums


@pytest.mark.slow
def test_two_cpu_processes_take_the_single_process_steps(tmp_path):
    recipe, rows = tiny_recipe(), chat_rows(40)
    single = run_sft_recipe(recipe, rows, tmp_path / "single")
    ddp = run_sft_recipe(recipe, rows, tmp_path / "ddp",
                         trainer=TrainerSettings(launcher="torchrun", nproc_per_node=2))

    assert ddp.steps == single.steps == 4
    assert (ddp.num_train, ddp.num_eval) == (single.num_train, single.num_eval)
    for one, two in zip(single.history, ddp.history, strict=True):
        assert one["step"] == two["step"]
        assert one["num_trainable_tokens"] == two["num_trainable_tokens"]  # the shards cover the global batch
        assert two["loss"] == pytest.approx(one["loss"], abs=1e-5)
        if "eval_loss" in one:
            assert two["eval_loss"] == pytest.approx(one["eval_loss"], abs=1e-5)
    assert single.history[-1]["loss"] < single.history[0]["loss"] - 0.1  # it trained, not just agreed

    # Rank 0 wrote the resumable checkpoint and the final weights, and both match the single process's:
    # summing in another order moves a few weights by ~1e-5 (Adam rescales near-zero gradients), against
    # training's ~1e-2 per step.
    untrained = load_file(tmp_path / "ddp" / "launch" / "initial_model" / "model.safetensors")
    for relative in ["train/checkpoints/step_000002/trainable.safetensors", "train/final/model.safetensors"]:
        expected, got = load_file(tmp_path / "single" / relative), load_file(tmp_path / "ddp" / relative)
        assert expected.keys() == got.keys()
        worst = max(float((expected[k] - got[k]).abs().max()) for k in expected)
        trained = max(float((untrained[k] - got[k]).abs().max()) for k in got)
        assert worst < 1e-4 and trained > 1e-2, f"{relative}: runs differ by {worst}, training moved {trained}"
    assert ddp.checkpoint_dir == str(tmp_path / "ddp" / "train" / "final")
    assert ddp.phase_seconds["communication"] > 0  # the ranks did talk
    logged = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4]  # the parent's loggers got them


@pytest.mark.slow
def test_a_failed_launch_says_why_and_where_the_log_is(tmp_path):
    hp = tiny_recipe().hyperparameters
    with pytest.raises(DistributedLaunchError) as error:
        launch_sft(launch_dir=tmp_path / "launch", hyperparameters=hp, model_dir=tmp_path / "no_such_model",
                   tokenizer_dir=tmp_path / "no_such_tokenizer", train_data=[Datum([1, 2], [2, 3], [1.0, 1.0])],
                   eval_data=None, output_dir=tmp_path / "train", nproc_per_node=2)
    message = str(error.value)
    assert "torchrun (2 processes, ddp) exited with" in message and str(tmp_path / "launch" / "torchrun.log") in message
    assert "no_such_tokenizer" in message  # the workers' own error is in the tail


def test_fsdp_refuses_resumable_checkpoints_before_launching(tmp_path):
    with pytest.raises(ValueError, match="strategy='fsdp' writes no resumable checkpoints"):
        launch_sft(launch_dir=tmp_path, hyperparameters=tiny_recipe().hyperparameters, model_dir="m",
                   tokenizer_dir="t", train_data=[], eval_data=None, output_dir=tmp_path, nproc_per_node=2,
                   strategy="fsdp")
    assert not (tmp_path / "launch.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        torch.cuda.device_count() < 2, reason=f"FSDP over GPUs needs 2 CUDA devices; this machine has "
                                              f"{torch.cuda.device_count()}")),
])
def test_fsdp_shards_take_the_single_process_steps(tmp_path, device):
    recipe, rows = tiny_recipe(device=device, checkpoint_every=0), chat_rows(40)
    single = run_sft_recipe(recipe, rows, tmp_path / "single")
    fsdp = run_sft_recipe(recipe, rows, tmp_path / "fsdp",
                          trainer=TrainerSettings(launcher="torchrun", nproc_per_node=2, strategy="fsdp"))
    # On CUDA both runs use bf16 autocast, whose rounding depends on how the sums are split.
    tolerance = 1e-5 if device == "cpu" else 2e-2
    for one, two in zip(single.history, fsdp.history, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], abs=tolerance)
    expected = load_file(tmp_path / "single" / "train/final/model.safetensors")
    got = load_file(tmp_path / "fsdp" / "train/final/model.safetensors")  # gathered from the shards by rank 0
    assert expected.keys() == got.keys()
    assert max(float((expected[k] - got[k]).abs().max()) for k in expected) < (1e-4 if device == "cpu" else 2e-2)
