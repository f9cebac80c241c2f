"""GRPO throughput: Crucible's run_grpo vs TRL's GRPOTrainer on the same tiny model, prompts and reward, in one run.

Both sample ``--group`` completions of ``--prompts`` single-digit-sum prompts per step at temperature 1
(stop on ``<|im_end|>`` or ``</s>``, at most ``--max-new-tokens``), score them with the same exact-match
reward, and take one optimizer step on the same loss (token-normalised clipped ratio, eps 0.2/0.28,
group-scaled advantages, no KL, one pass). TRL runs with use_vllm off, bf16 off and gradient
checkpointing off on the CPU. Prints completions/s and completion tokens/s over the timed steps (the
best of ``--repeats`` rounds, since other processes share these cores), their ratio, and the load average.

    python bench/bench_grpo.py [--steps 6] [--warmup 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time

import torch

from crucible.train.config import TinyModelSpec, TrainingHyperparameters
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
from crucible.train.recipes import RLSettings
from crucible.train.renderers import get_renderer
from crucible.train.rewards import ExactMatchReward, WeightedRewards
from crucible.train.rl import prompt_of, run_grpo
from crucible.train.rl_pipeline import example_record
from crucible.train.tiny_tasks import single_digit_sums

SPEC = TinyModelSpec(vocab_size=320, hidden_size=128, num_layers=2, num_heads=4, max_position_embeddings=128)
LR = 1e-4


def exact_match_rewards(completions: list[str], targets: list[str]) -> list[float]:
    """The one reward both trainers use (Crucible's exact match)."""
    from crucible.data.metrics import exact_match

    return [exact_match(text, target) for text, target in zip(completions, targets, strict=True)]


class StepTimes:
    """Wall time and completion tokens at the end of each step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def mark(self, completion_tokens: float) -> None:
        self.marks.append((time.perf_counter(), completion_tokens))

    def rates(self, warmup: int, completions_per_step: int) -> tuple[float, float]:
        (start, _), rest = self.marks[warmup - 1], self.marks[warmup:]
        seconds = rest[-1][0] - start
        return len(rest) * completions_per_step / seconds, sum(tokens for _, tokens in rest) / seconds


def crucible_grpo(model, tokenizer, examples, args) -> StepTimes:
    renderer = get_renderer("chatml")
    prompts = [prompt_of(example_record(row), renderer, tokenizer, 64) for row in examples.itertuples()]
    settings = RLSettings(group_size=args.group, epsilon_low=0.2, epsilon_high=0.28, max_new_tokens=args.max_new_tokens,
                          rewards=[ExactMatchReward()])
    hp = TrainingHyperparameters(learning_rate=LR, max_steps=args.warmup + args.steps, batch_size=args.prompts,
                                 schedule="constant", weight_decay=0.0, grad_clip_norm=1.0, device="cpu", seed=0)
    times = StepTimes()
    start = time.perf_counter()

    class Clock:
        def log(self, step, metrics):
            times.mark(metrics["completion_length"] * args.prompts * args.group)

        def close(self): ...

    times.marks.append((start, 0.0))  # step 0: the start, so warmup 0 would time every step
    run_grpo(model, tokenizer, renderer, prompts, WeightedRewards([ExactMatchReward()]), settings, hp,
             loggers=[Clock()])
    times.marks.pop(0)
    return times


def trl_grpo(model, tokenizer, examples, args) -> StepTimes:
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    times = StepTimes()

    def reward(prompts, completions, target, **kwargs):
        return exact_match_rewards([c[0]["content"] for c in completions], target)

    class Clock(TrainerCallback):
        def on_step_end(self, state_args, state, control, **kwargs):
            lengths = [entry.get("completions/mean_length") for entry in state.log_history if
                       "completions/mean_length" in entry]
            times.mark((lengths[-1] if lengths else 0.0) * args.prompts * args.group)

    records = [{"prompt": json.loads(m)[:1], "target": t} for m, t in zip(examples["messages"], examples["target"],
                                                                         strict=True)]
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=args.prompts * args.group, num_generations=args.group,
            gradient_accumulation_steps=1, max_steps=args.warmup + args.steps, learning_rate=LR,
            lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, epsilon=0.2, epsilon_high=0.28,
            beta=0.0, num_iterations=1, loss_type="dapo", scale_rewards="group", temperature=1.0, top_p=1.0,
            max_completion_length=args.max_new_tokens, use_vllm=False, bf16=False, fp16=False,
            gradient_checkpointing=False, use_cpu=True, report_to=[], save_strategy="no", logging_steps=1,
            log_completions=False, dataloader_num_workers=0, seed=0, shuffle_dataset=True,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config,
                              train_dataset=Dataset.from_list(records * 4), processing_class=tokenizer,
                              callbacks=[Clock()])
        for printer in (PrinterCallback, ProgressCallback):  # logging_steps=1 feeds the clock, not the console
            trainer.remove_callback(printer)
        trainer.train()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per contender")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per contender; the best one counts")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    examples = single_digit_sums()
    renderer = get_renderer("chatml")
    tokenizer = train_bpe_tokenizer([renderer.render_text(json.loads(m)) for m in examples["messages"]],
                                    vocab_size=SPEC.vocab_size)
    initial = build_tiny_causal_lm(SPEC, tokenizer, seed=0)
    # Both stop on the chat format's end of turn as well as on </s>.
    initial.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()}")
    print(f"{args.prompts} prompts x {args.group} completions per step, <= {args.max_new_tokens} new tokens, "
          f"{args.warmup} warmup + {args.steps} timed steps; model {sum(p.numel() for p in initial.parameters())/1e6:.2f}M")
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.repeats):
        for name, run in (("crucible", crucible_grpo), ("trl", trl_grpo)):
            times = run(copy.deepcopy(initial), tokenizer, examples, args)
            rates = times.rates(args.warmup, args.prompts * args.group)
            if name not in best or rates[0] > best[name][0]:
                best[name] = rates
            print(f"  round: {name:>8} {rates[0]:7.1f} completions/s {rates[1]:8.1f} completion tok/s "
                  f"(load {os.getloadavg()[0]:.2f})")
    for name, (completions, tokens) in best.items():
        print(f"{name:>10}: {completions:7.1f} completions/s  {tokens:8.1f} completion tokens/s")
    print(f"ratio crucible/trl: {best['crucible'][0] / best['trl'][0]:.2f}x completions/s, "
          f"{best['crucible'][1] / best['trl'][1]:.2f}x completion tokens/s")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
