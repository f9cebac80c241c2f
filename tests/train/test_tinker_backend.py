"""TinkerBackend without the service: conversions into the real SDK types, credentials, laziness."""

from __future__ import annotations

import socket

import pytest
import tinker
from tinker import types
from tinker.proto.request_conv import forward_backward_request_to_proto

from crucible.train.backend import AdamParams, Datum, SamplingParams, TrainingBackend
from crucible.train.recipes import apply_overrides, load_recipe
from crucible.train.tinker_backend import (
    TinkerBackend,
    TinkerCredentialsError,
    resolve_api_key,
    to_tinker_adam,
    to_tinker_datum,
    to_tinker_sampling,
)

DATUM = Datum(input_ids=[5, 6, 7, 8], target_ids=[6, 7, 8, 9], weights=[0.0, 0.0, 1.0, 1.0])


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def fake_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TINKER_API_KEY", "tml-not-a-real-key")
    return "tml-not-a-real-key"


def test_datum_becomes_sdk_datum_with_targets_and_weights() -> None:
    converted = to_tinker_datum(DATUM)

    assert isinstance(converted, types.Datum)
    assert isinstance(converted.model_input, types.ModelInput)
    assert converted.model_input.to_ints() == [5, 6, 7, 8]
    targets, weights = converted.loss_fn_inputs["target_tokens"], converted.loss_fn_inputs["weights"]
    assert isinstance(targets, types.TensorData) and isinstance(weights, types.TensorData)
    assert (targets.dtype, targets.shape, targets.tolist()) == ("int64", [4], [6, 7, 8, 9])
    assert (weights.dtype, weights.shape, weights.tolist()) == ("float32", [4], [0.0, 0.0, 1.0, 1.0])


def test_weight_scale_turns_the_service_sum_into_a_mean() -> None:
    converted = to_tinker_datum(DATUM, weight_scale=1 / DATUM.num_trainable)
    assert converted.loss_fn_inputs["weights"].tolist() == [0.0, 0.0, 0.5, 0.5]


def test_converted_batch_encodes_as_a_forward_backward_request() -> None:
    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(
            data=[to_tinker_datum(DATUM)], loss_fn="cross_entropy"
        ),
        model_id="model-under-test",
        seq_id=1,
    )
    message = forward_backward_request_to_proto(request)

    assert message.loss_fn == "cross_entropy"
    assert len(message.data) == 1
    assert set(message.data[0].loss_fn_inputs) == {"target_tokens", "weights"}


def test_adam_params_map_to_sdk_adam_params() -> None:
    converted = to_tinker_adam(
        AdamParams(learning_rate=2e-4, beta2=0.95, eps=1e-9, weight_decay=0.01, grad_clip_norm=0.5)
    )

    assert isinstance(converted, types.AdamParams)
    assert converted.model_dump() == {
        "learning_rate": 2e-4,
        "beta1": 0.9,
        "beta2": 0.95,
        "eps": 1e-9,
        "weight_decay": 0.01,
        "grad_clip_norm": 0.5,
    }
    request = types.OptimStepRequest(optim_params=converted, model_id="model-under-test", seq_id=1)
    assert request.optim_params.learning_rate == 2e-4


def test_no_clipping_is_zero_for_tinker() -> None:
    assert to_tinker_adam(AdamParams(learning_rate=1e-3, grad_clip_norm=None)).grad_clip_norm == 0.0


def test_sampling_params_map_to_sdk_sampling_params() -> None:
    converted = to_tinker_sampling(
        SamplingParams(max_tokens=32, temperature=0.7, top_p=0.9, stop_token_ids=(2, 7), seed=3)
    )

    assert isinstance(converted, types.SamplingParams)
    assert (converted.max_tokens, converted.temperature, converted.top_p, converted.seed) == (32, 0.7, 0.9, 3)
    assert list(converted.stop) == [2, 7]
    request = types.SampleRequest(prompt=types.ModelInput.from_ints([1, 2]), sampling_params=converted)
    assert request.sampling_params.max_tokens == 32


def test_no_stop_tokens_keeps_eos_stopping() -> None:
    assert to_tinker_sampling(SamplingParams()).stop is None


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINKER_API_KEY", raising=False)

    with pytest.raises(TinkerCredentialsError, match="TINKER_API_KEY"):
        TinkerBackend("meta-llama/Llama-3.2-1B")
    with pytest.raises(TinkerCredentialsError, match="TINKER_API_KEY"):
        resolve_api_key()


def test_explicit_api_key_wins_over_environment(fake_key: str) -> None:
    assert resolve_api_key("tml-explicit") == "tml-explicit"
    assert resolve_api_key() == fake_key


def test_construction_does_not_touch_the_network(fake_key: str, no_network: None) -> None:
    backend = TinkerBackend("meta-llama/Llama-3.2-1B", lora_rank=16)

    assert isinstance(backend, TrainingBackend)
    assert not backend.connected
    assert backend._service_client is None


def test_bad_calls_fail_before_any_request(fake_key: str, no_network: None, tmp_path) -> None:
    backend = TinkerBackend("meta-llama/Llama-3.2-1B")

    with pytest.raises(ValueError, match="loss 'ppo' is not supported"):
        backend.forward_backward([DATUM], loss="ppo")
    with pytest.raises(ValueError, match="no trainable tokens"):
        backend.forward_backward([Datum([1, 2], [2, 3], [0.0, 0.0])])
    with pytest.raises(FileNotFoundError, match="tinker_state.json"):
        backend.load_state(tmp_path)
    assert not backend.connected


def test_from_recipe_takes_model_rank_and_settings(fake_key: str, no_network: None) -> None:
    recipe = apply_overrides(
        load_recipe("sft_smollm2_gsm8k"),
        {
            "base_model": {"name_or_path": "meta-llama/Llama-3.2-1B"},
            "backend": {"kind": "tinker", "train_unembed": False},
            "hyperparameters.gradient_accumulation_steps": 4,
        },
    )
    backend = TinkerBackend.from_recipe(recipe)

    assert backend.base_model == "meta-llama/Llama-3.2-1B"
    assert backend.lora_rank == recipe.hyperparameters.lora.rank == 16
    assert backend.train_unembed is False
    assert backend.gradient_accumulation_steps == 4
    assert not backend.connected


def test_from_recipe_refuses_a_local_recipe(fake_key: str) -> None:
    with pytest.raises(ValueError, match="not 'tinker'"):
        TinkerBackend.from_recipe(load_recipe("sft_tiny_gsm8k"))


def test_sdk_client_constructor_is_lazy_too(fake_key: str, no_network: None) -> None:
    backend = TinkerBackend("meta-llama/Llama-3.2-1B")
    service = backend._service()

    assert isinstance(service, tinker.ServiceClient)
    assert not backend.connected
