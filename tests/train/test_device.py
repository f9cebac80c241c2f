"""``device: cuda`` on a torch without CUDA is refused before training, naming who asked for it."""

import pytest
import torch

from crucible.train.config import DeviceUnavailableError, resolve_device
from crucible.train.local_backend import LocalBackend
from crucible.train.pipeline import run_sft_recipe
from crucible.train.recipes import apply_overrides, load_recipe
from resources.trainer import TrainerResource

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_auto_and_cpu_resolve_to_a_device_this_torch_has():
    assert resolve_device("auto", who="x") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu", who="x") == "cpu"


@no_cuda
def test_a_cuda_recipe_is_refused_before_anything_is_loaded(tmp_path):
    recipe = apply_overrides(load_recipe("sft_tiny_gsm8k"), {"hyperparameters.device": "cuda"})
    import pandas as pd

    rows = pd.DataFrame({"example_id": ["a"], "messages": ['[{"role": "user", "content": "hi"}]']})
    with pytest.raises(DeviceUnavailableError) as error:
        run_sft_recipe(recipe, rows, tmp_path / "run")
    message = str(error.value)
    assert message.startswith("recipe sft_tiny_gsm8k asks for device 'cuda' but this torch")
    assert "use device: auto or cpu, or install a CUDA build" in message
    assert not (tmp_path / "run").exists()  # refused before the run folder, the model or a step


@no_cuda
def test_the_trainer_resource_override_is_named_in_the_error():
    recipe = load_recipe("sft_tiny_gsm8k")
    with pytest.raises(DeviceUnavailableError, match=r"^TrainerResource\(device='cuda'\), overriding recipe "
                                                     r"sft_tiny_gsm8k's device, asks for device 'cuda'"):
        TrainerResource(device="cuda").configure(recipe)
    cuda_recipe = apply_overrides(recipe, {"hyperparameters.device": "cuda"})
    with pytest.raises(DeviceUnavailableError, match="^recipe sft_tiny_gsm8k asks for device 'cuda'"):
        TrainerResource().configure(cuda_recipe)
    assert TrainerResource(device="cpu").configure(cuda_recipe).hyperparameters.device == "cpu"


@no_cuda
def test_the_backend_refuses_cuda_itself():
    with pytest.raises(DeviceUnavailableError, match="^LocalBackend asks for device 'cuda:1'"):
        LocalBackend(torch.nn.Linear(2, 2), tokenizer=None, device="cuda:1")
