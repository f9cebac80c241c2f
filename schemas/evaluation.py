"""Schemas of the evaluation group: one row per scored sample, and one row per summary metric."""

import pandera.pandas as pa
from pandera.typing import Series

# "none": no interval was computed (ci_low = ci_high = value), as for summaries migrated from schema v1.
CI_METHODS = ("wilson", "bootstrap", "none")


class EvalResultsSchema(pa.DataFrameModel):
    """One sample of one benchmark item: what the model was asked, what it said, and how it scored.

    ``score`` is the benchmark's per-item score in [0, 1] (0/1 for MMLU, GSM8K and HumanEval,
    ROUGE-L F1 for NoRobots), the column the paired comparison reads; ``item_metrics`` is a JSON
    object with every per-item metric (e.g. both GSM8K extractions). ``subject`` is the MMLU
    subject or the NoRobots category; ``variant`` the prompt setting ("5-shot", "chat", "n=10 T=0.8").
    For log-likelihood benchmarks ``output`` holds the choices' log-probabilities as JSON,
    ``finish_reason`` is null and ``completion_tokens`` 0.
    """

    model_version: Series[str] = pa.Field(str_length={"min_value": 1})
    benchmark: Series[str] = pa.Field(str_length={"min_value": 1})
    example_id: Series[str] = pa.Field(str_length={"min_value": 1})
    sample: Series[int] = pa.Field(ge=0)
    split: Series[str] = pa.Field(str_length={"min_value": 1})
    subject: Series[str] = pa.Field(nullable=True)
    variant: Series[str]
    prompt: Series[str]
    output: Series[str]
    extracted_answer: Series[str] = pa.Field(nullable=True)
    gold: Series[str]
    score: Series[float] = pa.Field(ge=0.0, le=1.0)
    item_metrics: Series[str]
    finish_reason: Series[str] = pa.Field(nullable=True)
    completion_tokens: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["model_version", "benchmark", "example_id", "sample"]


class EvalSummariesSchema(pa.DataFrameModel):
    """One metric of one model version on one benchmark, with its confidence interval.

    ``n`` counts items (problems), not samples. ``ci_method`` is ``wilson`` (score interval for a
    proportion of 0/1 items) or ``bootstrap`` (percentile interval over items, seeded), at ``ci_level``;
    ``none`` marks a value with no interval (rows migrated from schema version 1).
    """

    model_version: Series[str] = pa.Field(str_length={"min_value": 1})
    benchmark: Series[str] = pa.Field(str_length={"min_value": 1})
    metric: Series[str] = pa.Field(str_length={"min_value": 1})
    value: Series[float]
    ci_low: Series[float]
    ci_high: Series[float]
    ci_method: Series[str] = pa.Field(isin=list(CI_METHODS))
    ci_level: Series[float] = pa.Field(gt=0.0, lt=1.0)
    n: Series[int] = pa.Field(ge=1)
    split: Series[str] = pa.Field(str_length={"min_value": 1})
    variant: Series[str]

    class Config:
        strict = True
        coerce = True
        unique = ["model_version", "benchmark", "metric"]

    @pa.dataframe_check(error="ci_low <= ci_high")
    def interval_is_ordered(cls, frame):  # noqa: N805 - pandera passes the class
        return frame["ci_low"] <= frame["ci_high"]
