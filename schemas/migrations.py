"""Schema of the lake's migration record: one row per applied schema-migration step."""

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "us", "UTC"]


class LakeMigrationsSchema(pa.DataFrameModel):
    step_id: Series[str] = pa.Field(str_length={"min_value": 1})
    table: Series[str] = pa.Field(str_length={"min_value": 1})
    from_version: Series[int] = pa.Field(ge=1)
    to_version: Series[int] = pa.Field(ge=2)
    description: Series[str]
    additive: Series[bool]
    table_version_before: Series[int] = pa.Field(ge=0)
    table_version_after: Series[int] = pa.Field(ge=0)
    applied_at: Series[UtcTimestamp]

    class Config:
        strict = True
        coerce = True
