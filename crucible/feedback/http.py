"""HTTP ingestion of feedback: pure handlers that any server mounts (the serving layer does), and a small
threaded server on 127.0.0.1 with ``POST /v1/events``, ``POST /v1/feedback`` and ``GET /healthz``.

Bodies: one JSON object, a JSON list of objects, ``{"events": [...]}`` / ``{"signals": [...]}``, or NDJSON
(one object per line). A body with any invalid record is refused whole with 400 and the problems,
naming each record ("event 3: timestamp 'soon' is not an ISO-8601 time"), so a client fixes and resends
it; nothing of it is written. The server batches event writes: request threads validate and scrub, and
one writer thread commits what accumulated (every ``max_wait_s``, or at ``max_rows``), so a burst of
single-event posts makes a few Delta commits, not one each. ``stop()`` writes what is pending.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from crucible.feedback.ingest import (
    IngestResult,
    PreparedEvents,
    UserKeyMissing,
    ingest_signals,
    prepare_events,
    signal_problems,
    store_prepared,
)
from crucible.feedback.pii import Scrubber

if TYPE_CHECKING:
    from crucible.lake import DeltaLake

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_PROBLEMS_SHOWN = 50


class BadRequest(ValueError):
    """A body that is not JSON, NDJSON or objects."""


def parse_records(payload: bytes | str | Mapping | list, *, what: str) -> list[Any]:
    """The records of a request body (see the module docstring); raises :class:`BadRequest` naming the problem."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadRequest(f"the body is not UTF-8 ({error})") from error
    if isinstance(payload, str):
        text = payload.strip()
        if not text:
            raise BadRequest(f"the body is empty; send a JSON object, a list of {what}, or NDJSON")
        try:
            payload = json.loads(text)
        except ValueError as whole:
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) < 2:
                raise BadRequest(f"the body is not JSON ({whole})") from whole
            payload = []
            for number, line in enumerate(lines, start=1):
                try:
                    payload.append(json.loads(line))
                except ValueError as error:
                    raise BadRequest(f"NDJSON line {number} is not JSON ({error})") from error
    if isinstance(payload, Mapping):
        nested = payload.get(what)
        payload = nested if isinstance(nested, list) and len(payload) == 1 else [payload]
    if not isinstance(payload, list):
        raise BadRequest(f"the body is a JSON {type(payload).__name__}; send an object, a list of {what}, or NDJSON")
    if not payload:
        raise BadRequest(f"the body holds no {what}")
    return payload


def _refused(problems: list[str], what: str) -> tuple[int, dict]:
    return 400, {"error": f"{len(problems)} invalid {what}; nothing was written", "problems": problems[:MAX_PROBLEMS_SHOWN]}


def handle_events(lake: DeltaLake, payload: bytes | str | Mapping | list, *, scrubber: Scrubber,
                  user_key: bytes | None = None, source: str = "http",
                  batcher: EventBatcher | None = None) -> tuple[int, dict]:
    """``POST /v1/events``: (status, JSON body). With a ``batcher`` the events are queued (202) and written
    with the next batch; without one they are written now (200, with the ingestion counts)."""
    try:
        records = parse_records(payload, what="events")
        prepared = prepare_events(records, source=source, scrubber=scrubber, user_key=user_key,
                                  labels=[f"event {i}" for i in range(len(records))])
    except BadRequest as error:
        return 400, {"error": str(error)}
    except UserKeyMissing as error:
        return 400, {"error": f"{error}; or send the events without 'user'"}
    if prepared.quarantined:
        return _refused(prepared.problems, "events")
    if batcher is not None:
        batcher.submit(prepared)
        return 202, {"queued": len(prepared.rows), "duplicates_in_body": prepared.batch_duplicates,
                     "event_ids": prepared.event_ids}
    result = store_prepared(lake, prepared)
    return 200, {**result.summary(), "event_ids": result.event_ids}


def handle_feedback(lake: DeltaLake, payload: bytes | str | Mapping | list, *, scrubber: Scrubber,
                    source: str = "http", before_write: Callable[[], object] | None = None) -> tuple[int, dict]:
    """``POST /v1/feedback``: signals on earlier events. 200 when all are stored (or were already); 422 when
    some name events that are not stored (those are quarantined, the rest stored). ``before_write`` runs
    first (a server writes its pending events, so a signal on a just-posted event finds it)."""
    try:
        records = parse_records(payload, what="signals")
    except BadRequest as error:
        return 400, {"error": str(error)}
    labels = [f"signal {i}" for i in range(len(records))]
    problems = signal_problems(records, labels)
    if problems:
        return _refused(problems, "signals")
    if before_write is not None:
        before_write()
    result = ingest_signals(lake, records, source=source, scrubber=scrubber, labels=labels)
    body = {**result.summary(), "event_ids": result.event_ids}
    if result.quarantined:
        return 422, {"error": f"{result.quarantined} signals name events that are not stored; they were "
                              f"quarantined and the others stored", **body}
    return 200, body


class EventBatcher:
    """Collects prepared events from request threads; a writer thread stores them together.

    A batch is written every ``max_wait_s`` or as soon as ``max_rows`` events wait. A failed write keeps
    its events pending and is retried on the next round; ``stop`` writes what is left and raises if it
    cannot, so nothing is dropped silently.
    """

    def __init__(self, lake: DeltaLake, *, max_rows: int = 5000, max_wait_s: float = 0.5) -> None:
        if max_rows < 1 or max_wait_s <= 0:
            raise ValueError(f"EventBatcher: max_rows must be >= 1 and max_wait_s > 0, got {max_rows}, {max_wait_s}")
        self.lake, self.max_rows, self.max_wait_s = lake, max_rows, max_wait_s
        self._pending: list[PreparedEvents] = []
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._writing = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.written = 0
        self.failed_writes = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return self._rows

    def start(self) -> EventBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="crucible-feedback-writer", daemon=True)
            self._thread.start()
        return self

    def submit(self, prepared: PreparedEvents) -> None:
        with self._lock:
            if self._stopping:
                raise RuntimeError("EventBatcher is stopped; the events were not taken")
            self._pending.append(prepared)
            self._rows += prepared.rows_in
            if self._rows >= self.max_rows:
                self._wake.notify()

    def flush(self) -> IngestResult | None:
        """Write everything pending now, on the caller's thread; None when nothing was pending."""
        with self._writing:
            with self._lock:
                batches, self._pending, rows = self._pending, [], self._rows
                self._rows = 0
            if not batches:
                return None
            try:
                result = store_prepared(self.lake, batches)
            except Exception:
                with self._lock:
                    self._pending[:0] = batches
                    self._rows += rows
                    self.failed_writes += 1
                raise
            self.commits += 1
            self.written += result.accepted
            return result

    def stop(self) -> None:
        """Stop the writer thread and write what is pending (raises when that write fails)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._stopping and self._rows < self.max_rows:
                    self._wake.wait(self.max_wait_s)
                if self._stopping:
                    return
            try:
                self.flush()
            except Exception as error:  # noqa: BLE001 - keep the events pending and keep serving
                log.warning("feedback writer: writing %d pending events failed (%s); retrying", self.pending, error)


class FeedbackServer:
    """A small standalone ingestion server (stdlib ``ThreadingHTTPServer``) on ``host``:``port`` (0 = any free)."""

    def __init__(self, lake: DeltaLake, host: str = "127.0.0.1", port: int = 0, *, scrubber: Scrubber | None = None,
                 user_key: bytes | None = None, source: str = "http", max_rows: int = 5000,
                 max_wait_s: float = 0.5) -> None:
        self.lake, self.host, self.port = lake, host, port
        self.scrubber = scrubber or Scrubber()
        self.user_key, self.source = user_key, source
        self.batcher = EventBatcher(lake, max_rows=max_rows, max_wait_s=max_wait_s)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FeedbackServer is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FeedbackServer:
        self.batcher.start()
        self._server = ThreadingHTTPServer((self.host, self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="crucible-feedback-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop taking requests, then write every pending event."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.batcher.stop()

    def route(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """(status, JSON body) of one request: the whole server minus the sockets."""
        if method == "GET" and path == "/healthz":
            return 200, {"status": "ok", "pending_events": self.batcher.pending, "commits": self.batcher.commits,
                         "written": self.batcher.written, "failed_writes": self.batcher.failed_writes}
        if method == "POST" and path == "/v1/events":
            return handle_events(self.lake, body, scrubber=self.scrubber, user_key=self.user_key, source=self.source,
                                 batcher=self.batcher)
        if method == "POST" and path == "/v1/feedback":
            return handle_feedback(self.lake, body, scrubber=self.scrubber, source=self.source,
                                   before_write=self.batcher.flush)
        known = {"/healthz": "GET", "/v1/events": "POST", "/v1/feedback": "POST"}
        if path in known:
            return 405, {"error": f"{method} {path} is not supported; use {known[path]}"}
        return 404, {"error": f"no route {path}; routes: POST /v1/events, POST /v1/feedback, GET /healthz"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body, default=str).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.close_connection = True
                    self._answer(413, {"error": f"the body has {length} bytes; the limit is {MAX_BODY_BYTES}: split "
                                                f"it into several requests"})
                    return
                body = self.rfile.read(length) if length else b""
                try:
                    status, answer = server.route(method, self.path.split("?", 1)[0], body)
                except Exception as error:  # noqa: BLE001 - a 500 with the reason beats a dropped connection
                    log.exception("feedback server: %s %s failed", method, self.path)
                    status, answer = 500, {"error": f"{type(error).__name__}: {error}"}
                self._answer(status, answer)

            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
                log.debug("feedback server: " + format, *args)

        return Handler
