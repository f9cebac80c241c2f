"""Schemas of the datasets group: the normalized examples table and its splits."""

import pandera.pandas as pa
from pandera.typing import Series


class ExamplesSchema(pa.DataFrameModel):
    """One row per benchmark or user example, whatever its source format.

    ``messages`` is the example as a chat (a JSON list of ``{role, content}``) so that any
    dataset can feed supervised training; ``metadata`` holds format-specific fields as JSON.
    """

    dataset: Series[str] = pa.Field(str_length={"min_value": 1})
    split: Series[str] = pa.Field(str_length={"min_value": 1})
    example_id: Series[str] = pa.Field(str_length={"min_value": 1})
    input: Series[str]
    target: Series[str]
    messages: Series[str]
    metadata: Series[str]
    source: Series[str]

    class Config:
        strict = True
        coerce = True
        unique = ["dataset", "split", "example_id"]


class SplitsSchema(pa.DataFrameModel):
    """Assignment of examples to named splits (train/validation/test) and folds.

    Fold ``i`` holds out the train examples whose ``split_name`` is ``fold-<i>`` (and ``fold`` is ``i``);
    other rows have ``fold`` -1. ``source_split`` is part of the key because an example id is unique
    only within its source split (MMLU numbers each subject's questions in dev, val and test alike).
    """

    dataset: Series[str] = pa.Field(str_length={"min_value": 1})
    split_name: Series[str] = pa.Field(str_length={"min_value": 1})
    example_id: Series[str] = pa.Field(str_length={"min_value": 1})
    source_split: Series[str]
    fold: Series[int] = pa.Field(ge=-1)

    class Config:
        strict = True
        coerce = True
        unique = ["dataset", "split_name", "example_id", "source_split"]
