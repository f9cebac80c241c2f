"""Bad rows go to quarantine with their reason; rows in always equal accepted plus quarantined."""

import datetime as dt

import pandas as pd

from crucible.quarantine import store_validated, validate_rows
from schemas import INFERENCE_EVENTS, QUARANTINE


def events(n: int) -> list[dict]:
    return [{"event_id": f"e{i}", "day": dt.date(2026, 11, 1), "timestamp": pd.Timestamp("2026-11-01", tz="UTC"),
             "model_name": "m", "model_version": 1, "prompt": f"question {i}", "response": "answer",
             "prompt_tokens": 3, "response_tokens": 1, "latency_ms": 1.0, "pii_redactions": 0} for i in range(n)]


def test_each_bad_record_is_quarantined_with_its_reason():
    rows = events(6)
    rows[1]["prompt"] = "write to me at someone@example.com"
    rows[2]["response_tokens"] = -4
    rows[3]["model_version"] = "not-a-number"
    rows[4]["event_id"] = "e0"
    result = validate_rows(pd.DataFrame(rows), INFERENCE_EVENTS, source="test")
    assert result.counts == {"rows_in": 6, "accepted": 2, "quarantined": 4}
    reasons = dict(zip(result.quarantined["record"].str.extract(r'"prompt": "([^"]+)"')[0],
                       result.quarantined["reason"], strict=True))
    assert "no_unscrubbed_email" in reasons["write to me at someone@example.com"]
    assert "response_tokens" in reasons["question 2"] and "greater_than_or_equal_to(0)" in reasons["question 2"]
    assert "model_version" in reasons["question 3"]
    assert "duplicate key" in reasons["question 4"]
    assert sorted(result.accepted["event_id"]) == ["e0", "e5"]


def test_missing_column_quarantines_every_row():
    frame = pd.DataFrame(events(3)).drop(columns=["latency_ms"])
    result = validate_rows(frame, INFERENCE_EVENTS, source="test")
    assert result.counts == {"rows_in": 3, "accepted": 0, "quarantined": 3}
    assert result.quarantined["reason"].str.contains("latency_ms").all()


def test_store_validated_writes_both_tables_and_rerun_does_not_duplicate(lake):
    rows = events(4)
    rows[0]["latency_ms"] = -1.0
    day = dt.date(2026, 11, 1)
    for _ in range(2):
        stored = store_validated(lake, INFERENCE_EVENTS, pd.DataFrame(rows), source="day 1",
                                 replace_where={"day": day}, day=day)
    assert (stored.rows_in, stored.accepted, stored.quarantined) == (4, 3, 1)
    assert len(lake.read(INFERENCE_EVENTS)) == 3
    quarantined = lake.read(QUARANTINE)
    assert len(quarantined) == 1
    assert quarantined.iloc[0]["table"] == "feedback/inference_events"
    assert quarantined.iloc[0]["source"] == "day 1"
