"""The backend and device of a run are decided in one place, ``crucible.train.backends``: the
trainer's device takes precedence over the recipe's, and every disagreement is reported."""

import pytest
import torch

from crucible.train.backends import (
    TrainerSettings,
    choose_device,
    configure_recipe,
    load_model_for,
    make_backend,
)
from crucible.train.config import DeviceUnavailableError
from crucible.train.recipes import apply_overrides, load_recipe
from resources.trainer import TrainerResource

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def tiny(device: str = "cpu"):
    return apply_overrides(load_recipe("sft_tiny_gsm8k"), {"hyperparameters.device": device})


def test_the_recipe_decides_unless_the_trainer_sets_a_device():
    assert choose_device(tiny("cuda"), TrainerSettings()).device == "cuda"
    assert choose_device(tiny("cuda"), TrainerSettings()).decided_by == "recipe"
    chosen = choose_device(tiny("cuda"), TrainerSettings(device="cpu"))
    assert (chosen.device, chosen.decided_by) == ("cpu", "trainer")
    assert chosen.note == ("the trainer's device 'cpu' overrides recipe sft_tiny_gsm8k's device 'cuda' "
                           "(the trainer resource takes precedence)")
    assert choose_device(tiny("cpu"), TrainerSettings(device="cpu")).note == ""


def test_a_disagreement_is_reported_once_and_configuring_again_changes_nothing():
    warnings: list[str] = []
    configured = configure_recipe(tiny("auto"), TrainerSettings(device="cpu"), warn=warnings.append)
    assert configured.hyperparameters.device == "cpu"
    assert warnings == ["the trainer's device 'cpu' overrides recipe sft_tiny_gsm8k's device 'auto' "
                        "(the trainer resource takes precedence)"]
    assert configure_recipe(configured, TrainerSettings(device="cpu"), warn=warnings.append) == configured
    assert len(warnings) == 1
    assert configure_recipe(tiny("cpu"), TrainerSettings(device="cpu"), warn=warnings.append) == tiny("cpu")
    assert len(warnings) == 1


def test_the_default_report_goes_to_the_log(caplog):
    with caplog.at_level("WARNING", logger="crucible.train.backends"):
        configure_recipe(tiny("auto"), TrainerSettings(device="cpu"))
    assert "overrides recipe sft_tiny_gsm8k's device 'auto'" in caplog.text


@no_cuda
def test_an_unusable_device_names_whoever_asked_for_it():
    with pytest.raises(DeviceUnavailableError, match="^recipe sft_tiny_gsm8k asks for device 'cuda'"):
        configure_recipe(tiny("cuda"), TrainerSettings())
    with pytest.raises(DeviceUnavailableError, match=r"^TrainerResource\(device='cuda'\), overriding"):
        configure_recipe(tiny("cpu"), TrainerSettings(device="cuda"), warn=lambda _: None)


@no_cuda
def test_make_backend_puts_the_model_on_the_device_the_trainer_chose():
    from crucible.train.local_backend import LocalBackend

    recipe = tiny("cuda")  # unusable here: only the trainer's override makes this run possible
    model, tokenizer = load_model_for(apply_overrides(recipe, {"hyperparameters.device": "cpu"}), ["a b c"])
    with pytest.raises(DeviceUnavailableError):
        make_backend(recipe, model, tokenizer, TrainerSettings())
    backend = make_backend(recipe, model, tokenizer, TrainerSettings(device="cpu"))
    assert isinstance(backend, LocalBackend) and backend.device == torch.device("cpu")


def test_make_backend_builds_tinker_with_the_trainer_key(monkeypatch):
    from crucible.train.tinker_backend import TinkerBackend

    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    recipe = apply_overrides(load_recipe("sft_smollm2_gsm8k"), {
        "base_model": {"name_or_path": "meta-llama/Llama-3.2-1B"}, "backend": {"kind": "tinker"}})
    backend = make_backend(recipe, None, None, TrainerSettings(device="cuda", tinker_api_key="tml-test-key"))
    assert isinstance(backend, TinkerBackend) and not backend.connected
    assert backend.base_model == "meta-llama/Llama-3.2-1B"


def test_the_resource_only_hands_over_its_settings():
    resource = TrainerResource(device="cpu", num_threads=0, tinker_api_key="k")
    assert resource.settings() == TrainerSettings(device="cpu", num_threads=0, tinker_api_key="k")
    assert resource.configure(tiny("auto")).hyperparameters.device == "cpu"
    assert not hasattr(resource, "backend_factory")
