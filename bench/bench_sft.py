"""SFT throughput: Crucible's run_sft/LocalBackend vs a plain PyTorch loop vs TRL's SFTTrainer, in one run.

Same tiny Llama (vocab 4096, hidden 256, 4 layers, 4 heads), same AdamW settings, two workloads
(fixed 8 x 256 tokens; variable 32-256 tokens, seeded). Prints real (non-padding) tokens/s, ratios,
tokens per CPU-second, model FLOPs utilisation against a GEMM rate measured here, and the load average.

    python bench/bench_sft.py [--steps 6] [--warmup 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable

import torch

from crucible.train.backend import Datum
from crucible.train.config import TinyModelSpec, TrainingHyperparameters
from crucible.train.local_backend import LocalBackend
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
from crucible.train.sft import run_sft

SPEC = TinyModelSpec(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=4, max_position_embeddings=512)
BATCH, LR = 8, 1e-3


def make_workload(kind: str, count: int, seed: int = 0) -> list[Datum]:
    rng = random.Random(seed)
    data = []
    for _ in range(count):
        n = 256 if kind == "fixed" else rng.randint(32, 256)
        tokens = [rng.randrange(5, SPEC.vocab_size) for _ in range(n + 1)]  # ids 0-4 are special (pad = 0)
        data.append(Datum(tokens[:-1], tokens[1:], [1.0] * n))
    return data


class Clock:
    """Wall and CPU time at the end of each step, with the real tokens of that step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float, int]] = []

    def mark(self, tokens: int) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), tokens))

    def rate(self, warmup: int) -> tuple[float, float, int]:
        """(tokens/s, tokens per CPU-second, tokens) over the steps after ``warmup``."""
        (w0, c0, _), rest = self.marks[warmup - 1], self.marks[warmup:]
        tokens = sum(t for _, _, t in rest)
        return tokens / (rest[-1][0] - w0), tokens / (rest[-1][1] - c0), tokens


def ours(model, tokenizer, data, steps: int, warmup: int) -> Clock:
    clock = Clock()

    class StepClock:
        def log(self, step, metrics):
            clock.mark(int(metrics["num_tokens"]))

        def close(self): ...

    hp = TrainingHyperparameters(
        learning_rate=LR,
        max_steps=warmup + steps,
        batch_size=BATCH,
        max_length=256,
        schedule="constant",
        grad_clip_norm=1.0,
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as out:
        run_sft(LocalBackend(model, tokenizer, device="cpu"), data, hp, output_dir=out, loggers=[StepClock()])
    return clock


def plain_loop(model, tokenizer, data, steps: int, warmup: int) -> Clock:
    """The practical ceiling: pad each batch, forward with labels, backward, clip, AdamW step."""
    clock = Clock()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    for step in range(warmup + steps):
        batch = data[step * BATCH : (step + 1) * BATCH]
        width = max(len(d.input_ids) for d in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, d in enumerate(batch):
            n = len(d.input_ids)
            input_ids[row, :n] = torch.tensor(d.input_ids)
            labels[row, :n] = torch.tensor(d.input_ids)
            mask[row, :n] = 1
        padded = width * len(batch) != sum(len(d.input_ids) for d in batch)
        loss = model(input_ids=input_ids, attention_mask=mask if padded else None, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.mark(int(mask.sum()))
    return clock


def trl_sft(mode: str) -> Callable:
    def run(model, tokenizer, data, steps: int, warmup: int) -> Clock:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer

        clock = Clock()
        seen = [0]

        class StepClock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.mark(int(state.num_input_tokens_seen) - seen[0])
                seen[0] = int(state.num_input_tokens_seen)

        dataset = Dataset.from_dict({"input_ids": [d.input_ids for d in data]})
        with tempfile.TemporaryDirectory() as out:
            config = SFTConfig(
                output_dir=out,
                per_device_train_batch_size=BATCH,
                max_steps=warmup + steps,
                learning_rate=LR,
                lr_scheduler_type="constant",
                weight_decay=0.0,
                max_grad_norm=1.0,
                max_length=None if mode == "padding_free" else 256,  # inputs are already <= 256
                bf16=False,
                fp16=False,
                gradient_checkpointing=False,
                use_cpu=True,
                report_to=[],
                save_strategy="no",
                logging_strategy="no",
                dataloader_num_workers=0,
                seed=0,
                include_num_input_tokens_seen="non_padding",
                padding_free=(mode == "padding_free"),
                packing=(mode == "packing_bfd"),
                eos_token=tokenizer.eos_token,
            )
            trainer = SFTTrainer(
                model=model,
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
                callbacks=[StepClock()],
            )
            trainer.train()
        return clock

    return run


def trl_keeps_examples_apart(model, tokenizer, data) -> float:
    """|loss(padding-free row) - loss(padded batch)| for TRL's collator, as its trainer calls the model."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [{"input_ids": d.input_ids} for d in data[:4]]
    model.train()
    with torch.no_grad():
        flat = model(**DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)).loss
        padded = model(**DataCollatorForLanguageModeling(pad_token_id=0)(examples)).loss
    return abs(float(flat) - float(padded))


def gemm_flops() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(8):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 1024**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per contender")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per contender; the best one counts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    tokenizer = train_bpe_tokenizer(["crucible benchmark text " * 50], vocab_size=SPEC.vocab_size)
    model_params = build_tiny_causal_lm(SPEC, tokenizer)
    # 6 N flops per token, N without the input embedding (a lookup, not a matmul).
    n_params = (
        sum(p.numel() for p in model_params.parameters()) - model_params.model.embed_tokens.weight.numel()
    )
    peak = gemm_flops()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
        f"load average {os.getloadavg()}"
    )
    print(
        f"model: {n_params / 1e6:.2f}M non-embedding parameters; fp32 GEMM 1024^3: {peak / 1e9:.1f} GFLOP/s"
    )

    contenders = {
        "fixed": [("crucible", ours), ("plain", plain_loop), ("trl padding", trl_sft("padding"))],
        "variable": [
            ("crucible", ours),
            ("plain (padded)", plain_loop),
            ("trl padding", trl_sft("padding")),
            ("trl padding_free", trl_sft("padding_free")),
            ("trl packing bfd", trl_sft("packing_bfd")),
        ],
    }
    for kind, runs in contenders.items():
        data = make_workload(kind, BATCH * (args.warmup + args.steps), seed=1)
        print(
            f"\n== {kind} length: {BATCH} examples/step, {args.warmup} warmup + {args.steps} timed steps "
            f"(load average {os.getloadavg()[0]:.2f})"
        )
        # Other processes share these cores: run the contenders in rounds and keep each one's best round.
        best: dict[str, tuple[float, float, int]] = {}
        for _ in range(args.repeats):
            for name, run in runs:
                peak = max(peak, gemm_flops())
                clock = run(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, data, args.steps, args.warmup)
                rate = clock.rate(args.warmup)
                if name not in best or rate[0] > best[name][0]:
                    best[name] = rate
        rates = {}
        for name, (per_s, per_cpu_s, tokens) in best.items():
            rates[name] = per_s
            mfu = 6 * n_params * per_s / peak
            print(
                f"{name:>18}: {per_s:8.0f} tok/s  {per_cpu_s:8.0f} tok/CPU-s  MFU {mfu:5.1%}  ({tokens} tokens)"
            )
        print(f"   (best of {args.repeats} rounds; best fp32 GEMM so far {peak / 1e9:.1f} GFLOP/s)")
        base = rates["crucible"]
        print(
            "   ratios: "
            + ", ".join(f"crucible/{k} = {base / v:.2f}x" for k, v in rates.items() if k != "crucible")
        )
        if kind == "variable":
            gap = trl_keeps_examples_apart(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, data)
            print(
                f"   TRL padding_free/packing on CPU (sdpa) keeps examples apart: {gap < 1e-4} "
                f"(|loss(flat) - loss(padded)| = {gap:.2e})"
            )
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
