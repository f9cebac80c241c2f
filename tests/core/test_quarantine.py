"""Bad rows go to quarantine with their reason; rows in always equal accepted plus quarantined."""

import datetime as dt

import pandas as pd

from crucible.quarantine import (
    quarantine_origin,
    quarantine_rows,
    row_hash,
    store_quarantined,
    store_validated,
    validate_rows,
)
from schemas import EXAMPLES, INFERENCE_EVENTS, QUARANTINE


def events(n: int) -> list[dict]:
    return [{"event_id": f"e{i}", "day": dt.date(2026, 11, 1), "timestamp": pd.Timestamp("2026-11-01", tz="UTC"),
             "model_name": "m", "model_version": 1, "prompt": f"question {i}", "response": "answer",
             "prompt_tokens": 3, "response_tokens": 1, "latency_ms": 1.0, "pii_redactions": 0, "deployment": "d",
             "user_id": None, "session_id": None, "source": "test",
             "ingested_at": pd.Timestamp("2026-11-01", tz="UTC")} for i in range(n)]


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


def test_identical_bad_rows_are_counted_and_stored_exactly(lake):
    rows = events(5)
    for i in (1, 2, 3):  # three byte-identical bad rows
        rows[i] = {**rows[0], "event_id": "same", "latency_ms": -1.0}
    day = dt.date(2026, 11, 1)
    stored = store_validated(lake, INFERENCE_EVENTS, pd.DataFrame(rows), source="day 1",
                             replace_where={"day": day}, day=day)
    # The duplicate key also fails, but every bad row stays its own quarantine row.
    assert (stored.rows_in, stored.accepted, stored.quarantined) == (5, 2, 3)
    quarantined = lake.read(QUARANTINE)
    assert len(quarantined) == 3 and quarantined["row_hash"].nunique() == 3
    assert quarantined["record"].nunique() == 1
    assert len(lake.read(INFERENCE_EVENTS)) + len(quarantined) == len(rows)


def test_quarantine_rows_keep_duplicates_and_first_hash_is_the_record_hash():
    frame = quarantine_rows("t/x", [({"a": 1}, "f", "bad")] * 3 + [({"a": 1}, "g", "bad")])
    assert len(frame) == 4 and frame["row_hash"].nunique() == 3
    assert frame["row_hash"].iloc[0] == row_hash({"a": 1}) == frame["row_hash"].iloc[3]


def examples(dataset: str, inputs: list[str]) -> pd.DataFrame:
    """Example rows; an empty input marks a bad row (its split is empty too, which the schema refuses)."""
    return pd.DataFrame([{"dataset": dataset, "split": "train" if text else "", "example_id": str(i), "input": text,
                          "target": "a", "messages": "[]", "metadata": "{}", "source": f"{dataset}.jsonl:{i + 1}"}
                         for i, text in enumerate(inputs)])


def test_reingesting_a_fixed_source_replaces_its_own_quarantine_rows(lake):
    broken = examples("gsm8k", ["q0", "", "q2", ""])
    other = examples("mmlu", ["", "q1"])
    first = store_validated(lake, EXAMPLES, broken, source=broken["source"], replace_where={"dataset": "gsm8k"})
    store_validated(lake, EXAMPLES, other, source=other["source"], replace_where={"dataset": "mmlu"})
    assert (first.accepted, first.quarantined) == (2, 2)
    assert set(lake.read(QUARANTINE)["origin"]) == {"datasets/examples[dataset=gsm8k]",
                                                   "datasets/examples[dataset=mmlu]"}

    fixed = examples("gsm8k", ["q0", "q1", "q2", "q3"])
    again = store_validated(lake, EXAMPLES, fixed, source=fixed["source"], replace_where={"dataset": "gsm8k"})
    assert (again.rows_in, again.accepted, again.quarantined) == (4, 4, 0)
    quarantined = lake.read(QUARANTINE)
    assert quarantined["origin"].tolist() == ["datasets/examples[dataset=mmlu]"]  # mmlu's row is untouched
    assert len(lake.read(EXAMPLES, where={"dataset": "gsm8k"})) == 4


def test_scoped_loader_failures_and_validation_failures_are_separate_scopes(lake):
    """What datasets/examples does: parse failures and schema failures of one dataset, each replaced by scope."""
    load_origin = quarantine_origin(EXAMPLES, {"dataset": "gsm8k"}) + " load"
    failures = quarantine_rows(EXAMPLES.path, [({"raw": "{", "field": "line"}, "gsm8k.jsonl:9", "not JSON")])
    store_quarantined(lake, failures, origin=load_origin)
    frame = examples("gsm8k", ["", "q1"])
    store_validated(lake, EXAMPLES, frame, source=frame["source"], replace_where={"dataset": "gsm8k"})
    assert len(lake.read(QUARANTINE)) == 2
    store_quarantined(lake, failures.iloc[0:0], origin=load_origin, table=EXAMPLES.path)  # the file was fixed
    assert lake.read(QUARANTINE)["origin"].tolist() == ["datasets/examples[dataset=gsm8k]"]


def test_a_crash_between_quarantine_and_accepted_writes_is_repaired_exactly_by_a_rerun(lake):
    day = dt.date(2026, 11, 1)
    old = events(4)
    store_validated(lake, INFERENCE_EVENTS, pd.DataFrame(old), source="day 1", replace_where={"day": day}, day=day)
    new = events(5)
    new[0]["latency_ms"] = -1.0
    new[4]["response_tokens"] = -1
    # The crash: the first half of store_validated (its quarantine write) ran, the accepted write did not.
    validated = validate_rows(pd.DataFrame(new), INFERENCE_EVENTS, "day 1", day=day)
    store_quarantined(lake, validated.quarantined, origin=quarantine_origin(INFERENCE_EVENTS, {"day": day}),
                      table=INFERENCE_EVENTS.path)
    assert len(lake.read(INFERENCE_EVENTS)) == 4  # still the old accepted rows
    rerun = store_validated(lake, INFERENCE_EVENTS, pd.DataFrame(new), source="day 1", replace_where={"day": day},
                            day=day)
    accepted, quarantined = lake.read(INFERENCE_EVENTS), lake.read(QUARANTINE)
    assert (rerun.rows_in, rerun.accepted, rerun.quarantined) == (5, 3, 2)
    assert sorted(accepted["event_id"]) == ["e1", "e2", "e3"]
    assert len(quarantined) == 2 and len(accepted) + len(quarantined) == len(new)
