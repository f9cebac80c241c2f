"""Category counts are the same whatever form the column arrives in (Python strings, Arrow, pandas)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crucible.monitoring.drift import category_counts

VALUES = ["thumbs_up", "edit", None, "thumbs_up", "report", "edit", "thumbs_up"]
EXPECTED = {"thumbs_up": 3, "edit": 2, "report": 1}


@pytest.mark.parametrize("form", [
    lambda v: v,
    lambda v: np.array(v, dtype=object),
    lambda v: pa.array(v, type=pa.string()),
    lambda v: pa.chunked_array([pa.array(v[:3]), pa.array(v[3:])]),
    lambda v: pa.array(v).dictionary_encode(),
    lambda v: pd.Series(v, dtype=pd.ArrowDtype(pa.string())),
    lambda v: pd.Series(v, dtype="object"),
], ids=["list", "numpy", "arrow", "chunked", "dictionary", "pandas-arrow", "pandas-object"])
def test_same_counts_in_every_form(form):
    counts = category_counts(form(VALUES))
    assert counts == EXPECTED and list(counts) == ["thumbs_up", "edit", "report"]  # largest first


def test_a_categorical_keeps_unused_categories_at_zero():
    values = pd.Categorical(["a", "a", "b"], categories=["a", "b", "c"])
    assert category_counts(pd.Series(values)) == {"a": 2, "b": 1, "c": 0}
