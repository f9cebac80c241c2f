"""DPO throughput: Crucible's run_dpo vs TRL's DPOTrainer vs a plain PyTorch DPO step, in one run.

Same tiny Llama (vocab 4096, hidden 256, 4 layers, 4 heads), same pairs (TRL's own tokenization of seeded
random-word prompts and completions of 24-160 tokens), same beta and AdamW settings, sigmoid loss.
Contenders: Crucible with cached reference log-probs (the reference pass is timed apart: it runs once per
checkpoint and data version) and with a frozen reference in memory; TRL with its reference model in memory
and with ``precompute_ref_log_probs``; a plain padded PyTorch loop with a reference model. Prints pairs/s,
real tokens/s, tokens per CPU-second, the ratios, and the load average.

    python bench/bench_dpo.py [--steps 6] [--warmup 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import torch

from crucible.train.config import TinyModelSpec, TrainingHyperparameters
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
from crucible.train.preference import PreferenceBackend, PreferencePair, fill_reference_logprobs, run_dpo

SPEC = TinyModelSpec(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=4, max_position_embeddings=1024)
BATCH, LR, BETA = 8, 1e-4, 0.1
# Letters only (the byte-level pre-tokenizer splits digits off), so that each word becomes one token.
WORDS = sorted({a + b + c for a in "bdfgklmnprstvz" for b in "aeiou" for c in ("", "n", "r", "s")})


class Clock:
    """Wall and CPU time at the end of each step, with the pairs and real tokens of that step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float, int]] = []

    def mark(self, tokens: int) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), tokens))

    def rate(self, warmup: int) -> tuple[float, float, float]:
        """(pairs/s, tokens/s, tokens per CPU-second) over the steps after ``warmup``."""
        (w0, c0, _), rest = self.marks[warmup - 1], self.marks[warmup:]
        tokens, wall = sum(t for _, _, t in rest), rest[-1][0] - w0
        return BATCH * len(rest) / wall, tokens / wall, tokens / (rest[-1][1] - c0)


def text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def make_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": text(rng, 12, 60)}],
             "chosen": [{"role": "assistant", "content": text(rng, 12, 80)}],
             "rejected": [{"role": "assistant", "content": text(rng, 12, 80)}]} for _ in range(count)]


def trl_trainer(model, reference, tokenizer, rows, steps: int, precompute: bool, callbacks=(), out: str = ""):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(output_dir=out, beta=BETA, loss_type=["sigmoid"], per_device_train_batch_size=BATCH,
                       max_steps=steps, learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0,
                       max_grad_norm=1.0, max_length=None, bf16=False, fp16=False, gradient_checkpointing=False,
                       precompute_ref_log_probs=precompute, use_cpu=True, report_to=[], save_strategy="no",
                       logging_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True)
    return DPOTrainer(model=model, ref_model=None if precompute else reference, args=config,
                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=list(callbacks))


def tokenized_pairs(tokenizer, rows) -> list[PreferencePair]:
    """TRL's token ids of ``rows``, so that every contender trains on exactly the same tokens."""
    with tempfile.TemporaryDirectory() as out:
        trainer = trl_trainer(build_tiny_causal_lm(SPEC, tokenizer), build_tiny_causal_lm(SPEC, tokenizer),
                              tokenizer, rows, 1, False, out=out)
        data = trainer.train_dataset
        return [PreferencePair(str(i), data[i]["prompt_ids"], data[i]["chosen_ids"], data[i]["rejected_ids"])
                for i in range(len(data))]


def pair_tokens(pair: PreferencePair) -> int:
    return 2 * len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def crucible(reference: str):
    def run(tokenizer, rows, pairs, steps: int, warmup: int) -> tuple[Clock, float]:
        clock = Clock()

        class StepClock:
            def log(self, step, metrics):
                clock.mark(int(metrics["num_tokens"]))

            def close(self): ...

        backend = PreferenceBackend(build_tiny_causal_lm(SPEC, tokenizer), tokenizer, device="cpu")
        hp = TrainingHyperparameters(learning_rate=LR, max_steps=warmup + steps, batch_size=BATCH, max_length=1024,
                                     schedule="constant", grad_clip_norm=1.0, device="cpu")
        frozen, reference_seconds = None, 0.0
        if reference == "cached":
            started = time.perf_counter()
            pairs = fill_reference_logprobs(backend, pairs, BATCH)
            reference_seconds = time.perf_counter() - started
        else:
            frozen = backend.frozen_copy()
        with tempfile.TemporaryDirectory() as out:
            run_dpo(backend, pairs, hp, beta=BETA, reference=frozen, output_dir=out, loggers=[StepClock()])
        return clock, reference_seconds

    return run


def padded_completion_logps(net, input_ids: torch.Tensor, mask: torch.Tensor,
                            completion: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the completion tokens of each padded row."""
    logits = net(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    token = torch.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token * completion[:, 1:]).sum(-1)


def plain_loop(tokenizer, rows, pairs, steps: int, warmup: int) -> tuple[Clock, float]:
    """The textbook step: pad [chosen; rejected], policy forward with grad, reference forward without, sigmoid."""
    import torch.nn.functional as F

    clock = Clock()
    model, reference = build_tiny_causal_lm(SPEC, tokenizer), build_tiny_causal_lm(SPEC, tokenizer).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    for step in range(warmup + steps):
        batch = pairs[step * BATCH: (step + 1) * BATCH]
        sequences = [p.prompt_ids + p.chosen_ids for p in batch] + [p.prompt_ids + p.rejected_ids for p in batch]
        starts = [len(p.prompt_ids) for p in batch] * 2
        width = max(map(len, sequences))
        input_ids = torch.zeros(len(sequences), width, dtype=torch.long)
        mask = torch.zeros(len(sequences), width, dtype=torch.long)
        completion = torch.zeros(len(sequences), width)
        for row, (ids, start) in enumerate(zip(sequences, starts, strict=True)):
            input_ids[row, : len(ids)], mask[row, : len(ids)] = torch.tensor(ids), 1
            completion[row, start: len(ids)] = 1
        policy = padded_completion_logps(model, input_ids, mask, completion)
        with torch.no_grad():
            ref = padded_completion_logps(reference, input_ids, mask, completion)
        n = len(batch)
        h = (policy[:n] - ref[:n]) - (policy[n:] - ref[n:])
        (-F.logsigmoid(BETA * h)).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.mark(int(mask.sum()))
    return clock, 0.0


def trl(precompute: bool):
    def run(tokenizer, rows, pairs, steps: int, warmup: int) -> tuple[Clock, float]:
        from transformers import TrainerCallback

        clock = Clock()
        per_step = [sum(pair_tokens(p) for p in pairs[i: i + BATCH]) for i in range(0, len(pairs), BATCH)]

        class StepClock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                # TRL shuffles; the mean real tokens of a batch stands in for the exact count.
                clock.mark(sum(per_step) // len(per_step))

        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            trainer = trl_trainer(build_tiny_causal_lm(SPEC, tokenizer), build_tiny_causal_lm(SPEC, tokenizer),
                                  tokenizer, rows, warmup + steps, precompute, [StepClock()], out)
            setup = time.perf_counter() - started
            trainer.train()
        return clock, setup if precompute else 0.0

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per contender")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per contender; the best one counts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rows = make_rows(BATCH * (args.warmup + args.steps), seed=1)
    tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 4, vocab_size=SPEC.vocab_size)
    if len(tokenizer.encode(" ".join(WORDS), add_special_tokens=False)) > 1.1 * len(WORDS):
        raise RuntimeError("bench words are not (nearly all) single tokens: the workload would be longer than described")
    pairs = tokenized_pairs(tokenizer, rows)
    lengths = [len(p.prompt_ids) for p in pairs], [len(p.chosen_ids) + len(p.rejected_ids) for p in pairs]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()}")
    print(f"{len(pairs)} pairs, {BATCH} per step, prompt tokens {min(lengths[0])}-{max(lengths[0])}, "
          f"chosen+rejected tokens {min(lengths[1])}-{max(lengths[1])}; {args.warmup} warmup + {args.steps} timed "
          "steps")
    contenders = [("crucible cached ref", crucible("cached")), ("crucible frozen ref", crucible("frozen")),
                  ("plain pytorch", plain_loop), ("trl ref model", trl(False)), ("trl precomputed ref", trl(True))]
    # Other processes share these cores: run the contenders in rounds and keep each one's best round.
    best: dict[str, tuple[float, float, float, float]] = {}
    for _ in range(args.repeats):
        for name, run in contenders:
            clock, once = run(tokenizer, rows, pairs, args.steps, args.warmup)
            rate = clock.rate(args.warmup)
            if name not in best or rate[0] > best[name][0]:
                best[name] = (*rate, once)
    for name, (pairs_s, tokens_s, cpu_s, once) in best.items():
        extra = f"  (+{once:.1f}s once: reference pass / TRL setup with precompute)" if once else ""
        print(f"{name:>20}: {pairs_s:7.2f} pairs/s  {tokens_s:8.0f} tok/s  {cpu_s:8.0f} tok/CPU-s{extra}")
    for ours in ("crucible cached ref", "crucible frozen ref"):
        print(f"   {ours}: " + ", ".join(f"/{k} = {best[ours][0] / v[0]:.2f}x" for k, v in best.items()
                                         if not k.startswith("crucible")))
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
