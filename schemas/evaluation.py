"""Schemas of the evaluation group: per-example results and per-metric summaries."""

import pandera.pandas as pa
from pandera.typing import Series


class EvalResultsSchema(pa.DataFrameModel):
    model_version: Series[str] = pa.Field(str_length={"min_value": 1})
    benchmark: Series[str] = pa.Field(str_length={"min_value": 1})
    example_id: Series[str] = pa.Field(str_length={"min_value": 1})
    sample: Series[int] = pa.Field(ge=0)
    prompt: Series[str]
    prediction: Series[str]
    target: Series[str]
    extracted_answer: Series[str] = pa.Field(nullable=True)
    correct: Series[bool]
    rouge_l: Series[float] = pa.Field(ge=0.0, le=1.0)

    class Config:
        strict = True
        coerce = True
        unique = ["model_version", "benchmark", "example_id", "sample"]


class EvalSummariesSchema(pa.DataFrameModel):
    model_version: Series[str] = pa.Field(str_length={"min_value": 1})
    benchmark: Series[str] = pa.Field(str_length={"min_value": 1})
    metric: Series[str] = pa.Field(str_length={"min_value": 1})
    value: Series[float]
    num_examples: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["model_version", "benchmark", "metric"]
