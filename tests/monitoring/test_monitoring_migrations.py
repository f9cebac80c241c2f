"""monitoring/baselines and monitoring/drift_reports written by schema v1 evolve by themselves on the next
write (additive steps): old rows read null in the new columns, and v1 baselines are not taken for snapshots."""

import datetime as dt

import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from crucible.monitoring.baselines import latest_snapshot, take_snapshot
from crucible.monitoring.drift import drift_rows, kolmogorov_smirnov, psi_drift
from crucible.quarantine import store_validated
from schemas import BASELINES, DRIFT_REPORTS, LAKE_MIGRATIONS
from tests.monitoring.traffic import write_examples

D1, D2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
V1_DRIFT = pa.schema([("day", pa.date32()), ("detector", pa.string()), ("feature", pa.string()),
                      ("statistic", pa.float64()), ("p_value", pa.float64()), ("threshold", pa.float64()),
                      ("drifted", pa.bool_()), ("baseline_id", pa.string()), ("num_current", pa.int64()),
                      ("num_baseline", pa.int64())])
V1_BASELINES = pa.schema([("baseline_id", pa.string()), ("feature", pa.string()), ("source", pa.string()),
                          ("values", pa.string()), ("num_values", pa.int64()),
                          ("created_at", pa.timestamp("us", tz="UTC"))])


def v1_tables(lake) -> None:
    old = pa.Table.from_pylist([{"day": D1, "detector": d, "feature": "prompt_length_words", "statistic": 0.1,
                                 "p_value": 0.5 if d == "ks" else None, "threshold": 0.25, "drifted": False,
                                 "baseline_id": "gsm8k-train-v3-prompt_length_words", "num_current": 64,
                                 "num_baseline": 7000} for d in ("ks", "psi")], schema=V1_DRIFT)
    write_deltalake(lake.uri(DRIFT_REPORTS), old, partition_by=["day"])
    baselines = pa.Table.from_pylist([{"baseline_id": "gsm8k-train-v3-prompt_length_words",
                                       "feature": "prompt_length_words", "source": "datasets/examples@v3",
                                       "values": "[1, 2, 3]", "num_values": 3,
                                       "created_at": pd.Timestamp.now(tz="UTC")}], schema=V1_BASELINES)
    # Tables from before the crucible.schema_version property are version 1.
    write_deltalake(lake.uri(BASELINES), baselines)


def test_v1_monitoring_tables_evolve_on_write_and_keep_their_rows(lake):
    v1_tables(lake)
    assert lake.stored_schema_version(DRIFT_REPORTS) == 1
    assert latest_snapshot(lake) is None  # a v1 baseline row belongs to no snapshot
    results = [kolmogorov_smirnov([1, 2, 3, 4] * 20, [5, 6, 7] * 20, feature=f) for f in ("a", "b")]
    results.append(psi_drift([1, 2, 3, 4] * 20, [5, 6, 7] * 20, feature="a"))
    # Two KS rows on one day: the key is (day, detector, feature) now.
    stored = store_validated(lake, DRIFT_REPORTS, pd.DataFrame(drift_rows(D2, results, "snap/x")), source="test",
                             replace_where={"day": D2})
    assert stored.accepted == 3 and stored.quarantined == 0
    assert lake.stored_schema_version(DRIFT_REPORTS) == 2
    assert "monitoring/drift_reports@1->2" in lake.read(LAKE_MIGRATIONS)["step_id"].tolist()
    rows = lake.read(DRIFT_REPORTS).sort_values(["day", "detector", "feature"])
    assert rows["explanation"].isna().tolist() == [True, True, False, False, False]
    assert rows.loc[rows["day"] == D2, "explanation"].str.startswith("CDFs differ").sum() == 2


def test_a_snapshot_written_over_v1_baselines_is_the_latest(lake):
    v1_tables(lake)
    write_examples(lake, count=50)
    snapshot, _ = take_snapshot(lake, "prompts")
    assert lake.stored_schema_version(BASELINES) == 2
    assert latest_snapshot(lake).snapshot_id == snapshot.snapshot_id
    rows = lake.read(BASELINES)
    assert len(rows) == 1 + len(snapshot.features) and rows["snapshot_id"].isna().sum() == 1
