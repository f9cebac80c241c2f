"""The training port over the Tinker service: the same loop, with the model on Tinker's GPUs.

Nothing here talks to the network until a training call is made: the SDK clients are created
on first use. The API key comes from the caller (a Dagster resource) or ``TINKER_API_KEY``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crucible.train.backend import AdamParams, Datum, ForwardBackwardResult, SamplingParams

if TYPE_CHECKING:
    import tinker

    from crucible.train.recipes import Recipe

API_KEY_ENV = "TINKER_API_KEY"
STATE_POINTER_FILE = "tinker_state.json"
EXPORT_POINTER_FILE = "tinker_export.json"
DEFAULT_LORA_RANK = 32

# Our Datum carries targets and weights only, which is what Tinker's supervised loss reads.
# The RL losses need sampling logprobs and advantages that the port does not carry yet.
SUPPORTED_LOSSES = ("cross_entropy",)


class TinkerCredentialsError(RuntimeError):
    """No Tinker API key was given or found in the environment."""


def resolve_api_key(api_key: str | None = None) -> str:
    """``api_key`` if given, else ``$TINKER_API_KEY``; a clear error when neither is set."""
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key:
        raise TinkerCredentialsError(
            f"TinkerBackend needs a Tinker API key: set {API_KEY_ENV} in the environment (or pass "
            "api_key=...). Create a key in the Tinker console at https://tinker.thinkingmachines.ai."
        )
    return key


def to_tinker_datum(datum: Datum, weight_scale: float = 1.0) -> tinker.types.Datum:
    """Our ``Datum`` as the SDK's: input tokens, and ``target_tokens``/``weights`` for the loss.

    ``weight_scale`` multiplies every weight (see :meth:`TinkerBackend.forward_backward`).
    """
    from tinker import types

    length = len(datum.input_ids)
    return types.Datum(
        model_input=types.ModelInput.from_ints(list(datum.input_ids)),
        loss_fn_inputs={
            "target_tokens": types.TensorData(data=list(datum.target_ids), dtype="int64", shape=[length]),
            "weights": types.TensorData(
                data=[weight * weight_scale for weight in datum.weights], dtype="float32", shape=[length]
            ),
        },
    )


def to_tinker_adam(adam: AdamParams) -> tinker.types.AdamParams:
    """Our Adam settings as the SDK's; Tinker spells "no clipping" as ``grad_clip_norm=0.0``."""
    from tinker import types

    return types.AdamParams(
        learning_rate=adam.learning_rate,
        beta1=adam.beta1,
        beta2=adam.beta2,
        eps=adam.eps,
        weight_decay=adam.weight_decay,
        grad_clip_norm=adam.grad_clip_norm or 0.0,
    )


def to_tinker_sampling(params: SamplingParams) -> tinker.types.SamplingParams:
    """Our sampling settings as the SDK's. No stop tokens means ``stop=None``: stop at EOS only
    (the SDK reads an empty list as "never stop before max_tokens")."""
    from tinker import types

    return types.SamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        stop=list(params.stop_token_ids) if params.stop_token_ids else None,
    )


def _checkpoint_name(path: str | Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).name).strip("-.")
    if not name:
        raise ValueError(f"cannot derive a Tinker checkpoint name from path {str(path)!r}")
    return name


class TinkerBackend:
    """``TrainingBackend`` on Tinker: LoRA training of a hosted base model.

    Every call blocks on the SDK future (``.result()``), as the port is synchronous.
    Checkpoints live on the service: ``save_state(path)`` stores one there and writes its
    ``tinker://`` address to ``<path>/tinker_state.json``; ``load_state`` accepts that folder
    or the ``tinker://`` address itself.
    """

    def __init__(
        self,
        base_model: str,
        *,
        lora_rank: int = DEFAULT_LORA_RANK,
        api_key: str | None = None,
        base_url: str | None = None,
        seed: int | None = None,
        gradient_accumulation_steps: int = 1,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        checkpoint_ttl_seconds: int | None = None,
        user_metadata: dict[str, str] | None = None,
    ):
        if not (train_mlp or train_attn or train_unembed):
            raise ValueError(
                "TinkerBackend: at least one of train_mlp, train_attn, train_unembed must be True"
            )
        if gradient_accumulation_steps < 1:
            raise ValueError(
                f"TinkerBackend: gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}"
            )
        self.base_model = base_model
        self.lora_rank = lora_rank
        self.base_url = base_url
        self.seed = seed
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.train_mlp = train_mlp
        self.train_attn = train_attn
        self.train_unembed = train_unembed
        self.checkpoint_ttl_seconds = checkpoint_ttl_seconds
        self.user_metadata = dict(user_metadata or {})
        self._api_key = resolve_api_key(api_key)
        self._service_client: tinker.ServiceClient | None = None
        self._training_client: tinker.TrainingClient | None = None
        self._sampling_client: tinker.SamplingClient | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, api_key: str | None = None) -> TinkerBackend:
        """A backend for a recipe whose ``backend.kind`` is ``tinker``; the LoRA rank comes from
        ``hyperparameters.lora.rank`` (Tinker's default of 32 when the recipe sets no LoRA)."""
        settings = recipe.backend
        if settings.kind != "tinker":
            raise ValueError(f"recipe {recipe.name!r}: backend is {settings.kind!r}, not 'tinker'")
        if recipe.base_model.name_or_path is None:
            raise ValueError(f"recipe {recipe.name!r}: Tinker needs base_model.name_or_path")
        lora = recipe.hyperparameters.lora
        return cls(
            recipe.base_model.name_or_path,
            lora_rank=lora.rank if lora is not None else DEFAULT_LORA_RANK,
            api_key=api_key,
            base_url=settings.base_url,
            seed=recipe.hyperparameters.seed,
            gradient_accumulation_steps=recipe.hyperparameters.gradient_accumulation_steps,
            train_mlp=settings.train_mlp,
            train_attn=settings.train_attn,
            train_unembed=settings.train_unembed,
            checkpoint_ttl_seconds=settings.checkpoint_ttl_seconds,
            user_metadata={"recipe": recipe.name},
        )

    @property
    def connected(self) -> bool:
        """Whether a training session has been opened on the service."""
        return self._training_client is not None

    def _service(self) -> tinker.ServiceClient:
        if self._service_client is None:
            import tinker

            self._service_client = tinker.ServiceClient(
                user_metadata=self.user_metadata or None, api_key=self._api_key, base_url=self.base_url
            )
        return self._service_client

    def _training(self) -> tinker.TrainingClient:
        if self._training_client is None:
            self._training_client = (
                self._service()
                .create_lora_training_client(
                    base_model=self.base_model,
                    rank=self.lora_rank,
                    seed=self.seed,
                    train_mlp=self.train_mlp,
                    train_attn=self.train_attn,
                    train_unembed=self.train_unembed,
                    user_metadata=self.user_metadata or None,
                )
                .result()
            )
        return self._training_client

    def _sampler(self) -> tinker.SamplingClient:
        # A snapshot of the current weights; optim_step and load_state invalidate it.
        if self._sampling_client is None:
            self._sampling_client = self._training().save_weights_and_get_sampling_client().result()
        return self._sampling_client

    def forward_backward(self, batch: Sequence[Datum], loss: str = "cross_entropy") -> ForwardBackwardResult:
        """Accumulate gradients of the weighted mean token loss of ``batch`` on the service.

        Tinker's cross entropy is a sum, ``-sum_t w_t log p(target_t)``; dividing every weight by
        the batch's total weight (and by ``gradient_accumulation_steps``) makes the accumulated
        gradient the mean of the micro-batch means. With one micro-batch per step that is exactly the
        local backend's gradient, which takes one mean over all tokens of the step; with
        accumulation the two differ only when micro-batches hold different numbers of tokens.
        """
        if loss not in SUPPORTED_LOSSES:
            raise ValueError(
                f"TinkerBackend: loss {loss!r} is not supported; expected one of {SUPPORTED_LOSSES}"
            )
        if not batch:
            raise ValueError("TinkerBackend.forward_backward: empty batch")
        total_weight = sum(datum.num_trainable for datum in batch)
        if total_weight <= 0:
            raise ValueError(
                "TinkerBackend.forward_backward: batch has no trainable tokens (all weights are 0)"
            )
        scale = 1.0 / (total_weight * self.gradient_accumulation_steps)
        data = [to_tinker_datum(datum, weight_scale=scale) for datum in batch]
        output = self._training().forward_backward(data, "cross_entropy").result()
        weighted_logprob = 0.0
        for datum, outputs in zip(batch, output.loss_fn_outputs, strict=True):
            logprobs = outputs["logprobs"].tolist()
            weighted_logprob += sum(lp * w for lp, w in zip(logprobs, datum.weights, strict=True))
        return ForwardBackwardResult(
            loss=-weighted_logprob / total_weight,
            num_trainable_tokens=total_weight,
            num_tokens=sum(len(datum.input_ids) for datum in batch),
            metrics={name: float(value) for name, value in output.metrics.items()},
        )

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        response = self._training().optim_step(to_tinker_adam(adam)).result()
        self._sampling_client = None
        metrics = {name: float(value) for name, value in (response.metrics or {}).items()}
        return {"learning_rate": adam.learning_rate, **metrics}

    def sample(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[list[int]]:
        """One completion per prompt from the current weights; all requests are in flight at once."""
        from tinker import types

        sampler = self._sampler()
        sdk_params = to_tinker_sampling(params)
        futures = [
            sampler.sample(
                prompt=types.ModelInput.from_ints(list(prompt)), num_samples=1, sampling_params=sdk_params
            )
            for prompt in prompts
        ]
        return [list(future.result().sequences[0].tokens) for future in futures]

    def compute_logprobs(self, batch: Sequence[Datum]) -> list[list[float]]:
        """Log-probability of every target token, from a forward pass without gradients."""
        if not batch:
            return []
        output = (
            self._training().forward([to_tinker_datum(datum) for datum in batch], "cross_entropy").result()
        )
        return [[float(lp) for lp in outputs["logprobs"].tolist()] for outputs in output.loss_fn_outputs]

    def save_state(self, path: str | Path) -> None:
        """Save weights and optimizer state on the service as checkpoint ``<path name>`` and record
        its ``tinker://`` address in ``<path>/tinker_state.json``."""
        response = (
            self._training()
            .save_state(_checkpoint_name(path), ttl_seconds=self.checkpoint_ttl_seconds, overwrite=True)
            .result()
        )
        self._write_pointer(Path(path) / STATE_POINTER_FILE, response.path)

    def load_state(self, path: str | Path) -> None:
        """Resume from a ``tinker://`` checkpoint, or a folder written by :meth:`save_state`: a new
        training client is created from the checkpoint with its optimizer state."""
        tinker_path = self._read_pointer(path, STATE_POINTER_FILE)
        self._training_client = (
            self._service()
            .create_training_client_from_state_with_optimizer(
                tinker_path, user_metadata=self.user_metadata or None
            )
            .result()
        )
        self._sampling_client = None

    def save_weights(self, path: str | Path) -> str:
        """Export the trained weights in Hugging Face format and download them into ``path``.

        The service writes the export (``save_weights_external``) and hands out one signed URL per
        file; the tokenizer of the base model is saved next to them. Returns ``path``.
        """
        import tinker

        target = Path(path)
        export = self._training().save_weights_external(_checkpoint_name(target)).result()
        rest = tinker.RestClient(api_key=self._api_key, base_url=self.base_url)
        urls = rest.get_external_weights_urls(export.path).result().urls
        if not urls:
            raise RuntimeError(f"Tinker export {export.path} lists no files to download")
        target.mkdir(parents=True, exist_ok=True)
        for relative_name, url in sorted(urls.items()):
            destination = (target / relative_name).resolve()
            if target.resolve() not in destination.parents:
                raise RuntimeError(
                    f"Tinker export {export.path}: file name {relative_name!r} leaves {target}"
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(url) as response, destination.open("wb") as file:
                shutil.copyfileobj(response, file)
        self._training().get_tokenizer().save_pretrained(str(target))
        self._write_pointer(target / EXPORT_POINTER_FILE, export.path)
        return str(target)

    def close(self, status: Literal["success", "errored", "interrupted"] = "success") -> None:
        """Finish the Tinker session (``status``: success, errored or interrupted)."""
        if self._service_client is not None:
            self._service_client.close(status).result()
            self._service_client = None
            self._training_client = None
            self._sampling_client = None

    def _write_pointer(self, file: Path, tinker_path: str) -> None:
        file.parent.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "tinker_path": tinker_path,
            "base_model": self.base_model,
            "lora_rank": self.lora_rank,
        }
        file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def _read_pointer(path: str | Path, pointer_file: str) -> str:
        if str(path).startswith("tinker://"):
            return str(path)
        pointer = Path(path) / pointer_file
        if not pointer.is_file():
            raise FileNotFoundError(f"{path}: not a tinker:// address and no {pointer_file} inside")
        return json.loads(pointer.read_text(encoding="utf-8"))["tinker_path"]
