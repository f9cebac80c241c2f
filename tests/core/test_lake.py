"""The lake's write modes on real Delta tables: partitions replace, merges upsert, versions travel."""

import datetime as dt

import pandas as pd
import pytest

from crucible.lake import equality_predicate
from schemas import DRIFT_REPORTS, EXAMPLES, TRAINING_METRICS


def drift_rows(day: dt.date, psi: float) -> pd.DataFrame:
    return pd.DataFrame([
        {"day": day, "detector": d, "feature": "len", "statistic": psi, "p_value": 0.5 if d == "ks" else None,
         "threshold": 0.2, "drifted": False, "baseline_id": "b", "num_current": 3, "num_baseline": 5,
         "explanation": None}
        for d in ("ks", "psi")])


def test_replace_where_touches_only_its_partition_and_is_idempotent(lake):
    d1, d2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
    lake.replace_where(DRIFT_REPORTS, drift_rows(d1, 0.1), {"day": d1})
    lake.replace_where(DRIFT_REPORTS, drift_rows(d2, 0.3), {"day": d2})
    lake.replace_where(DRIFT_REPORTS, drift_rows(d2, 0.4), {"day": d2})
    stored = lake.read(DRIFT_REPORTS).sort_values(["day", "detector"])
    assert len(stored) == 4
    assert stored.groupby("day")["statistic"].first().tolist() == [0.1, 0.4]


def test_replace_where_rejects_rows_outside_the_slice(lake):
    d1 = dt.date(2026, 11, 1)
    with pytest.raises(ValueError, match="outside"):
        lake.replace_where(DRIFT_REPORTS, drift_rows(dt.date(2026, 11, 5), 0.1), {"day": d1})


def test_upsert_updates_and_inserts_by_key(lake):
    first = pd.DataFrame({"run_id": ["r"] * 2, "step": [1, 2], "name": ["loss"] * 2, "value": [2.0, 1.5]})
    lake.upsert(TRAINING_METRICS, first)
    second = pd.DataFrame({"run_id": ["r"] * 2, "step": [2, 3], "name": ["loss"] * 2, "value": [1.4, 1.2]})
    lake.upsert(TRAINING_METRICS, second)
    stored = lake.read(TRAINING_METRICS).sort_values("step")
    assert stored["value"].tolist() == [2.0, 1.4, 1.2]
    with pytest.raises(ValueError, match="duplicate keys"):
        lake.upsert(TRAINING_METRICS, pd.concat([second, second]))


def test_time_travel_reads_an_earlier_version(lake):
    rows = {"dataset": "d", "split": "train", "input": "q", "target": "a", "messages": "[]", "metadata": "{}",
            "source": "s"}
    lake.upsert(EXAMPLES, pd.DataFrame([{**rows, "example_id": "1"}]))
    version = lake.version(EXAMPLES)
    lake.upsert(EXAMPLES, pd.DataFrame([{**rows, "example_id": "2"}]))
    assert len(lake.read(EXAMPLES)) == 2
    assert lake.read(EXAMPLES, version=version)["example_id"].tolist() == ["1"]
    assert len(lake.read(EXAMPLES, where={"example_id": ["1", "2"]})) == 2


def test_reading_a_missing_table_gives_typed_empty_frame(lake):
    frame = lake.read(DRIFT_REPORTS)
    assert frame.empty and list(frame.columns) == DRIFT_REPORTS.columns


def test_schema_mismatch_is_refused_with_the_table_named(lake):
    bad = pd.DataFrame({"run_id": ["r"], "step": [1], "name": ["loss"], "value": ["not a number"]})
    with pytest.raises(Exception, match="value"):
        lake.upsert(TRAINING_METRICS, bad)


def test_equality_predicate_quotes_values():
    assert equality_predicate({"day": dt.date(2026, 1, 2), "name": "o'k"}) == "day = '2026-01-02' AND name = 'o''k'"
    assert equality_predicate({"n": [2, 1]}) == "n IN (1, 2)"


def test_concurrent_writers_lose_nothing(lake):
    """Writers racing on one table: conflicting commits are retried, so every row lands once."""
    from concurrent.futures import ThreadPoolExecutor

    def write(worker: int) -> None:
        for round_ in range(3):
            rows = pd.DataFrame({"run_id": [f"w{worker}"] * 5, "step": [round_ * 5 + i for i in range(5)],
                                 "name": ["loss"] * 5, "value": [float(i) for i in range(5)]})
            lake.upsert(TRAINING_METRICS, rows)

    lake.ensure(TRAINING_METRICS)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    stored = lake.read(TRAINING_METRICS)
    assert len(stored) == 4 * 3 * 5
    assert not stored.duplicated(["run_id", "step", "name"]).any()


def test_rows_merged_in_one_write_can_be_read_back_filtered(lake):
    """deltalake can write merged files whose strings pyarrow cannot compare with a filter value
    (string vs string_view); the read must still return exactly the matching rows."""
    from schemas import EXAMPLES

    rows = [dict(dataset="d", split=split, example_id=str(i), input="x", target="y", messages="[]",
                 metadata="{}", source="f:1") for split in ("train", "test") for i in range(3)]
    lake.upsert(EXAMPLES, pd.DataFrame(rows))
    train = lake.read(EXAMPLES, where={"dataset": "d", "split": "train"})
    assert sorted(train["example_id"]) == ["0", "1", "2"] and set(train["split"]) == {"train"}
    ids = lake.read(EXAMPLES, where={"split": ["test"]}, columns=["example_id"])
    assert list(ids.columns) == ["example_id"] and len(ids) == 3


def test_arrow_strings_read_the_same_text_without_python_objects(tmp_path):
    import pandas as pd

    from crucible.lake import DeltaLake
    from crucible.quarantine import store_validated
    from schemas import REVIEWS

    lake = DeltaLake(tmp_path / "lake")
    rows = pd.DataFrame({"example_id": ["e1", "e2"], "reviewer": ["ana", "bo"], "decision": ["approve", "edit"],
                         "edited_response": [None, "fixed"], "note": [None, None],
                         "decided_at": pd.Timestamp("2026-11-01", tz="UTC")})
    store_validated(lake, REVIEWS, rows, source="test")
    plain = lake.read(REVIEWS).sort_values("example_id", ignore_index=True)
    arrow = lake.read(REVIEWS, arrow_strings=True).sort_values("example_id", ignore_index=True)
    assert isinstance(arrow["decision"].dtype, pd.ArrowDtype) and plain["decision"].dtype == object
    assert arrow["decision"].tolist() == plain["decision"].tolist() == ["approve", "edit"]
    assert arrow["edited_response"].isna().tolist() == [True, False]
    filtered = lake.read(REVIEWS, where={"reviewer": "bo"}, arrow_strings=True)
    assert filtered["example_id"].tolist() == ["e2"]
