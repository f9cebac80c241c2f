"""Feedback ingestion into a real lake: scrubbing, pseudonyms, quarantine counts, idempotency, files, migration."""

import datetime as dt
import json

import pandas as pd
import pytest

from crucible.feedback.ingest import (
    UserKeyMissing,
    day_summary,
    ingest_events,
    ingest_file,
    ingest_signals,
    remove_simulated_day,
)
from crucible.feedback.pii import Scrubber, pseudonymize_user
from schemas import INFERENCE_EVENTS, QUARANTINE, SIGNALS

KEY = b"test-key-0123456789abcdef0123456"
DAY = dt.date(2026, 11, 2)


def event(n: int, **fields) -> dict:
    record = {"deployment": "prod", "model_version": 3, "prompt": f"question {n}?", "response": f"answer {n}",
              "timestamp": f"2026-11-02T10:{n % 60:02d}:00Z"}
    record.update(fields)
    return record


def ingest(lake, records, **kwargs):
    kwargs.setdefault("user_key", KEY)
    return ingest_events(lake, records, source="test", scrubber=Scrubber(), **kwargs)


def test_events_are_scrubbed_pseudonymized_and_match_the_schema(lake):
    records = [
        event(0, prompt="mail jane.doe@example.com or call +1 415-555-0132", user="alice", session="s-1",
              latency_ms=12.5, prompt_tokens=7, response_tokens=3, model_name="tiny"),
        event(1, response="card 4111 1111 1111 1111 from 192.168.1.20", user=42),
    ]
    result = ingest(lake, records)
    assert (result.rows_in, result.accepted, result.duplicates, result.quarantined) == (2, 2, 0, 0)
    stored = lake.read(INFERENCE_EVENTS).sort_values("timestamp").reset_index(drop=True)
    INFERENCE_EVENTS.model.validate(stored)  # what the column-wise path writes passes the Pandera model
    assert stored["prompt"].tolist() == ["mail [EMAIL] or call [PHONE]", "question 1?"]
    assert stored["response"].tolist() == ["answer 0", "card [CARD] from [IP]"]
    assert stored["user_id"].tolist() == [pseudonymize_user("alice", KEY), pseudonymize_user("42", KEY)]
    assert stored["pii_redactions"].tolist() == [2, 2] and result.pii_redactions == 4
    assert stored["model_name"].tolist() == ["tiny", "prod"]  # defaults to the deployment
    assert stored["prompt_tokens"].tolist()[0] == 7 and pd.isna(stored["prompt_tokens"].iloc[1])
    assert pd.isna(stored["latency_ms"].iloc[1]) and stored["day"].tolist() == [DAY, DAY]
    assert set(stored["source"]) == {"test"} and stored["event_id"].tolist() == result.event_ids
    raw = json.dumps(stored.astype(str).to_dict("records"))
    assert "alice" not in raw and "jane.doe" not in raw and "4111" not in raw


INVALID = [
    ({"prompt": None}, "missing required field 'prompt'"),
    ({"timestamp": "yesterday"}, "timestamp 'yesterday' is not an ISO-8601 time"),
    ({"timestamp": 1730000000}, "is not an ISO-8601 time"),
    ({"timestamp": "2099-01-01T00:00:00Z"}, "is in the future"),
    ({"latency_ms": -1}, "latency_ms must be >= 0, got -1"),
    ({"latency_ms": "fast"}, "latency_ms must be a number, got 'fast'"),
    ({"prompt_tokens": 1.5}, "prompt_tokens must be an integer, got 1.5"),
    ({"model_version": 0}, "model_version must be >= 1"),
    ({"model_version": "x"}, "model_version must be an integer, got 'x'"),
    ({"prompt": 17}, "prompt must be a string, got int 17"),
    ({"prompt": ""}, "prompt is empty"),
    ({"deployment": ["a"]}, "deployment must be a string"),
    ({"event_id": "x" * 200}, "event_id is longer than 128 characters"),
    ({"signals": [{"signal": "love"}]}, "signals[0]: unknown signal 'love'"),
    ({"signals": [{"signal": "edit"}]}, "signals[0]: an 'edit' signal needs a non-empty edited_text"),
    ({"signals": "thumbs_up"}, "signals is not a JSON list"),
]


@pytest.mark.parametrize("change,reason", INVALID, ids=[r for _, r in INVALID])
def test_an_invalid_record_is_quarantined_with_a_reason_naming_it(lake, change, reason):
    records = [event(0), event(1, **change), event(2)]
    result = ingest(lake, records)
    assert (result.rows_in, result.accepted, result.duplicates, result.quarantined) == (3, 2, 0, 1)
    [stored_reason] = lake.read(QUARANTINE)["reason"].tolist()
    assert stored_reason.startswith("record 1: ") and reason in stored_reason, stored_reason
    assert len(lake.read(INFERENCE_EVENTS)) == 2


def test_rows_in_is_accepted_plus_duplicates_plus_quarantined_and_a_rerun_adds_nothing(lake):
    records = [event(n, user=f"u{n % 3}") for n in range(10)]
    records += [event(20, latency_ms=-5), "not an object", event(21, prompt=None), dict(records[4])]
    first = ingest(lake, records)
    assert (first.rows_in, first.accepted, first.duplicates, first.quarantined) == (14, 10, 1, 3)
    again = ingest(lake, records)
    assert (again.rows_in, again.accepted, again.duplicates, again.quarantined) == (14, 0, 11, 3)
    assert again.event_ids == first.event_ids  # ids derived from content are stable
    assert len(lake.read(INFERENCE_EVENTS)) == 10 and len(lake.read(QUARANTINE)) == 3  # nothing doubled
    quarantined = lake.read(QUARANTINE).set_index("reason")["record"]
    assert quarantined["record 11: is str, not an object"] == json.dumps({"value": "'not an object'"})


def test_an_id_given_twice_with_different_content_is_quarantined(lake):
    result = ingest(lake, [event(0, event_id="e1"), event(1, event_id="e1"), event(0, event_id="e1")])
    assert (result.rows_in, result.accepted, result.duplicates, result.quarantined) == (3, 1, 1, 1)
    [reason] = lake.read(QUARANTINE)["reason"].tolist()
    assert reason == "record 1: event_id 'e1' was already given to record 0 with different content"
    assert lake.read(INFERENCE_EVENTS)["prompt"].tolist() == ["question 0?"]


def test_a_stored_event_is_never_overwritten(lake):
    ingest(lake, [event(0, event_id="e1")])
    result = ingest(lake, [event(0, event_id="e1", response="changed")])
    assert (result.accepted, result.duplicates) == (0, 1)
    assert lake.read(INFERENCE_EVENTS)["response"].tolist() == ["answer 0"]


def test_user_ids_without_a_key_are_refused_before_anything_is_written(lake):
    with pytest.raises(UserKeyMissing, match="record 1 carries a user id.*CRUCIBLE_PII_KEY"):
        ingest(lake, [event(0), event(1, user="bob")], user_key=None)
    assert not lake.exists(INFERENCE_EVENTS) and not lake.exists(QUARANTINE)
    assert ingest(lake, [event(0)], user_key=None).accepted == 1  # without users no key is needed


def test_extra_patterns_scrub_deployment_specific_identifiers(lake):
    scrubber = Scrubber({"order": r"\bORD-\d{6}\b"})
    ingest_events(lake, [event(0, prompt="where is ORD-123456?")], source="t", scrubber=scrubber, user_key=None)
    assert lake.read(INFERENCE_EVENTS)["prompt"].tolist() == ["where is [ORDER]?"]


def test_attached_and_later_signals_land_on_the_events_day(lake):
    stamp = "2026-11-02T23:59:00Z"
    result = ingest(lake, [event(0, timestamp=stamp, signals=[
        {"signal": "thumbs_up"}, {"signal": "edit", "edited_text": "better; mail me at x.y@example.com",
                                  "timestamp": "2026-11-03T08:00:00Z"}])])
    assert result.signals == 2
    [event_id] = result.event_ids
    later = ingest_signals(lake, [{"event_id": event_id, "signal": "copy", "timestamp": "2026-11-04T00:00:00Z"},
                                  {"event_id": "nope", "signal": "share"},
                                  {"event_id": event_id, "signal": "copy", "timestamp": "2026-11-04T00:00:00Z"}],
                           source="http", scrubber=Scrubber())
    assert (later.rows_in, later.accepted, later.duplicates, later.quarantined) == (3, 1, 1, 1)
    stored = lake.read(SIGNALS).sort_values("timestamp")
    SIGNALS.model.validate(stored)
    assert stored["signal"].tolist() == ["thumbs_up", "edit", "copy"]
    assert set(stored["day"]) == {DAY}  # the event's day, though the edit and copy came later
    assert stored["edited_text"].tolist()[1] == "better; mail me at [EMAIL]"
    assert stored["weight"].tolist() == [3.0, 5.0, 2.0]
    reasons = lake.read(QUARANTINE, where={"table": SIGNALS.path})["reason"].tolist()
    assert reasons == ["signal 1: event 'nope' is not in feedback/inference_events; ingest the event before its "
                       "signals"]


def test_the_same_events_as_jsonl_csv_and_parquet_get_the_same_ids(lake, tmp_path):
    records = [event(n, user=f"u{n}", latency_ms=10.0 + n) for n in range(4)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n[1, 2]\n")
    pd.DataFrame(records).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(records).to_parquet(tmp_path / "a.parquet")
    jsonl = ingest_file(lake, tmp_path / "a.jsonl", scrubber=Scrubber(), user_key=KEY)
    assert (jsonl.rows_in, jsonl.accepted, jsonl.quarantined) == (6, 4, 2)
    reasons = sorted(lake.read(QUARANTINE)["reason"])
    assert reasons[0].startswith("a.jsonl line 5: not JSON") and reasons[1] == "a.jsonl line 6: is list, not an object"
    for name in ("a.csv", "a.parquet"):
        result = ingest_file(lake, tmp_path / name, scrubber=Scrubber(), user_key=KEY)
        assert (result.rows_in, result.accepted, result.duplicates) == (4, 0, 4), name
        assert result.event_ids == jsonl.event_ids
    assert len(lake.read(INFERENCE_EVENTS)) == 4


def test_a_csv_record_is_named_by_its_line(lake, tmp_path):
    pd.DataFrame([event(0), event(1, latency_ms="slow")]).to_csv(tmp_path / "b.csv", index=False)
    result = ingest_file(lake, tmp_path / "b.csv", scrubber=Scrubber(), user_key=None)
    assert result.reasons == ["b.csv line 3: latency_ms must be a number, got 'slow'"]


def test_simulated_rows_are_replaced_and_real_ones_kept(lake):
    ingest_events(lake, [event(0)], source="simulation", scrubber=Scrubber(), user_key=None)
    ingest(lake, [event(1)])
    assert day_summary(lake, DAY).per_source == {"simulation": 1, "test": 1}
    remove_simulated_day(lake, DAY)
    summary = day_summary(lake, DAY)
    assert (summary.events, summary.real, summary.per_deployment) == (1, 1, {"prod": 1})


def test_migration_rewrites_a_v1_events_table(lake):
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from crucible.lake import MigrationRequiredError
    from crucible.migrations import migrate

    v1 = pa.schema([pa.field("event_id", pa.string(), False), pa.field("day", pa.date32(), False),
                    pa.field("timestamp", pa.timestamp("us", tz="UTC"), False),
                    pa.field("model_name", pa.string(), False), pa.field("model_version", pa.int64(), False),
                    pa.field("prompt", pa.string(), False), pa.field("response", pa.string(), False),
                    pa.field("prompt_tokens", pa.int64(), False), pa.field("response_tokens", pa.int64(), False),
                    pa.field("latency_ms", pa.float64(), False), pa.field("pii_redactions", pa.int64(), False)])
    uri = lake.uri(INFERENCE_EVENTS)
    DeltaTable.create(uri, v1, partition_by=["day"], configuration={"crucible.schema_version": "1"},
                      raise_if_key_not_exists=False)
    stamp = dt.datetime(2026, 11, 1, 9, tzinfo=dt.timezone.utc)
    write_deltalake(uri, pa.Table.from_pylist([
        {"event_id": "a", "day": stamp.date(), "timestamp": stamp, "model_name": "m", "model_version": 1,
         "prompt": "p", "response": "r", "prompt_tokens": 4, "response_tokens": 2, "latency_ms": 9.0,
         "pii_redactions": 0}], schema=v1), mode="append")
    with pytest.raises(MigrationRequiredError, match="feedback/inference_events@1->2"):
        ingest(lake, [event(0)])
    [outcome] = [o for o in migrate(lake) if o.table == INFERENCE_EVENTS.path]
    assert outcome.status == "applied" and lake.stored_schema_version(INFERENCE_EVENTS) == 2
    [row] = lake.read(INFERENCE_EVENTS).to_dict("records")
    assert (row["deployment"], row["source"], row["user_id"], row["prompt_tokens"]) == ("simulation", "simulation",
                                                                                        None, 4)
    assert row["ingested_at"] == pd.Timestamp(stamp)
    stored = DeltaTable(uri).schema().to_arrow()
    assert pa.schema(stored).field("latency_ms").nullable and not pa.schema(stored).field("deployment").nullable
    assert ingest(lake, [event(0, latency_ms=None)]).accepted == 1  # the v2 write path works afterwards
    assert migrate(lake) == []  # re-running finds nothing to do
