"""The feedback HTTP server over real sockets: bodies, errors naming the record, batched commits, no loss."""

import json
import threading
import urllib.error
import urllib.request

import pytest

from crucible.feedback.http import FeedbackServer, handle_events
from crucible.feedback.pii import Scrubber
from schemas import INFERENCE_EVENTS, QUARANTINE, SIGNALS

KEY = b"http-test-key-0123456789abcdef01"


def event(n: int, **fields) -> dict:
    return {"deployment": "prod", "model_version": 2, "prompt": f"q{n} from jane@example.com",
            "response": f"a{n}", "timestamp": f"2026-11-02T10:{n % 60:02d}:{n // 60 % 60:02d}Z", **fields}


def call(url: str, body: bytes | str | dict | list | None = None, method: str = "POST") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else \
        None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def server(lake):
    running = FeedbackServer(lake, user_key=KEY, max_wait_s=0.2).start()
    yield running
    running.stop()


def test_object_list_and_ndjson_bodies_are_queued_then_written_scrubbed(lake, server):
    assert call(f"{server.url}/v1/events", event(0, user="alice"))[0] == 202
    status, body = call(f"{server.url}/v1/events", [event(1), event(2)])
    assert status == 202 and body["queued"] == 2 and len(body["event_ids"]) == 2
    status, body = call(f"{server.url}/v1/events", "\n".join(json.dumps(event(n)) for n in (3, 4)) + "\n")
    assert status == 202 and body["queued"] == 2
    server.stop()
    stored = lake.read(INFERENCE_EVENTS)
    assert len(stored) == 5 and set(stored["source"]) == {"http"}
    assert not stored["prompt"].str.contains("jane@").any() and stored["prompt"].str.contains(r"\[EMAIL\]").all()
    assert stored["user_id"].notna().sum() == 1 and "alice" not in set(stored["user_id"])


def test_a_bad_body_is_refused_with_the_record_and_problem_and_nothing_is_written(lake, server):
    status, body = call(f"{server.url}/v1/events", [event(0), event(1, timestamp="soon"), event(2, latency_ms=-3)])
    assert status == 400 and body["error"] == "2 invalid events; nothing was written"
    assert body["problems"][0].startswith("event 1: timestamp 'soon' is not an ISO-8601 time")
    assert body["problems"][1] == "event 2: latency_ms must be >= 0, got -3.0"
    status, body = call(f"{server.url}/v1/events", "{not json")
    assert status == 400 and body["error"].startswith("the body is not JSON")
    status, body = call(f"{server.url}/v1/events", json.dumps(event(0)) + "\n{oops\n")
    assert status == 400 and body["error"].startswith("NDJSON line 2 is not JSON")
    assert call(f"{server.url}/v1/events", [])[1]["error"] == "the body holds no events"
    server.stop()
    assert not lake.exists(INFERENCE_EVENTS) and not lake.exists(QUARANTINE)


def test_a_burst_of_single_event_posts_makes_few_commits_and_loses_nothing(lake):
    server = FeedbackServer(lake, max_wait_s=0.3, max_rows=10_000).start()
    posted: list[str] = []
    lock = threading.Lock()

    def post(worker: int) -> None:
        for n in range(15):
            status, body = call(f"{server.url}/v1/events", event(worker * 100 + n))
            assert status == 202
            with lock:
                posted.extend(body["event_ids"])

    threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.stop()  # writes whatever is still pending
    assert sorted(lake.read(INFERENCE_EVENTS)["event_id"]) == sorted(posted) and len(posted) == 60
    assert server.batcher.commits < 20, server.batcher.commits  # a commit per batch, not per request
    assert lake.version(INFERENCE_EVENTS) <= server.batcher.commits + 1


def test_feedback_on_a_just_posted_event_is_stored_and_unknown_events_are_reported(lake, server):
    [event_id] = call(f"{server.url}/v1/events", event(0))[1]["event_ids"]
    status, body = call(f"{server.url}/v1/feedback", {"event_id": event_id, "signal": "thumbs_up"})
    assert status == 200 and body["accepted"] == 1  # the pending event was written first
    status, body = call(f"{server.url}/v1/feedback", {"signals": [
        {"event_id": event_id, "signal": "edit", "edited_text": "call +1 415-555-0132"},
        {"event_id": "missing", "signal": "copy"}]})
    assert status == 422 and (body["accepted"], body["quarantined"]) == (1, 1)
    assert "event 'missing' is not in feedback/inference_events" in body["reasons"][0]
    status, body = call(f"{server.url}/v1/feedback", {"event_id": event_id, "signal": "love"})
    assert status == 400 and body["problems"] == [
        "signal 0: unknown signal 'love' (one of thumbs_up, thumbs_down, regenerate, edit, copy, share, report)"]
    stored = lake.read(SIGNALS).sort_values("signal")
    assert stored["signal"].tolist() == ["edit", "thumbs_up"] and stored["edited_text"].iloc[0] == "call [PHONE]"


def test_health_and_unknown_routes(server):
    status, body = call(f"{server.url}/healthz", method="GET")
    assert status == 200 and body["status"] == "ok" and body["pending_events"] == 0
    assert call(f"{server.url}/v1/nowhere", {})[0] == 404
    assert call(f"{server.url}/v1/events", method="GET")[0] == 405


def test_the_pure_handler_writes_at_once_without_a_batcher(lake):
    status, body = handle_events(lake, [event(0), event(0)], scrubber=Scrubber())
    assert status == 200 and (body["rows_in"], body["accepted"], body["duplicates"]) == (2, 1, 1)
    status, body = handle_events(lake, [event(1, user="bob")], scrubber=Scrubber(), user_key=None)
    assert status == 400 and "carries a user id" in body["error"]
