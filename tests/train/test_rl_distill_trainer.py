"""RL and distillation take their device from the trainer the way SFT does (``crucible.train.backends``):
the trainer's device overrides the recipe's, and ``cuda`` without CUDA is refused before anything loads,
naming whoever asked for it. Also: both record their lineage through one helper."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from crucible.train.backends import TrainerSettings
from crucible.train.config import DeviceUnavailableError, ModelSpec, TinyModelSpec
from crucible.train.recipes import apply_overrides, load_recipe, validate_recipe

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
OVERRIDE_NOTE = "the trainer's device 'cpu' overrides recipe {}'s device 'cuda' (the trainer resource takes precedence)"


def sums(count: int) -> pd.DataFrame:
    rows = []
    for i in range(count):
        a, b = i % 5, (i * 3) % 5
        messages = [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]
        rows.append({"example_id": f"s{i}", "input": f"{a}+{b}=", "target": str(a + b),
                     "messages": json.dumps(messages), "metadata": "{}"})
    return pd.DataFrame(rows)


def rl_recipe(device: str):
    return apply_overrides(load_recipe("rl_tiny_sums"), {
        "hyperparameters.device": device, "hyperparameters.max_steps": 1, "hyperparameters.batch_size": 2,
        "rl.group_size": 2, "logging": []})


def distill_recipe(device: str):
    return validate_recipe({
        "name": "distill_device_test", "method": "distill",
        "base_model": {"tiny": {"vocab_size": 320, "hidden_size": 32, "num_layers": 1, "num_heads": 4}},
        "dataset": {"name": "sums"}, "renderer": "chatml", "train_on": "last_assistant", "logging": [],
        "hyperparameters": {"max_steps": 1, "batch_size": 4, "max_length": 32, "device": device, "seed": 0},
        "distill": {"mode": "off_policy", "loss": "forward_kl"},
    })


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An untrained tiny teacher saved as a checkpoint folder: the device decision needs no skill."""
    from crucible.train.distill import resolve_teacher
    from crucible.train.models import load_model_and_tokenizer
    from crucible.train.pipeline import chat_texts

    spec = ModelSpec(tiny=TinyModelSpec(vocab_size=320, hidden_size=32, num_layers=1, num_heads=4))
    model, tokenizer = load_model_and_tokenizer(spec, tokenizer_texts=chat_texts(sums(12)) * 4, seed=1)
    folder = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return resolve_teacher(str(folder))


def run_rl(recipe, run_dir: Path, trainer: TrainerSettings | None):
    from crucible.train.rl_pipeline import run_rl_recipe

    return run_rl_recipe(recipe, sums(4), run_dir, trainer=trainer)


def run_distill(recipe, run_dir: Path, trainer: TrainerSettings | None, teacher):
    from crucible.train.distill import run_distill_recipe

    return run_distill_recipe(recipe, sums(12), run_dir, teacher, trainer=trainer)


@no_cuda
def test_rl_runs_on_the_trainers_cpu_although_its_recipe_asks_for_cuda(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="crucible.train.backends"):
        outcome = run_rl(rl_recipe("cuda"), tmp_path / "run", TrainerSettings(device="cpu"))
    assert outcome.steps == 1 and Path(outcome.checkpoint_dir, "model.safetensors").exists()
    assert load_recipe(tmp_path / "run" / "recipe.yaml").hyperparameters.device == "cpu"
    assert caplog.messages == [OVERRIDE_NOTE.format("rl_tiny_sums")], "the override is reported once"


@no_cuda
def test_distillation_runs_on_the_trainers_cpu_although_its_recipe_asks_for_cuda(tmp_path, teacher, caplog):
    with caplog.at_level("WARNING", logger="crucible.train.backends"):
        outcome = run_distill(distill_recipe("cuda"), tmp_path / "run", TrainerSettings(device="cpu"), teacher)
    assert outcome.steps == 1 and Path(outcome.checkpoint_dir, "model.safetensors").exists()
    assert load_recipe(tmp_path / "run" / "recipe.yaml").hyperparameters.device == "cpu"
    assert caplog.messages == [OVERRIDE_NOTE.format("distill_device_test")], "the override is reported once"


@no_cuda
@pytest.mark.parametrize("method", ["rl", "distill"])
def test_cuda_without_cuda_is_refused_before_anything_loads_naming_who_asked(method, tmp_path, request):
    teacher = request.getfixturevalue("teacher") if method == "distill" else None

    def run(recipe_device: str, trainer: TrainerSettings | None):
        if method == "rl":
            return run_rl(rl_recipe(recipe_device), tmp_path / "run", trainer)
        return run_distill(distill_recipe(recipe_device), tmp_path / "run", trainer, teacher)

    name = "rl_tiny_sums" if method == "rl" else "distill_device_test"
    with pytest.raises(DeviceUnavailableError, match=f"^recipe {name} asks for device 'cuda' but this torch"):
        run("cuda", None)
    with pytest.raises(DeviceUnavailableError,
                       match=rf"^TrainerResource\(device='cuda'\), overriding recipe {name}'s device, asks for"):
        run("cpu", TrainerSettings(device="cuda"))
    assert not (tmp_path / "run").exists(), "refused before the run folder was made"


def test_one_lineage_helper_writes_a_runs_edges_to_the_lake(lake):
    from crucible.quarantine import store_validated
    from crucible.registry.registry import lineage_edges
    from crucible.train.runs import run_lineage_edges
    from schemas import LINEAGE_EDGES

    for run_id, parent, relation in [("rl-1", "run:sft-1", "rl_trained_from"),
                                     ("distill-1", "checkpoint:/ckpt/t", "distilled_from")]:
        edges = run_lineage_edges(run_id, parent, relation, "gsm8k", 3, created_by=f"training/{run_id}")
        assert store_validated(lake, LINEAGE_EDGES, edges, source=run_id).accepted == 2
    stored = {(e.source, e.relation, e.target) for e in lineage_edges(lake).itertuples()}
    assert stored == {("run:sft-1", "rl_trained_from", "run:rl-1"), ("dataset:gsm8k@v3", "trained_on", "run:rl-1"),
                      ("checkpoint:/ckpt/t", "distilled_from", "run:distill-1"),
                      ("dataset:gsm8k@v3", "trained_on", "run:distill-1")}
