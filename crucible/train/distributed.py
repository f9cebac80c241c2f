"""Training over N processes: a ``torchrun`` launch of the SFT loop, with DDP-equivalent or FSDP-sharded steps.

The parent process prepares everything a worker needs in ``<run>/launch`` (the datums, the recipe's
hyperparameters, the tokenizer and, for a model built from a config, its initial weights), then runs
``python -m torch.distributed.run ... -m crucible.train.distributed <launch dir>``. Every rank runs
the ordinary ``run_sft`` loop on a ``DistributedBackend``: each takes its shard of every global
micro-batch, and before the optimizer divides by the step's trainable tokens the gradient sums and
token counts of all ranks are summed, so N processes take exactly the single-process step. Rank 0
writes checkpoints, the final weights and ``outcome.json``, which the parent reads back.

``strategy="fsdp"`` shards parameters, gradients and optimizer state across the ranks instead
(PyTorch's ``fully_shard``) for a model too big for one GPU; see docs/scaling_out_training.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crucible.train.backend import AdamParams, Datum, ForwardBackwardResult, SamplingParams

if TYPE_CHECKING:
    import torch

    from crucible.train.local_backend import LocalBackend
    from crucible.train.sft import SFTResult

Strategy = Literal["ddp", "fsdp"]
_BUCKET_ELEMENTS = 1 << 24  # gradients are summed in flat buckets of up to 64 MiB (fp32): few, large collectives


class DistributedLaunchError(RuntimeError):
    """A torchrun launch failed; the message holds the end of the workers' log and where the whole log is."""


def shard_of(batch: Sequence[Datum], rank: int, world_size: int) -> list[Datum]:
    """This rank's examples of a global micro-batch: every ``world_size``-th one, starting at ``rank``."""
    return list(batch[rank::world_size])


def sum_gradients_across_processes(params: list[torch.nn.Parameter], tokens: float) -> float:
    """Sum every rank's gradient sums (in place) and trainable-token counts; returns the summed count.

    A parameter without a gradient on every rank keeps none, as in a single process (AdamW skips it);
    one with a gradient on some rank gets the sum, the others contributing zeros.
    """
    import torch
    import torch.distributed as dist

    device = params[0].device if params else torch.device("cpu")
    had_grad = torch.tensor([p.grad is not None for p in params] + [0], dtype=torch.float32, device=device)
    had_grad[-1] = tokens
    dist.all_reduce(had_grad)
    tokens = float(had_grad[-1])
    grads = []
    for param, anywhere in zip(params, had_grad[:-1].tolist(), strict=True):
        if not anywhere:
            continue
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
    return tokens


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        if not buckets or size + grad.numel() > _BUCKET_ELEMENTS or grad.dtype != buckets[-1][0].dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(grad)
        size += grad.numel()
    return buckets


def fsdp_token_count(params: list[torch.nn.Parameter], tokens: float) -> float:
    """FSDP's half of the sum: its backward already reduce-scattered the gradients as a mean over the
    ranks (sum / N), so the step divides by the summed tokens / N, which is dividing the sum by the tokens."""
    import torch
    import torch.distributed as dist

    device = params[0].device if params else torch.device("cpu")
    total = torch.tensor([tokens], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


class DistributedBackend:
    """The training port over the processes of a ``torchrun`` launch; every rank calls every method.

    Wraps this rank's ``LocalBackend``: ``forward_backward`` trains on the rank's shard and returns the
    global batch's loss and token counts; ``optim_step`` sums gradients and tokens first. Scoring and
    sampling run on every rank over the whole batch (each gets the same answer). Saving is rank 0's
    (``run_sft`` calls ``gather_for_save`` on all ranks, then rank 0 writes, then ``barrier``).
    """

    def __init__(self, local: LocalBackend, strategy: Strategy = "ddp") -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("DistributedBackend: torch.distributed is not initialized; start the workers with "
                               "torchrun (crucible.train.distributed.launch_sft) or call init_process_group first")
        self.local = local
        self.strategy = strategy
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main_process = self.rank == 0
        self._full_state: dict[str, Any] | None = None
        if strategy == "fsdp":
            shard_model(local)
            local.gradient_sync = fsdp_token_count
        else:
            local.gradient_sync = sum_gradients_across_processes

    def attach_timer(self, timer) -> None:
        self.local.attach_timer(timer)

    def forward_backward(self, batch: Sequence[Datum], loss: str = "cross_entropy") -> ForwardBackwardResult:
        import torch
        import torch.distributed as dist

        shard = shard_of(batch, self.rank, self.world_size)
        result = ForwardBackwardResult(loss=0.0, num_trainable_tokens=0.0, num_tokens=0)
        if shard:
            result = self.local.forward_backward(shard, loss)
        elif self.strategy == "fsdp":
            # FSDP's forward and backward are collectives: a rank without examples (a global micro-batch
            # smaller than the world) joins them on one token of weight 0, which adds nothing.
            self.local.forward_backward([_no_loss_datum(batch[0])], loss)
        totals = torch.tensor([result.loss * result.num_trainable_tokens, result.num_trainable_tokens,
                               float(result.num_tokens)], dtype=torch.float64, device=self.local.device)
        with self.local.timer.phase("communication"):
            dist.all_reduce(totals)
        loss_sum, trainable, tokens = totals.tolist()
        return ForwardBackwardResult(loss=loss_sum / trainable if trainable > 0 else 0.0,
                                     num_trainable_tokens=trainable, num_tokens=int(tokens))

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        return self.local.optim_step(adam)

    def compute_logprobs(self, batch: Sequence[Datum]) -> list[list[float]]:
        return self.local.compute_logprobs(batch)

    def sample(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[list[int]]:
        if self.strategy == "fsdp":
            raise NotImplementedError("DistributedBackend(strategy='fsdp').sample: generation over sharded "
                                      "weights is not supported; sample from the saved final weights instead")
        return self.local.sample(prompts, params)

    def gather_for_save(self) -> None:
        """FSDP: gather the full weights onto rank 0's CPU (a collective); DDP's ranks hold them already."""
        if self.strategy != "fsdp":
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        self._full_state = get_model_state_dict(
            self.local.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def save_state(self, path: str | Path) -> None:
        if self.strategy == "fsdp":
            raise NotImplementedError("resumable checkpoints are not written under strategy='fsdp': set "
                                      "hyperparameters.checkpoint_every to 0 (final weights are saved)")
        self.local.save_state(path)

    def load_state(self, path: str | Path) -> None:
        if self.strategy == "fsdp":
            raise NotImplementedError("resuming is not supported under strategy='fsdp'; start a new run")
        self.local.load_state(path)

    def save_weights(self, path: str | Path) -> str:
        if self.strategy != "fsdp":
            return self.local.save_weights(path)
        from transformers import AutoModelForCausalLM

        # A fresh, unsharded model of the same config on the CPU receives the gathered weights.
        model = AutoModelForCausalLM.from_config(self.local.model.config)
        model.load_state_dict(self._full_state)
        model.save_pretrained(path)
        self.local.tokenizer.save_pretrained(path)
        self._full_state = None
        return str(path)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()


def _no_loss_datum(like: Datum) -> Datum:
    return Datum(like.input_ids[:1], like.target_ids[:1], [0.0])


def shard_model(local: LocalBackend) -> None:
    """Shard ``local.model`` with FSDP (``fully_shard``): each decoder layer, then the whole model.

    Gradients are reduce-scattered as FSDP's mean over ranks (gloo has no pre-multiplied sum to ask for a
    plain sum); ``fsdp_token_count`` makes up for it.
    """
    from torch.distributed.fsdp import fully_shard

    if local.lora is not None:
        raise ValueError("strategy='fsdp' with LoRA is not supported: use strategy='ddp' (LoRA's adapters are "
                         "small; its frozen base fits wherever one process's copy does) or drop hyperparameters.lora")
    layers = [m for m in local.model.modules() if type(m).__name__.endswith("DecoderLayer")]
    for layer in layers:
        fully_shard(layer)
    fully_shard(local.model)


# -- the launch ------------------------------------------------------------------------------------


def write_datums(path: Path, datums: Sequence[Datum]) -> None:
    with path.open("w") as out:
        for d in datums:
            out.write(json.dumps({"input_ids": d.input_ids, "target_ids": d.target_ids, "weights": d.weights}) + "\n")


def read_datums(path: Path) -> list[Datum]:
    with path.open() as lines:
        return [Datum(**json.loads(line)) for line in lines if line.strip()]


def launch_sft(
    *,
    launch_dir: str | Path,
    hyperparameters,
    model_dir: str | Path,
    tokenizer_dir: str | Path,
    train_data: Sequence[Datum],
    eval_data: Sequence[Datum] | None,
    output_dir: str | Path,
    nproc_per_node: int,
    strategy: Strategy = "ddp",
    resume: bool = False,
    profile_trace: str | Path | None = None,
    num_threads: int = 0,
    timeout_s: float | None = None,
) -> SFTResult:
    """Run ``run_sft`` over ``nproc_per_node`` processes with torchrun and return rank 0's result.

    ``model_dir`` is the Hugging Face model (folder or id) every rank starts from, ``tokenizer_dir``
    the tokenizer folder the parent rendered the data with. Gloo on CPU,
    NCCL on CUDA (``hyperparameters.device``), one GPU per rank. Workers log to ``launch_dir/torchrun.log``;
    a failure raises ``DistributedLaunchError`` with its end.
    """
    from crucible.train.sft import SFTResult

    hp = hyperparameters
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node={nproc_per_node}: need at least 1 process")
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"strategy={strategy!r}: expected 'ddp' or 'fsdp'")
    if strategy == "fsdp" and (hp.checkpoint_every or resume):
        raise ValueError("strategy='fsdp' writes no resumable checkpoints: set hyperparameters.checkpoint_every "
                         "to 0 and start a new run (resume is for ddp)")
    if hp.device == "cuda":
        import torch

        if torch.cuda.device_count() < nproc_per_node:
            raise ValueError(f"nproc_per_node={nproc_per_node} on device cuda, but this machine has "
                             f"{torch.cuda.device_count()} GPU(s): one process per GPU")
    launch_dir = Path(launch_dir)
    launch_dir.mkdir(parents=True, exist_ok=True)
    outcome_path = launch_dir / "outcome.json"
    outcome_path.unlink(missing_ok=True)
    write_datums(launch_dir / "train.jsonl", train_data)
    write_datums(launch_dir / "eval.jsonl", eval_data or [])
    (launch_dir / "launch.json").write_text(json.dumps({
        "hyperparameters": hp.model_dump(mode="json"), "model_dir": str(model_dir),
        "tokenizer_dir": str(tokenizer_dir), "output_dir": str(output_dir),
        "strategy": strategy, "resume": resume, "profile_trace": None if profile_trace is None else str(profile_trace),
    }, indent=2))

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc_per_node}",
               "-m", "crucible.train.distributed", str(launch_dir)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                      os.environ.get("PYTHONPATH")]))}
    if num_threads:
        env["OMP_NUM_THREADS"] = str(num_threads)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default; set here so that it does not warn
    log_path = launch_dir / "torchrun.log"
    with log_path.open("w") as log:
        try:
            finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s,
                                      check=False)
        except subprocess.TimeoutExpired:
            raise DistributedLaunchError(f"torchrun ({nproc_per_node} processes) ran past {timeout_s} s; "
                                         f"its log: {log_path}") from None
    if finished.returncode != 0 or not outcome_path.exists():
        lines = log_path.read_text(errors="replace").splitlines()
        # torchrun ends with its own summary; the workers' error is the first line that names one.
        errors = [line for line in lines if "Error:" in line and "ChildFailedError" not in line][:3]
        tail = "\n".join([*errors, "...", *lines[-12:]])
        raise DistributedLaunchError(f"torchrun ({nproc_per_node} processes, {strategy}) exited with "
                                     f"{finished.returncode} without an outcome; whole log: {log_path}\n{tail}")
    return SFTResult(**json.loads(outcome_path.read_text()))


def prepare_model(recipe, tokenizer_texts, launch_dir: Path) -> tuple[str, str, Any]:
    """(model, tokenizer folder, tokenizer) for the workers of ``recipe``'s launch.

    A model built from a config is built here once (seeded) and saved, so that every rank starts from
    the same weights a single-process run starts from; a Hugging Face model is loaded by each rank
    from its id or folder, and only its tokenizer is loaded here (to render the data).
    """
    base = recipe.base_model
    if recipe.backend.kind != "local":
        raise ValueError(f"recipe {recipe.name}: the torchrun launcher trains local models; its backend is "
                         f"{recipe.backend.kind!r} (use TrainerResource(launcher='local') for it)")
    if base.gguf_file:
        raise ValueError(f"recipe {recipe.name}: a GGUF base model cannot be launched with torchrun; convert it "
                         "first (crucible.train.models.convert_gguf_to_hf) and name the converted folder")
    tokenizer_dir = launch_dir / "tokenizer"
    if base.tiny is not None:
        from crucible.train.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(base, tokenizer_texts=tokenizer_texts,
                                                    seed=recipe.hyperparameters.seed)
        model_dir = str(launch_dir / "initial_model")
        model.save_pretrained(model_dir)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base.name_or_path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model_dir = base.name_or_path
    tokenizer.save_pretrained(tokenizer_dir)
    return model_dir, str(tokenizer_dir), tokenizer


def worker_main(launch_dir: str | Path) -> None:
    """One rank of a ``launch_sft`` run (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous)."""
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crucible.train.config import TrainingHyperparameters
    from crucible.train.local_backend import LocalBackend
    from crucible.train.sft import run_sft

    launch_dir = Path(launch_dir)
    spec = json.loads((launch_dir / "launch.json").read_text())
    hp = TrainingHyperparameters.model_validate(spec["hyperparameters"])
    local_rank = int(os.environ["LOCAL_RANK"])
    on_gpu = hp.device == "cuda" or (hp.device == "auto" and torch.cuda.is_available())
    device = f"cuda:{local_rank}" if on_gpu else "cpu"
    if on_gpu:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if on_gpu else "gloo", device_id=torch.device(device) if on_gpu else None)
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
        local = LocalBackend(model, tokenizer, device=device, lora=hp.lora, pack=hp.pack, seed=hp.seed)
        backend = DistributedBackend(local, spec["strategy"])
        trace = spec["profile_trace"]
        result = run_sft(backend, read_datums(launch_dir / "train.jsonl"), hp,
                         eval_data=read_datums(launch_dir / "eval.jsonl") or None, output_dir=spec["output_dir"],
                         resume_from="latest" if spec["resume"] else None,
                         # Each rank's trace is its own file; rank 0's is the run's artifact.
                         profile_trace=None if trace is None else _rank_path(Path(trace), backend.rank))
        if backend.is_main_process:
            tmp = launch_dir / "outcome.json.tmp"
            tmp.write_text(json.dumps(asdict(result)))
            tmp.rename(launch_dir / "outcome.json")
    finally:
        dist.destroy_process_group()


def _rank_path(path: Path, rank: int) -> Path:
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: torchrun --nproc-per-node=N -m crucible.train.distributed <launch dir>")
    worker_main(sys.argv[1])
