"""The inference server over real HTTP on 127.0.0.1 with a tiny model: readiness, OpenAI-style errors,
dynamic batching with per-request answers, streaming cuts, planted faults, metrics, and events in the lake."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crucible.deploy.batching import FaultSpec
from crucible.deploy.events import EventBuffer, lake_writer
from crucible.deploy.server import EVENT_HEADER, ModelServer, streamable_length
from crucible.feedback.ingest import ingest_file
from crucible.feedback.pii import Scrubber
from crucible.inference import GenerationRequest, InferenceEngine
from crucible.lake import DeltaLake
from schemas import INFERENCE_EVENTS
from tests.deploy.tiny_model import make_tiny_checkpoint, register_tiny

PROMPTS = ["Hi", "Question: how many clips did Natalia sell?", "the cat", "Answer: 12 apples are left and",
           "In May she sold half as many clips as in April, so", "x", "the mat the cat the", "Natalia sold 48"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="module")
def engine(checkpoint):
    return InferenceEngine.from_checkpoint(checkpoint)


@pytest.fixture
def serve(engine):
    """Start servers on free ports; every one is stopped after the test."""
    started: list[ModelServer] = []

    def start(**options) -> ModelServer:
        options.setdefault("model_id", "tiny")
        server = ModelServer(options.pop("engine", engine), **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def chat(text: str, **options) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 12,
            **options}


def metric(server: ModelServer, name: str, **labels: str) -> float:
    """The summed value of the samples ``name`` (with ``labels``) in the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_readiness_differs_from_liveness_until_the_model_is_loaded(serve, engine):
    release = threading.Event()

    def slow_load() -> InferenceEngine:
        release.wait(30)
        return engine

    server = serve(engine=slow_load)
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    loading = httpx.get(f"{server.url}/readyz")
    assert (loading.status_code, loading.json()["status"]) == (503, "loading")
    early = httpx.post(f"{server.url}/v1/chat/completions", json=chat("hi"))
    assert early.status_code == 503 and early.json()["error"]["code"] == "model_not_ready"
    release.set()
    server.wait_ready(10)
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.post(f"{server.url}/v1/chat/completions", json=chat("hi")).status_code == 200

    def broken_load() -> InferenceEngine:
        raise FileNotFoundError("checkpoint /nowhere: expected a Hugging Face model folder")

    failed = serve(engine=broken_load)
    with pytest.raises(RuntimeError, match="/nowhere"):
        failed.wait_ready(10)
    answer = httpx.get(f"{failed.url}/readyz")
    assert answer.status_code == 503 and "/nowhere" in answer.json()["error"]
    assert httpx.get(f"{failed.url}/healthz").status_code == 200  # alive, never ready


@pytest.mark.parametrize(("body", "status", "code", "param"), [
    (b'{"model": "tiny", "messages": [', 400, "invalid_json", None),
    (b'["not", "an", "object"]', 422, "invalid_type", None),
    (chat("hi", model="gpt-4"), 404, "model_not_found", "model"),
    ({"model": "tiny"}, 422, "missing_required_parameter", "messages"),
    (chat("hi", messages=[]), 422, "missing_required_parameter", "messages"),
    (chat("hi", messages="hi"), 422, "invalid_type", "messages"),
    (chat("hi", messages=[{"content": "no role"}]), 422, "invalid_type", "messages[0]"),
    (chat("hi", messages=[{"role": "wizard", "content": "hi"}]), 400, "invalid_value", "messages"),
    (chat("hi", temperature="hot"), 422, "invalid_type", "temperature"),
    (chat("hi", temperature=3), 400, "invalid_value", "temperature"),
    (chat("hi", max_tokens=True), 422, "invalid_type", "max_tokens"),
    (chat("hi", max_tokens=0), 400, "invalid_value", "max_tokens"),
    (chat("hi", max_tokens=250), 400, "context_length_exceeded", "max_tokens"),  # the context is 256 tokens
    (chat("the cat sat on the mat " * 60, max_tokens=None), 400, "context_length_exceeded", "messages"),
    (chat("hi", n=2), 400, "unsupported_value", "n"),
    (chat("hi", stop=[1, 2]), 422, "invalid_type", "stop"),
    (chat("x" * 3000), 413, "request_too_large", None),  # over this server's max_body_bytes
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(serve, body, status, code, param):
    server = serve(max_body_bytes=2000)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(f"{server.url}/v1/chat/completions", content=content,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert httpx.post(f"{server.url}/v1/chat/completions", json=chat("hi")).status_code == 200
    assert metric(server, "crucible_requests_total", status=str(status)) == 1
    assert metric(server, "crucible_request_errors_total") == 0  # the client's mistakes are not the version's


def test_concurrent_requests_are_batched_and_each_gets_its_own_greedy_answer(serve, engine):
    alone = {p: engine.generate([GenerationRequest(messages=[{"role": "user", "content": p}], max_new_tokens=12)],
                                batch_size=1)[0].text for p in PROMPTS}
    assert len(set(alone.values())) > 4  # the prompts lead to different answers
    server = serve(max_batch_size=8, max_wait_ms=50)
    barrier = threading.Barrier(len(PROMPTS))

    def ask(prompt: str) -> str:
        barrier.wait()
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=chat(prompt), timeout=30)
        return answer.json()["choices"][0]["message"]["content"]

    for _ in range(2):
        # A long request holds the worker, so the eight arrive while it runs and queue up for one batch.
        with ThreadPoolExecutor(len(PROMPTS) + 1) as pool:
            taken = metric(server, "crucible_batch_size_count")
            blocker = pool.submit(httpx.post, f"{server.url}/v1/completions", timeout=30,
                                  json={"model": "tiny", "prompt": "the cat", "max_tokens": 120, "temperature": 0})
            while metric(server, "crucible_batch_size_count") == taken:  # until the worker runs it
                time.sleep(0.005)
            assert dict(zip(PROMPTS, pool.map(ask, PROMPTS), strict=True)) == alone
            assert blocker.result().status_code == 200
    batches = metric(server, "crucible_batch_size_count")
    assert metric(server, "crucible_batch_size_sum") == 2 * (len(PROMPTS) + 1)
    assert metric(server, "crucible_batch_size_bucket", le="4.0") < batches  # some batches held 5 or more
    assert metric(server, "crucible_requests_total", route="/v1/chat/completions", status="200") == 16
    assert metric(server, "crucible_request_latency_seconds_count", route="/v1/chat/completions") == 16
    assert metric(server, "crucible_queue_depth") == 0
    usage = httpx.post(f"{server.url}/v1/chat/completions", json=chat("the cat")).json()["usage"]
    before = metric(server, "crucible_completion_tokens_total")
    httpx.post(f"{server.url}/v1/chat/completions", json=chat("the cat"))
    assert metric(server, "crucible_completion_tokens_total") - before == usage["completion_tokens"]


def test_a_lone_request_is_not_held_back_for_a_batch(serve):
    server = serve(max_wait_ms=2000)  # a full batch window would make this request two seconds late
    httpx.post(f"{server.url}/v1/chat/completions", json=chat("hi"))  # warm up
    started = time.perf_counter()
    assert httpx.post(f"{server.url}/v1/chat/completions", json=chat("hi")).status_code == 200
    assert time.perf_counter() - started < 1.0


def sse_texts(response: httpx.Response) -> tuple[str, list[dict]]:
    chunks = [json.loads(line[len("data: "):]) for line in response.text.splitlines()
              if line.startswith("data: ") and line != "data: [DONE]"]
    assert response.text.rstrip().endswith("data: [DONE]")
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]), chunks


def test_streamed_text_is_the_full_answer_cut_at_a_stop_string(serve, engine):
    server = serve()
    free = httpx.post(f"{server.url}/v1/chat/completions", json=chat("Question:", max_tokens=30)).json()
    text = free["choices"][0]["message"]["content"]
    assert len(text) > 8
    stop = text[4:7]
    cut = httpx.post(f"{server.url}/v1/chat/completions", json=chat("Question:", max_tokens=30, stop=stop)).json()
    assert cut["choices"][0]["message"]["content"] == text[:text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    for options in ({}, {"stop": stop}):
        whole = httpx.post(f"{server.url}/v1/chat/completions", json=chat("Question:", max_tokens=30, **options))
        streamed = httpx.post(f"{server.url}/v1/chat/completions",
                              json=chat("Question:", max_tokens=30, stream=True, **options))
        assert streamed.headers["content-type"].startswith("text/event-stream")
        joined, chunks = sse_texts(streamed)
        assert joined == whole.json()["choices"][0]["message"]["content"]
        pieces = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert len(pieces) > (1 if options else 5)  # text arrives as it is generated, not at the end
        assert chunks[-1]["choices"][0]["finish_reason"] == whole.json()["choices"][0]["finish_reason"]
        assert {c["id"] for c in chunks} == {f"chatcmpl-{streamed.headers[EVENT_HEADER]}"}


@pytest.mark.parametrize(("text", "stops", "sendable"), [
    ("hello wor", ("world",), "hello "),  # "wor" may become the stop: held back
    ("hello world and more", ("world",), "hello "),
    ("hello", (), "hello"),
    ("caf\ufffd", (), "caf"),  # half a multi-byte character: wait for the rest
    ("abcab", ("abd", "bx"), "abc"),
])
def test_streamable_length_holds_back_what_may_still_be_cut(text, stops, sendable):
    assert text[:streamable_length(text, stops)] == sendable


def test_planted_faults_fail_or_hang_generations_while_probes_still_answer(serve):
    broken = serve(fault="error")
    answer = httpx.post(f"{broken.url}/v1/chat/completions", json=chat("hi"))
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "injected_fault"
    streamed = httpx.post(f"{broken.url}/v1/chat/completions", json=chat("hi", stream=True))
    assert '"code":"injected_fault"' in streamed.text
    assert metric(broken, "crucible_request_errors_total", code="injected_fault") == 2
    assert httpx.get(f"{broken.url}/readyz").status_code == 200

    hung = serve(fault=FaultSpec.parse("hang"), drain_timeout_s=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{hung.url}/v1/chat/completions", json=chat("hi"), timeout=1.0)
    assert httpx.get(f"{hung.url}/healthz", timeout=2).status_code == 200
    started = time.perf_counter()
    hung.stop()
    assert time.perf_counter() - started < 10  # a hung generation does not keep the server from stopping
    with pytest.raises(ValueError, match="expected 'error'"):
        FaultSpec.parse("explode")


def test_every_answer_becomes_a_scrubbed_event_written_in_batches_and_flushed_on_stop(serve, tmp_path):
    lake = DeltaLake(tmp_path / "lake")
    events = EventBuffer(lake_writer(lake, source="server:test", user_key=b"secret"),
                         flush_interval_s=60)  # only stop() flushes
    server = serve(events=events, model_name="tiny", model_version=3, deployment="tiny-canary")
    ids = []
    for n in range(12):
        answer = httpx.post(f"{server.url}/v1/chat/completions", headers={"X-Session-Id": f"s{n % 2}"}, json=chat(
            f"question {n}: mail me at jane.doe{n}@example.com", user="u-17",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "earlier turn"},
                      {"role": "assistant", "content": "ok"},
                      {"role": "user", "content": f"question {n}: mail me at jane.doe{n}@example.com"}]))
        assert answer.json()["id"] == f"chatcmpl-{answer.headers[EVENT_HEADER]}"
        ids.append(answer.headers[EVENT_HEADER])
    streamed = httpx.post(f"{server.url}/v1/chat/completions", json=chat("streamed one", stream=True))
    ids.append(streamed.headers[EVENT_HEADER])
    listed = httpx.post(f"{server.url}/v1/completions", json={"model": "tiny", "prompt": ["a", "b"], "max_tokens": 4})
    ids += listed.headers[EVENT_HEADER].split(",")
    assert [c["event_id"] for c in listed.json()["choices"]] == ids[-2:]
    assert lake.read(INFERENCE_EVENTS).empty  # nothing is written per request
    server.stop()
    stored = lake.read(INFERENCE_EVENTS)
    assert sorted(stored["event_id"]) == sorted(ids)
    assert lake.version(INFERENCE_EVENTS) <= 1  # fifteen events: the table's creation and one insert
    mine = stored.set_index("event_id").loc[ids[:12]]
    assert list(mine["prompt"]) == [f"question {n}: mail me at [EMAIL]" for n in range(12)]  # the last user turn
    assert set(mine["model_version"]) == {3} and set(mine["deployment"]) == {"tiny-canary"}
    assert set(mine["session_id"]) == {"s0", "s1"} and (mine["latency_ms"] > 0).all()
    assert mine["user_id"].nunique() == 1 and "u-17" not in mine["user_id"].iloc[0]  # pseudonymized
    assert (mine["response_tokens"] > 0).all() and (mine["prompt_tokens"] > 10).all()


def test_events_that_cannot_be_written_are_spilled_and_ingested_later(serve, tmp_path):
    broken = DeltaLake(tmp_path / "broken")
    (tmp_path / "broken" / "feedback").mkdir(parents=True)
    (tmp_path / "broken" / INFERENCE_EVENTS.path).write_text("a file where the events table should be")
    events = EventBuffer(lake_writer(broken, source="server:test"), flush_interval_s=0.05,
                         spill_dir=tmp_path / "inbox")
    server = serve(events=events, model_version=1)
    ids = [httpx.post(f"{server.url}/v1/chat/completions", json=chat(f"q{n}")).headers[EVENT_HEADER] for n in range(5)]
    time.sleep(0.3)  # several flushes fail meanwhile; the server keeps answering
    assert httpx.post(f"{server.url}/v1/chat/completions", json=chat("still here")).status_code == 200
    events.close(timeout_s=0.5)
    stats = events.stats()
    assert stats.failed_writes >= 2 and stats.spilled == 6 and stats.pending == 0
    [spilled] = list((tmp_path / "inbox").glob("*.jsonl"))
    lake = DeltaLake(tmp_path / "lake")
    ingest_file(lake, spilled, scrubber=Scrubber(), user_key=None)
    assert set(ids) <= set(lake.read(INFERENCE_EVENTS)["event_id"])


def test_feedback_on_an_answer_reaches_the_signals_table(serve, tmp_path):
    from schemas import SIGNALS

    lake = DeltaLake(tmp_path / "lake")
    events = EventBuffer(lake_writer(lake, source="server:test"), flush_interval_s=60)
    server = serve(events=events, model_version=1, feedback_lake=lake)
    event_id = httpx.post(f"{server.url}/v1/chat/completions", json=chat("hi")).headers[EVENT_HEADER]
    answer = httpx.post(f"{server.url}/v1/feedback", json={"event_id": event_id, "signal": "thumbs_up"})
    assert answer.status_code in (200, 201, 202), answer.text
    signals = lake.read(SIGNALS)
    assert list(signals["event_id"]) == [event_id] and list(signals["signal"]) == ["thumbs_up"]
    assert event_id in set(lake.read(INFERENCE_EVENTS)["event_id"])  # written before its signal
    unknown = httpx.post(f"{server.url}/v1/feedback", json={"event_id": "never-served", "signal": "thumbs_down"})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_event"


def test_from_registry_serves_the_production_version(tmp_path, checkpoint):
    from crucible.registry.registry import VersionNotFound

    lake = DeltaLake(tmp_path / "lake")
    version = register_tiny(lake, checkpoint)
    server = ModelServer.from_registry(lake, "tiny", "production", record_events=False).start()
    try:
        server.wait_ready(60)
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert [(m["id"], m["version"]) for m in models] == [("tiny", version.version)]
        for name in ("tiny", f"tiny/v{version.version}"):
            assert httpx.post(f"{server.url}/v1/chat/completions", json=chat("hi", model=name)).status_code == 200
    finally:
        server.stop()
    with pytest.raises(VersionNotFound, match="alias 'champion'"):
        ModelServer.from_registry(lake, "tiny", "champion")
