"""Schemas of preference training: reference-model log-probs of each (chosen, rejected) pair, computed once."""

import pandera.pandas as pa
from pandera.typing import Series

from schemas.quarantine import UtcTimestamp


class ReferenceLogprobsSchema(pa.DataFrameModel):
    """Summed completion log-probs of one preference pair under one reference checkpoint.

    ``reference`` names the checkpoint (``run:<training run id>`` or a folder); ``dataset``/``split``/
    ``dataset_version`` name the data the pair came from; ``tokens_sha`` hashes the pair's token ids, so a
    changed chat format or length limit is recomputed instead of reused.
    """

    reference: Series[str] = pa.Field(str_length={"min_value": 1})
    dataset: Series[str] = pa.Field(str_length={"min_value": 1})
    split: Series[str]
    dataset_version: Series[int] = pa.Field(ge=0)
    pair_id: Series[str] = pa.Field(str_length={"min_value": 1})
    tokens_sha: Series[str] = pa.Field(str_matches=r"^[0-9a-f]{64}$")
    chosen_logp: Series[float] = pa.Field(le=0.0)
    rejected_logp: Series[float] = pa.Field(le=0.0)
    chosen_tokens: Series[int] = pa.Field(ge=1)
    rejected_tokens: Series[int] = pa.Field(ge=1)
    computed_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
        unique = ["reference", "dataset", "split", "dataset_version", "pair_id"]
