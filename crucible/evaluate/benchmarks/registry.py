"""The benchmarks Crucible scores, by name, and the one call that scores any of them."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal

import pandas as pd

from crucible.evaluate.benchmarks.common import BenchmarkConfig
from crucible.evaluate.benchmarks.gsm8k import GSM8KConfig, score_gsm8k
from crucible.evaluate.benchmarks.humaneval import HumanEvalConfig, score_humaneval
from crucible.evaluate.benchmarks.mmlu import MMLUConfig, score_mmlu
from crucible.evaluate.benchmarks.norobots import NoRobotsConfig, score_norobots

ScoreKind = Literal["binary", "continuous"]
Scorer = Callable[..., tuple[pd.DataFrame, pd.DataFrame]]


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark: the dataset (of datasets/examples) and split it scores, its config class and
    scorer, the summary metric that stands for it (``headline_metric``), and whether its per-item
    ``score`` is 0/1 (``binary``: McNemar in the paired comparison) or ``continuous``."""

    name: str
    dataset: str
    split: str
    description: str
    config_class: type[BenchmarkConfig]
    scorer: Scorer
    headline_metric: str
    score_kind: ScoreKind
    needs_sandbox: bool = False


BENCHMARKS: dict[str, BenchmarkSpec] = {spec.name: spec for spec in (
    BenchmarkSpec("mmlu", "mmlu", "test", "MMLU, 5-shot (dev-split shots), log-likelihood of the answer letter",
                  MMLUConfig, functools.partial(score_mmlu, num_fewshot=5), "accuracy", "binary"),
    BenchmarkSpec("mmlu_0shot", "mmlu", "test", "MMLU, zero-shot, log-likelihood of the answer letter",
                  MMLUConfig, functools.partial(score_mmlu, num_fewshot=0), "accuracy", "binary"),
    BenchmarkSpec("gsm8k", "gsm8k", "test", "GSM8K, k-shot generation, exact match after flexible and strict "
                  "extraction", GSM8KConfig, score_gsm8k, "exact_match_flexible", "binary"),
    BenchmarkSpec("humaneval", "humaneval", "test", "HumanEval, completions run against the unit tests in the "
                  "sandbox, unbiased pass@k", HumanEvalConfig, score_humaneval, "pass@1", "binary",
                  needs_sandbox=True),
    BenchmarkSpec("norobots", "norobots", "test", "NoRobots chats, ROUGE-1/2/L and corpus BLEU against the human "
                  "reply", NoRobotsConfig, score_norobots, "rougeL", "continuous"),
)}


def benchmark_config(name: str, config: BenchmarkConfig | Mapping[str, Any] | None = None) -> BenchmarkConfig:
    """``config`` as the benchmark's config class: None gives its defaults, a mapping its fields."""
    spec = benchmark_spec(name)
    if config is None:
        return spec.config_class()
    if isinstance(config, Mapping):
        return spec.config_class(**config)
    if not isinstance(config, spec.config_class):
        raise TypeError(f"benchmark {name}: config is a {type(config).__name__}; expected "
                        f"{spec.config_class.__name__}, a mapping of its fields, or None")
    return config


def benchmark_spec(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def evaluate_benchmark(name: str, engine: Any, examples: pd.DataFrame, model_version: str,
                       config: BenchmarkConfig | Mapping[str, Any] | None = None,
                       sandbox: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``engine`` (an :class:`crucible.inference.InferenceEngine`, or anything with its
    ``generate``/``loglikelihood``) on benchmark ``name``.

    ``examples`` are rows of datasets/examples (all splits of the benchmark's dataset; rows of other
    datasets are ignored). Returns the per-sample rows of ``evaluation/results`` and the metric rows
    of ``evaluation/summaries``. ``sandbox`` runs HumanEval's programs (default
    ``crucible.sandbox.Sandbox``).
    """
    spec = benchmark_spec(name)
    if not model_version:
        raise ValueError(f"benchmark {name}: model_version is empty; pass the version the scores belong to")
    settings = benchmark_config(name, config)
    rows = examples[examples["dataset"] == spec.dataset] if "dataset" in examples.columns else examples
    return spec.scorer(engine, rows, model_version, settings, benchmark=name, sandbox=sandbox)
