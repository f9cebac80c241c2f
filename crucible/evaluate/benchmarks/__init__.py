"""Benchmark scorers (MMLU, GSM8K, HumanEval, NoRobots): per-sample rows and summary metrics with intervals."""

from crucible.evaluate.benchmarks.common import BenchmarkConfig
from crucible.evaluate.benchmarks.gsm8k import GSM8KConfig
from crucible.evaluate.benchmarks.humaneval import HumanEvalConfig
from crucible.evaluate.benchmarks.intervals import bootstrap_interval, wilson_interval
from crucible.evaluate.benchmarks.mmlu import MMLUConfig
from crucible.evaluate.benchmarks.norobots import NoRobotsConfig
from crucible.evaluate.benchmarks.registry import (
    BENCHMARKS,
    BenchmarkSpec,
    benchmark_config,
    benchmark_spec,
    evaluate_benchmark,
)

__all__ = [
    "BENCHMARKS",
    "BenchmarkConfig",
    "BenchmarkSpec",
    "GSM8KConfig",
    "HumanEvalConfig",
    "MMLUConfig",
    "NoRobotsConfig",
    "benchmark_config",
    "benchmark_spec",
    "bootstrap_interval",
    "evaluate_benchmark",
    "wilson_interval",
]
