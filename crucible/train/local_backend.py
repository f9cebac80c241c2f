"""The training port in process: PyTorch on CPU or one CUDA device, with packing and optional LoRA."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from crucible.train.backend import AdamParams, Datum, ForwardBackwardResult, SamplingParams
from crucible.train.config import LoraSettings, TrainingHyperparameters, resolve_device
from crucible.train.losses import token_logprobs, weighted_token_cross_entropy
from crucible.train.packing import PackedBatch, pack_datums, pad_datums, use_packed_attention
from crucible.train.profiling import PhaseTimer

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class GradientSync(Protocol):
    """Combines this process's gradient sums and trainable-token count with the other processes' of a
    distributed run, in place, before ``optim_step`` divides; returns the run-wide token count."""

    def __call__(self, params: list[torch.nn.Parameter], tokens: float) -> float: ...


class LocalBackend:
    """Holds a causal LM and its optimizer in this process.

    ``forward_backward`` adds the gradient of the weighted token-loss *sum*; ``optim_step`` divides
    it by the trainable tokens accumulated since the last step, so the update follows the mean loss
    over every trainable token of the step however it was split into micro-batches.

    ``gradient_sync`` (set by ``crucible.train.distributed``) sums those gradients and tokens over the
    processes of a run first, so that N processes take the single-process step. With a timer attached
    (``attach_timer``) each call charges its data layout, forward, backward, communication and
    optimizer time to the run's phases.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: Literal["auto", "cpu", "cuda"] | str = "auto",
        lora: LoraSettings | None = None,
        pack: bool = True,
        seed: int = 0,
    ) -> None:
        import torch

        self.device = torch.device(resolve_device(device, who="LocalBackend"))
        self.tokenizer = tokenizer
        self.pack = pack
        self.lora = lora
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = get_peft_model(
                    model,
                    LoraConfig(
                        r=lora.rank,
                        lora_alpha=lora.alpha,
                        lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules),
                        task_type="CAUSAL_LM",
                    ),
                )
        self.model = model.to(self.device)
        use_packed_attention(self._base_model())
        self.model.train()
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending_tokens = 0.0
        self.gradient_sync: GradientSync | None = None
        self.timer = PhaseTimer()

    @classmethod
    def from_hyperparameters(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        hyperparameters: TrainingHyperparameters,
    ) -> LocalBackend:
        return cls(
            model,
            tokenizer,
            device=hyperparameters.device,
            lora=hyperparameters.lora,
            pack=hyperparameters.pack,
            seed=hyperparameters.seed,
        )

    def attach_timer(self, timer: PhaseTimer) -> None:
        """Charge this backend's phases to ``timer`` (on a GPU, synchronized at each phase boundary)."""
        import torch

        if self.device.type == "cuda" and timer.synchronize is None:
            timer.synchronize = partial(torch.cuda.synchronize, self.device)
        self.timer = timer

    # -- the port -------------------------------------------------------------------------------

    def forward_backward(self, batch: Sequence[Datum], loss: str = "cross_entropy") -> ForwardBackwardResult:
        if loss != "cross_entropy":
            raise ValueError(
                f"LocalBackend.forward_backward: unknown loss {loss!r}; expected 'cross_entropy'"
            )
        self.model.train()
        with self.timer.phase("data"):
            inputs = self._layout(batch)
        with self.timer.phase("forward"):
            keep = inputs.weights > 0
            with self._autocast():
                logits = self._logits(inputs, keep)
            weights = inputs.weights[keep]
            loss_sum = weighted_token_cross_entropy(logits, inputs.target_ids[keep], weights, normalizer=1.0)
        with self.timer.phase("backward"):
            loss_sum.backward()
        trainable = float(weights.sum())
        self._pending_tokens += trainable
        mean = loss_sum.item() / trainable if trainable > 0 else 0.0
        return ForwardBackwardResult(loss=mean, num_trainable_tokens=trainable, num_tokens=inputs.num_tokens)

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        optimizer = self._get_optimizer()
        tokens, self._pending_tokens = self._pending_tokens, 0.0
        if self.gradient_sync is not None:
            with self.timer.phase("communication"):
                tokens = self.gradient_sync([p for group in optimizer.param_groups for p in group["params"]], tokens)
        with self.timer.phase("optimizer"):
            return self._apply_update(optimizer, adam, tokens)

    def _apply_update(self, optimizer: torch.optim.Optimizer, adam: AdamParams, tokens: float) -> dict[str, float]:
        import torch

        for group in optimizer.param_groups:
            group["lr"] = adam.learning_rate
            group["betas"] = (adam.beta1, adam.beta2)
            group["eps"] = adam.eps
            group["weight_decay"] = adam.weight_decay if group["decay"] else 0.0
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if tokens <= 0 or not params:
            optimizer.zero_grad(set_to_none=True)
            return {"learning_rate": adam.learning_rate, "grad_norm": 0.0, "num_trainable_tokens": 0.0}
        torch._foreach_div_([p.grad for p in params], tokens)
        if adam.grad_clip_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, adam.grad_clip_norm))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"learning_rate": adam.learning_rate, "grad_norm": grad_norm, "num_trainable_tokens": tokens}

    def sample(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[list[int]]:
        """Greedy (temperature 0) or sampled continuations; each ends at and includes a stop token."""
        import torch

        self.model.eval()
        stops = set(params.stop_token_ids)
        results = []
        # Sampling draws from its own generator state so that it never shifts the training RNG.
        with (
            torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []),
            torch.no_grad(),
        ):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for prompt in prompts:
                input_ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
                do_sample = params.temperature > 0
                sampling = {"temperature": params.temperature, "top_p": params.top_p} if do_sample else {}
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=params.max_tokens,
                    do_sample=do_sample,
                    eos_token_id=list(stops) or None,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )
                generated = output[0, len(prompt) :].tolist()
                for i, token in enumerate(generated):
                    if token in stops:
                        generated = generated[: i + 1]
                        break
                results.append(generated)
        self.model.train()
        return results

    def compute_logprobs(self, batch: Sequence[Datum]) -> list[list[float]]:
        import torch

        self.model.eval()
        with torch.no_grad(), self._autocast():
            inputs = self._layout(batch)
            keep = torch.ones_like(inputs.weights, dtype=torch.bool)
            for row, n in enumerate(inputs.seq_lens if inputs.cu_seq_lens is None else []):
                keep[row, n:] = False
            logprobs = token_logprobs(self._logits(inputs, keep), inputs.target_ids[keep]).cpu().tolist()
        self.model.train()
        result, start = [], 0
        for n in inputs.seq_lens:
            result.append(logprobs[start : start + n])
            start += n
        return result

    def save_state(self, path: str | Path) -> None:
        """Trainable weights (safetensors) and optimizer state; the frozen base is rebuilt by the caller."""
        import torch
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {name: p.detach().cpu().contiguous() for name, p in self._trainable()},
            str(path / "trainable.safetensors"),
        )
        optimizer_state = self._optimizer.state_dict() if self._optimizer is not None else None
        torch.save(
            {"optimizer": optimizer_state, "pending_tokens": self._pending_tokens}, path / "optimizer.pt"
        )

    def load_state(self, path: str | Path) -> None:
        import torch
        from safetensors.torch import load_file

        path = Path(path)
        saved = load_file(str(path / "trainable.safetensors"))
        trainable = dict(self._trainable())
        if saved.keys() != trainable.keys():
            raise ValueError(
                f"{path}: saved trainable tensors do not match the model "
                f"(missing {sorted(trainable.keys() - saved.keys())[:3]}, extra {sorted(saved.keys() - trainable.keys())[:3]})"
            )
        with torch.no_grad():
            for name, param in trainable.items():
                param.copy_(saved[name])
        state = torch.load(path / "optimizer.pt", map_location=self.device, weights_only=False)
        self._optimizer = None
        if state["optimizer"] is not None:
            self._get_optimizer().load_state_dict(state["optimizer"])
        self._pending_tokens = state["pending_tokens"]

    def save_weights(self, path: str | Path) -> str:
        """A Hugging Face folder (safetensors + tokenizer); LoRA adapters are merged into a copy."""
        path = Path(path)
        model = copy.deepcopy(self.model).to("cpu")
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.set_attn_implementation("sdpa")
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return str(path)

    # -- internals ------------------------------------------------------------------------------

    def _layout(self, batch: Sequence[Datum]) -> PackedBatch:
        pad_id = self.tokenizer.pad_token_id or 0
        return (pack_datums(batch) if self.pack else pad_datums(batch, pad_id)).to(self.device)

    def _logits(self, inputs: PackedBatch, keep: torch.Tensor) -> torch.Tensor:
        """Logits (kept tokens, vocab) of the positions in ``keep`` only: the LM head skips the rest."""
        extra = {}
        if inputs.cu_seq_lens is not None:
            longest = max(inputs.seq_lens)
            extra = dict(
                cu_seq_lens_q=inputs.cu_seq_lens,
                cu_seq_lens_k=inputs.cu_seq_lens,
                max_length_q=longest,
                max_length_k=longest,
            )
        output = self.model(
            input_ids=inputs.input_ids,
            position_ids=inputs.position_ids,
            use_cache=False,
            logits_to_keep=keep,
            **extra,
        )
        return output.logits.reshape(-1, output.logits.shape[-1])

    def _autocast(self):
        import torch

        # bf16 is emulated (much slower) on CPUs, so mixed precision is for CUDA only.
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _base_model(self) -> PreTrainedModel:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]

    def _get_optimizer(self) -> torch.optim.Optimizer:
        import torch

        if self._optimizer is None:
            params = [p for _, p in self._trainable()]
            # nanoGPT's habit: decay matrices, not norms and biases.
            groups = [
                {"params": [p for p in params if p.dim() >= 2], "decay": True},
                {"params": [p for p in params if p.dim() < 2], "decay": False},
            ]
            self._optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=0.0, weight_decay=0.0)
        return self._optimizer
