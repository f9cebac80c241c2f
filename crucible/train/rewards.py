"""Reward functions for RL: GSM8K answers, exact match, format, HumanEval unit tests and user callables.

A recipe lists rewards with weights (``RewardSpec``); :class:`WeightedRewards` builds each one and
scores a batch of completions as ``total = sum_k weight_k * reward_k``. Every reward function takes
the completions' texts and their examples (rows of the examples table, ``metadata`` parsed) and
returns one float per completion.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RewardFunction = Callable[[Sequence[str], Sequence[Mapping[str, Any]]], Sequence[float]]

# The answer line GSM8K solutions end with ("#### 42").
GSM8K_ANSWER_LINE = r"#### -?[0-9.,]+"
_FENCED_CODE = re.compile(r"```[A-Za-z0-9_+-]*\n(.*?)(?:```|$)", re.DOTALL)


class _RewardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, description="multiplier of this reward in the total")
    name: str | None = Field(None, min_length=1, description="metric name (reward/<name>); default: the kind")

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


class GSM8KReward(_RewardSettings):
    """1.0 when the completion's final number equals the example's target (``crucible.data.metrics``)."""

    kind: Literal["gsm8k"] = "gsm8k"
    mode: Literal["strict", "flexible"] = Field(
        "flexible", description="strict: the '#### <n>' line; flexible: the last number in the text")


class ExactMatchReward(_RewardSettings):
    """1.0 when the completion equals the target after SQuAD normalisation."""

    kind: Literal["exact_match"] = "exact_match"


class FormatReward(_RewardSettings):
    """1.0 when the completion matches ``pattern`` (searched, or matched whole with ``full_match``)."""

    kind: Literal["format"] = "format"
    pattern: str = Field(GSM8K_ANSWER_LINE, min_length=1, description="Python regular expression")
    full_match: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"format reward: pattern {value!r} is not a regular expression: {error}") from None
        return value


class HumanEvalReward(_RewardSettings):
    """1.0 when the completion passes the example's HumanEval tests in the code sandbox."""

    kind: Literal["humaneval"] = "humaneval"
    timeout_s: float = Field(10.0, gt=0, description="wall-clock limit of one test program")
    workers: int = Field(2, ge=1, description="test programs run at once")


class PythonReward(_RewardSettings):
    """A user function ``module:function`` with the signature ``(completions, examples) -> list[float]``."""

    kind: Literal["python"] = "python"
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                          description="importable 'package.module:function'")


RewardSpec = Annotated[
    GSM8KReward | ExactMatchReward | FormatReward | HumanEvalReward | PythonReward, Field(discriminator="kind")
]


def load_python_reward(reference: str) -> RewardFunction:
    """Import ``module:function`` (never evaluated as code) and check that it is callable.

    Errors say which part is missing: the module (and that it must be importable from this
    environment), or the function in it.
    """
    module_name, _, function_name = reference.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"reward function {reference!r}: expected 'module:function', e.g. 'my_rewards:length'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise ValueError(f"reward function {reference!r}: module {module_name!r} not found; install it or put "
                             "it on PYTHONPATH of the process that trains") from None
        raise  # the module exists but one of its own imports is missing: show the real traceback
    function = getattr(module, function_name, None)
    if function is None:
        raise ValueError(f"reward function {reference!r}: module {module_name!r} has no {function_name!r}")
    if not callable(function):
        raise ValueError(f"reward function {reference!r}: {function_name!r} is a {type(function).__name__}, "
                         "not a function")
    return function


def code_from_completion(text: str) -> str:
    """The first fenced code block of a chat answer, or the whole text when it has none."""
    match = _FENCED_CODE.search(text)
    return match.group(1) if match else text


def _gsm8k(mode: str) -> RewardFunction:
    from crucible.data.metrics import gsm8k_is_correct

    def score(completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[float]:
        return [float(gsm8k_is_correct(text, str(example["target"]), mode)) for text, example
                in zip(completions, examples, strict=True)]

    return score


def _exact_match(completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[float]:
    from crucible.data.metrics import exact_match

    return [exact_match(text, str(example["target"])) for text, example in zip(completions, examples, strict=True)]


def _format(pattern: str, full_match: bool) -> RewardFunction:
    compiled = re.compile(pattern)
    match = compiled.fullmatch if full_match else compiled.search

    def score(completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[float]:
        return [float(match(text.strip() if full_match else text) is not None) for text in completions]

    return score


def humaneval_problem(example: Mapping[str, Any]) -> dict[str, str]:
    """The HumanEval problem of an examples-table row: ``input`` is the prompt, metadata holds the tests."""
    metadata = example.get("metadata") or {}
    missing = [key for key in ("test", "entry_point") if not metadata.get(key)]
    if missing:
        raise ValueError(f"HumanEval reward: example {example.get('example_id')!r} has no metadata "
                         f"{', '.join(missing)}; is it a HumanEval example?")
    return {"task_id": str(example.get("example_id")), "prompt": str(example["input"]),
            "test": metadata["test"], "entry_point": metadata["entry_point"]}


def _humaneval(timeout_s: float, workers: int) -> RewardFunction:
    def score(completions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> list[float]:
        from crucible.sandbox import Sandbox, check_humaneval_many

        checks = [(humaneval_problem(example), code_from_completion(text))
                  for text, example in zip(completions, examples, strict=True)]
        results = check_humaneval_many(checks, sandbox=Sandbox(timeout_s=timeout_s), workers=workers)
        return [float(result.passed) for result in results]

    return score


def build_reward_function(spec: _RewardSettings) -> RewardFunction:
    """The scoring function of one reward setting (a user function is imported here, failing early)."""
    if isinstance(spec, GSM8KReward):
        return _gsm8k(spec.mode)
    if isinstance(spec, ExactMatchReward):
        return _exact_match
    if isinstance(spec, FormatReward):
        return _format(spec.pattern, spec.full_match)
    if isinstance(spec, HumanEvalReward):
        return _humaneval(spec.timeout_s, spec.workers)
    if isinstance(spec, PythonReward):
        return load_python_reward(spec.function)
    raise TypeError(f"unknown reward settings {spec!r}")


class WeightedRewards:
    """Several rewards combined with weights: ``total_i = sum_k weight_k * reward_k(completion_i)``."""

    def __init__(self, specs: Sequence[_RewardSettings]):
        if not specs:
            raise ValueError("rewards: expected at least one reward, e.g. [{kind: gsm8k}]")
        self.specs = list(specs)
        self.functions = [build_reward_function(spec) for spec in self.specs]

    def score(self, completions: Sequence[str],
              examples: Sequence[Mapping[str, Any]]) -> tuple[list[float], dict[str, list[float]]]:
        """The weighted total per completion and each reward's own (unweighted) values by label."""
        if len(completions) != len(examples):
            raise ValueError(f"rewards: {len(completions)} completions but {len(examples)} examples")
        totals = [0.0] * len(completions)
        parts: dict[str, list[float]] = {}
        for spec, function in zip(self.specs, self.functions, strict=True):
            values = [float(v) for v in function(list(completions), list(examples))]
            if len(values) != len(completions):
                raise ValueError(f"reward {spec.label!r} returned {len(values)} values for {len(completions)} "
                                 "completions; expected one per completion")
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            if bad is not None:
                raise ValueError(f"reward {spec.label!r} gave {values[bad]} for completion {bad} "
                                 f"({completions[bad][:60]!r}); rewards must be finite numbers")
            parts[spec.label] = values
            totals = [t + spec.weight * v for t, v in zip(totals, values, strict=True)]
        return totals, parts
