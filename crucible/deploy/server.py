"""The inference server: one registered version behind an OpenAI-compatible HTTP API, with dynamic batching,
readiness, Prometheus metrics, and every answered request recorded as an inference event.

Routes: ``POST /v1/chat/completions`` (``stream: true`` answers with server-sent events), ``POST
/v1/completions``, ``GET /v1/models``, ``POST /v1/feedback`` (signals on earlier answers, through the feedback
layer), ``GET /healthz`` (liveness: the process answers), ``GET /readyz`` (200 only once the model is
loaded; it loads in the background), ``GET /metrics`` (Prometheus).

Events: an answered request becomes one event per prompt, with the deployment, model name and version,
the latency the server measured, token counts, the OpenAI ``user`` field and the ``X-Session-Id`` header.
Its ``prompt`` is what the user wrote: the last user turn of a chat (the earlier turns and the rendered
chat format are not stored; curation turns prompts into training examples in whatever format a later
run uses), or the prompt string of a completion. The event id goes back to the client as the completion
id (``chatcmpl-<event_id>``, ``cmpl-<event_id>``) and in the ``X-Crucible-Event-Id`` header (comma-separated
for several prompts), so that it can post feedback on the answer later. Failed requests are not events:
they are counted in /metrics.

Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 malformed JSON,
unsupported options, too many tokens (``context_length_exceeded``); 404 unknown model; 413 a body over
``max_body_bytes``; 422 missing fields or wrong types; 500 a failed generation; 503 not ready or stopping.

Chaos testing: ``fault`` (``crucible serve --inject-fault``) plants a broken version on purpose, see
:class:`crucible.deploy.batching.FaultSpec`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from crucible.asgi import ThreadedServer, serve_until_signal
from crucible.deploy.batching import BatcherStopped, DynamicBatcher, FaultSpec, GenerationFault
from crucible.deploy.events import EventBuffer, lake_writer
from crucible.inference.engine import Generation, GenerationRequest, InferenceEngine

if TYPE_CHECKING:
    from crucible.feedback.pii import Scrubber
    from crucible.lake import DeltaLake
    from crucible.registry.storage import ArtifactStore

log = logging.getLogger(__name__)

EVENT_HEADER = "X-Crucible-Event-Id"
SESSION_HEADER = "X-Session-Id"
# Routes that are API traffic; probes and scrapes are left out of the request counters, so that an
# error rate computed from /metrics is about answers.
_API_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback")
_MAX_STOPS = 16


class APIError(Exception):
    """A request the server refuses, as OpenAI's error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse({"error": self.body()}, status_code=self.status, headers=headers)

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


# -- request parsing ------------------------------------------------------------------------------

_MISSING = object()


def _field(body: Mapping[str, Any], name: str, kinds: tuple[type, ...], what: str, default: Any = _MISSING) -> Any:
    """``body[name]`` checked against ``kinds`` (bool is never a number); 422 when missing or mistyped."""
    value = body.get(name, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise APIError(422, f"'{name}' is required", param=name, code="missing_required_parameter")
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise APIError(422, f"'{name}' must be {what}, got {json.dumps(value)[:80]}", param=name, code="invalid_type")
    return value


def _number_in(body: Mapping[str, Any], name: str, default: float, low: float, high: float,
               low_open: bool = False) -> float:
    value = float(_field(body, name, (int, float), "a number", default))
    if value > high or value < low or (low_open and value == low):
        bound = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise APIError(400, f"'{name}' must be in {bound}, got {value:g}", param=name, code="invalid_value")
    return value


def _stops(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise APIError(422, "'stop' must be a string or a list of strings", param="stop", code="invalid_type")
    if len(stops) > _MAX_STOPS:
        raise APIError(400, f"'stop' has {len(stops)} sequences; at most {_MAX_STOPS}", param="stop",
                       code="invalid_value")
    return tuple(s for s in stops if s)


def _unsupported(body: Mapping[str, Any]) -> None:
    n = _field(body, "n", (int,), "an integer", 1)
    if n != 1:
        raise APIError(400, f"'n' must be 1 (one choice per prompt), got {n}", param="n", code="unsupported_value")
    for name in ("logprobs", "tools", "functions"):
        value = body.get(name)
        if value not in (None, False, [], 0):
            raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise APIError(400, "'best_of' must be 1", param="best_of", code="unsupported_value")


def _message_text(index: int, content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"messages[{index}].content: only text parts ({{'type': 'text', 'text': ...}}) "
                                    "are supported", param=f"messages[{index}].content", code="unsupported_value")
            texts.append(part["text"])
        return "".join(texts)
    raise APIError(422, f"messages[{index}].content must be a string or a list of text parts",
                   param=f"messages[{index}].content", code="invalid_type")


def _messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    raw = _field(body, "messages", (list,), "a list of messages")
    if not raw:
        raise APIError(422, "'messages' must hold at least one message", param="messages",
                       code="missing_required_parameter")
    messages = []
    for index, message in enumerate(raw):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise APIError(422, f"messages[{index}] must be an object with a string 'role'",
                           param=f"messages[{index}]", code="invalid_type")
        role = "system" if message["role"] == "developer" else message["role"]
        messages.append({"role": role, "content": _message_text(index, message.get("content"))})
    return messages


@dataclass(frozen=True)
class _Call:
    """One parsed API request: a generation request per prompt and what its answer and event need."""

    requests: tuple[GenerationRequest, ...]
    prompts: tuple[str, ...]  # what each event stores as its prompt
    stream: bool
    include_usage: bool
    echo: bool
    user: str | None


# -- metrics --------------------------------------------------------------------------------------


class ServerMetrics:
    """The server's Prometheus metrics, in a registry of its own (several servers may share a process).

    ``crucible_requests_total{route,status}`` counts API requests (not probes); ``crucible_request_errors_total``
    counts the server's own failures (5xx), since a bad request is the client's error, not the version's.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("crucible_requests", "API requests by route and status.", ["route", "status"],
                                registry=r)
        self.errors = Counter("crucible_request_errors", "Failed API requests (5xx) by route and code.",
                              ["route", "code"], registry=r)
        self.latency = Histogram("crucible_request_latency_seconds", "API request latency, to the last byte.",
                                 ["route"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.prompt_tokens = Counter("crucible_prompt_tokens", "Prompt tokens of answered requests.", registry=r)
        self.completion_tokens = Counter("crucible_completion_tokens", "Generated tokens.", registry=r)
        self.batch_size = Histogram("crucible_batch_size", "Requests per engine batch.", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.queue_depth = Gauge("crucible_queue_depth", "Requests waiting for a batch.", registry=r)
        self.ready = Gauge("crucible_model_ready", "1 once the model is loaded and serving.", registry=r)
        self.events_pending = Gauge("crucible_events_pending", "Inference events not yet written.", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _MetricsMiddleware:
    """Counts and times every API request to its last byte (a stream included)."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = scope.get("path", "") if scope["type"] == "http" else ""
        if route not in _API_ROUTES:
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


# -- streaming text -------------------------------------------------------------------------------


def streamable_length(text: str, stops: tuple[str, ...]) -> int:
    """How much of ``text`` (the decoded completion so far) can be sent: up to the first stop string,
    holding back an end that may be the start of a stop string or an unfinished multi-byte character."""
    cut = min((text.find(s) for s in stops if s in text), default=len(text))
    text = text[:cut]
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    end = len(text) - hold
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    return end


def _sse(payload: Mapping[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


# -- the server -----------------------------------------------------------------------------------


class ModelServer:
    """One model behind the OpenAI-compatible API, in this process: ``.start()`` serves on ``.url`` (uvicorn
    in a thread) until ``.stop()``; ``serve_forever()`` does the same until SIGTERM/SIGINT (the CLI).

    ``engine`` is an engine or a function that loads one; a function runs in the background after
    ``start()``, and /readyz answers 503 until it returns. ``events`` receives an inference event per
    answered prompt (None records nothing); ``feedback_lake`` enables ``POST /v1/feedback``.
    """

    def __init__(self, engine: InferenceEngine | Callable[[], InferenceEngine], *, model_id: str,
                 model_name: str | None = None, model_version: int | None = None, deployment: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, events: EventBuffer | None = None,
                 feedback_lake: DeltaLake | None = None, scrubber: Scrubber | None = None,
                 max_batch_size: int = 8, max_wait_ms: float = 5.0, fault: FaultSpec | str | None = None,
                 default_max_tokens: int = 256, max_body_bytes: int = 1_000_000, drain_timeout_s: float = 10.0) -> None:
        if events is not None and model_version is None:
            raise ValueError(f"server {model_id}: recording events needs model_version (the registered version)")
        self.model_id = model_id
        self.model_name = model_name or model_id
        self.model_version = model_version
        self.deployment = deployment or model_id
        self.host, self._port = host, port
        self.events, self.feedback_lake, self._scrubber = events, feedback_lake, scrubber
        self.fault = FaultSpec.parse(fault) if isinstance(fault, str) else fault
        self.default_max_tokens, self.max_body_bytes, self.drain_timeout_s = (default_max_tokens, max_body_bytes,
                                                                              drain_timeout_s)
        self.metrics = ServerMetrics()
        self.batcher = DynamicBatcher(max_batch_size, max_wait_ms, self.fault,
                                      on_batch=self.metrics.batch_size.observe)
        self.metrics.queue_depth.set_function(lambda: self.batcher.queue_depth)
        if events is not None:
            self.metrics.events_pending.set_function(lambda: events.stats().pending)
        self._load = (lambda: engine) if isinstance(engine, InferenceEngine) else engine
        self.engine: InferenceEngine | None = None
        self.load_error: str | None = None
        self._stopping = False
        self._created = int(time.time())
        self._names = {model_id, self.model_name}
        if model_version is not None:
            self._names.add(f"{self.model_name}/v{model_version}")
        self.app = _MetricsMiddleware(self._build_app(), self.metrics)
        self._http = ThreadedServer(self.app, host, port, name=f"server {model_id}", backlog=2048,
                                    graceful_shutdown_s=max(1, int(drain_timeout_s)))
        self._loader: threading.Thread | None = None

    @classmethod
    def from_registry(cls, lake: DeltaLake, model_name: str, ref: int | str = "production", *,
                      store: ArtifactStore | None = None, cache_dir: str | Path | None = None, device: str = "cpu",
                      renderer: str | None = None, record_events: bool = True, scrubber: Scrubber | None = None,
                      user_key: bytes | None = None, spill_dir: str | Path | None = None,
                      flush_interval_s: float = 2.0, **options: Any) -> ModelServer:
        """Serve version ``ref`` of ``model_name`` (a number, ``"production"``/``"staging"``, an alias or
        ``"latest"``) from its checkpoint artifact; its events go to this lake's feedback tables.

        The version is resolved now (an unknown model or version raises at once); the weights load in
        the background after ``start()``. A checkpoint in a remote store (s3://, hf://) is fetched into
        ``cache_dir`` first, checked against its sha256.
        """
        from crucible.registry.registry import read_version

        version = read_version(lake, model_name, ref)
        artifact_uri, sha256 = version.artifact_uri, version.sha256

        def load() -> InferenceEngine:
            folder = _local_checkpoint(artifact_uri, sha256, store, cache_dir)
            engine = InferenceEngine.from_checkpoint(folder, device=device, renderer=renderer)
            engine.name = f"{model_name}/v{version.version}"
            return engine

        options.setdefault("model_id", model_name)
        events = None
        if record_events:
            deployment = options.get("deployment") or options["model_id"]
            events = EventBuffer(lake_writer(lake, source=f"server:{deployment}", scrubber=scrubber,
                                             user_key=user_key),
                                 flush_interval_s=flush_interval_s, spill_dir=spill_dir, name=f"{deployment}-events")
        return cls(load, model_name=model_name, model_version=version.version, events=events, feedback_lake=lake,
                   scrubber=scrubber, **options)

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._http.url

    @property
    def ready(self) -> bool:
        return self.engine is not None and not self._stopping

    def start(self, timeout_s: float = 30.0) -> ModelServer:
        """Listen on ``host:port`` (0 picks a free port, see ``url``) and load the model in the background."""

        if self.events is not None:
            self.events.start()
        self._loader = threading.Thread(target=self._load_engine, name="crucible-model-loader", daemon=True)
        self._loader.start()
        self._http.start(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> ModelServer:
        """Block until the model is loaded; raises when loading failed or took longer than ``timeout_s``."""
        if self._loader is None:
            raise RuntimeError(f"server {self.model_id} is not started; call start() first")
        self._loader.join(timeout_s)
        if self.load_error is not None:
            raise RuntimeError(f"server {self.model_id}: loading the model failed: {self.load_error}")
        if self.engine is None:
            raise TimeoutError(f"server {self.model_id}: the model was not loaded after {timeout_s:.0f}s")
        return self

    def stop(self) -> None:
        """Stop taking requests, let running ones finish (up to ``drain_timeout_s``), write buffered events."""
        self._stopping = True
        self.metrics.ready.set(0)
        self._http.stop(self.drain_timeout_s + 10)
        self.batcher.stop()
        if self.events is not None:
            self.events.close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, on_listening: Callable[[str], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully (for ``crucible serve``; main thread only)."""
        serve_until_signal(self.start, self.stop, lambda: self.url, on_listening)

    def _load_engine(self) -> None:
        try:
            engine = self._load()
        except Exception as error:  # noqa: BLE001 - reported by /readyz and wait_ready, the process keeps living
            log.exception("server %s: loading the model failed", self.model_id)
            self.load_error = f"{type(error).__name__}: {error}"
            return
        self.batcher.start(engine)
        self.engine = engine
        self.metrics.ready.set(1)

    # -- the app ----------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/feedback", self._feedback, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "model": self.model_id, "version": self.model_version})
        status = "stopping" if self._stopping else "failed" if self.load_error else "loading"
        return JSONResponse({"status": status, "error": self.load_error}, status_code=503)

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{
            "id": self.model_id, "object": "model", "created": self._created, "owned_by": "crucible",
            "model_name": self.model_name, "version": self.model_version,
            "max_model_len": self.engine.max_length if self.engine is not None else None}]})

    async def _chat(self, request: Request) -> Response:
        return await self._answer(request, chat=True)

    async def _completions(self, request: Request) -> Response:
        return await self._answer(request, chat=False)

    async def _answer(self, request: Request, chat: bool) -> Response:
        started, received = time.perf_counter(), dt.datetime.now(dt.UTC)
        try:
            body = await self._json_body(request)
            self._check_model(body)
            engine = self._serving_engine()
            call = self._parse(body, engine, chat)
        except APIError as error:
            return self._error(request, error)
        event_ids = [uuid.uuid4().hex for _ in call.requests]
        session = request.headers.get(SESSION_HEADER)
        headers = {EVENT_HEADER: ",".join(event_ids)}
        if call.stream:
            stream = self._stream(request.url.path, call, event_ids, chat, started, received, session)
            return StreamingResponse(stream, media_type="text/event-stream", headers={**headers,
                                                                                      "Cache-Control": "no-cache"})
        try:
            futures = [self.batcher.submit(r) for r in call.requests]
            generations = [await asyncio.wrap_future(f) for f in futures]
        except Exception as error:  # noqa: BLE001 - every failure becomes an OpenAI error body
            return self._error(request, self._generation_error(error))
        latency_ms = (time.perf_counter() - started) * 1000
        for event_id, prompt, generation in zip(event_ids, call.prompts, generations, strict=True):
            self._record(event_id, prompt, generation, received, latency_ms, call.user, session)
        return JSONResponse(self._completion_body(call, event_ids, generations, chat), headers=headers)

    async def _json_body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(413, f"request body of {declared} bytes is over the limit of {self.max_body_bytes}",
                           code="request_too_large")
        raw = await request.body()
        if len(raw) > self.max_body_bytes:
            raise APIError(413, f"request body of {len(raw)} bytes is over the limit of {self.max_body_bytes}",
                           code="request_too_large")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise APIError(400, f"the request body is not valid JSON ({error})", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(422, "the request body must be a JSON object", code="invalid_type")
        return body

    def _check_model(self, body: Mapping[str, Any]) -> None:
        model = _field(body, "model", (str,), "a string")
        if model not in self._names:
            raise APIError(404, f"the model '{model}' does not exist here; this server serves '{self.model_id}' "
                                "(see GET /v1/models)", param="model", code="model_not_found")

    def _serving_engine(self) -> InferenceEngine:
        if self._stopping:
            raise APIError(503, "the server is stopping", type_="server_error", code="server_stopping")
        if self.engine is None:
            reason = f"loading it failed: {self.load_error}" if self.load_error else "it is still loading"
            raise APIError(503, f"the model is not ready ({reason})", type_="server_error", code="model_not_ready")
        return self.engine

    def _parse(self, body: Mapping[str, Any], engine: InferenceEngine, chat: bool) -> _Call:
        _unsupported(body)
        temperature = _number_in(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number_in(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
        seed = _field(body, "seed", (int,), "an integer", None)
        stream = _field(body, "stream", (bool,), "a boolean", False)
        options = _field(body, "stream_options", (dict,), "an object", {})
        user = _field(body, "user", (str,), "a string", None)
        echo = False if chat else _field(body, "echo", (bool,), "a boolean", False)
        limit_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        max_tokens = _field(body, limit_name, (int,), "an integer", None)
        if max_tokens is not None and max_tokens < 1:
            raise APIError(400, f"'{limit_name}' must be at least 1, got {max_tokens}", param=limit_name,
                           code="invalid_value")
        base = GenerationRequest(prompt="", temperature=temperature, top_p=top_p, seed=seed, stop=_stops(body))
        if chat:
            messages = _messages(body)
            users = [m["content"] for m in messages if m["role"] == "user"]
            shapes = [(replace(base, prompt=None, messages=messages), users[-1] if users else messages[-1]["content"],
                       "messages")]
        else:
            prompt = _field(body, "prompt", (str, list), "a string or a list of strings")
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise APIError(422, "'prompt' must be a string or a non-empty list of strings (token ids are not "
                                    "supported)", param="prompt", code="invalid_type")
            shapes = [(replace(base, prompt=p), p, "prompt") for p in prompts]
        requests = []
        for request, _, param in shapes:
            try:
                prompt_tokens = engine.prompt_length(request)
            except ValueError as error:
                raise APIError(400, str(error), param=param, code="invalid_value") from None
            room = engine.max_length - prompt_tokens
            wanted = max_tokens if max_tokens is not None else min(self.default_max_tokens, room)
            if prompt_tokens == 0:
                raise APIError(400, f"the {param} encode to no tokens", param=param, code="invalid_value")
            if wanted > room or wanted < 1:
                raise APIError(400, f"this model's maximum context length is {engine.max_length} tokens; you "
                                    f"requested {prompt_tokens + wanted} ({prompt_tokens} in the {param}, {wanted} "
                                    "in the completion). Shorten the input or lower max_tokens.",
                               param=param if max_tokens is None else limit_name, code="context_length_exceeded")
            requests.append(replace(request, max_new_tokens=wanted))
        return _Call(tuple(requests), tuple(p for _, p, _ in shapes), stream,
                     bool(options.get("include_usage")), echo, user)

    def _error(self, request: Request, error: APIError) -> JSONResponse:
        if error.status >= 500:
            self.metrics.errors.labels(request.url.path, error.code or error.type).inc()
        return error.response()

    @staticmethod
    def _generation_error(error: BaseException) -> APIError:
        if isinstance(error, GenerationFault):
            return APIError(500, str(error), type_="server_error", code="injected_fault")
        if isinstance(error, BatcherStopped):
            return APIError(503, str(error), type_="server_error", code="server_stopping")
        if isinstance(error, ValueError):
            return APIError(400, str(error), code="invalid_value")
        log.exception("generation failed", exc_info=error)
        return APIError(500, f"generation failed: {type(error).__name__}: {error}", type_="server_error",
                        code="generation_failed")

    def _completion_body(self, call: _Call, event_ids: list[str], generations: list[Generation],
                         chat: bool) -> dict[str, Any]:
        usage = {"prompt_tokens": sum(g.prompt_tokens for g in generations),
                 "completion_tokens": sum(g.completion_tokens for g in generations)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if chat:
            choices = [{"index": 0, "message": {"role": "assistant", "content": generations[0].text},
                        "logprobs": None, "finish_reason": generations[0].finish_reason}]
            kind, prefix = "chat.completion", "chatcmpl"
        else:
            choices = [{"index": i, "text": (r.prompt if call.echo else "") + g.text, "logprobs": None,
                        "finish_reason": g.finish_reason, "event_id": event_id}
                       for i, (r, g, event_id) in enumerate(zip(call.requests, generations, event_ids, strict=True))]
            kind, prefix = "text_completion", "cmpl"
        return {"id": f"{prefix}-{event_ids[0]}", "object": kind, "created": int(time.time()), "model": self.model_id,
                "choices": choices, "usage": usage}

    async def _stream(self, route: str, call: _Call, event_ids: list[str], chat: bool, started: float, received: dt.datetime,
                      session: str | None) -> AsyncIterator[bytes]:
        """Server-sent events: a chunk per piece of text as tokens come out of the batch, the finish reason,
        usage when ``stream_options.include_usage``, then ``[DONE]``. A failure is sent as an error event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        futures = []
        try:
            for index, request in enumerate(call.requests):
                def on_token(token: int, index: int = index) -> None:
                    loop.call_soon_threadsafe(queue.put_nowait, (index, token))

                future = self.batcher.submit(request, on_token)
                future.add_done_callback(lambda _, index=index: loop.call_soon_threadsafe(queue.put_nowait,
                                                                                          (index, done)))
                futures.append(future)
        except Exception as error:  # noqa: BLE001 - sent as an error event
            yield self._stream_error(route, error)
            return
        kind, prefix = ("chat.completion.chunk", "chatcmpl") if chat else ("text_completion", "cmpl")
        head = {"id": f"{prefix}-{event_ids[0]}", "object": kind, "created": int(time.time()), "model": self.model_id}

        def chunk(index: int, text: str | None, finish: str | None = None) -> bytes:
            if chat:
                delta = {} if text is None else {"content": text}
                choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
            return _sse({**head, "choices": [choice]})

        if chat:
            yield _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}]})
        tokenizer = self.engine.tokenizer
        ids: list[list[int]] = [[] for _ in call.requests]
        sent = ["" for _ in call.requests]
        if call.echo:
            for index, request in enumerate(call.requests):
                yield chunk(index, request.prompt)
        finished = 0
        while finished < len(call.requests):
            index, item = await queue.get()
            if item is done:
                finished += 1
                continue
            ids[index].append(item)
            text = tokenizer.decode(ids[index], skip_special_tokens=True)
            end = streamable_length(text, call.requests[index].stop)
            if end > len(sent[index]) and text.startswith(sent[index]):
                piece, sent[index] = text[len(sent[index]):end], text[:end]
                yield chunk(index, piece)
        generations = []
        for future in futures:
            error = future.exception()
            if error is not None:
                yield self._stream_error(route, error)
                return
            generations.append(future.result())
        latency_ms = (time.perf_counter() - started) * 1000
        for index, generation in enumerate(generations):
            if generation.text.startswith(sent[index]) and len(generation.text) > len(sent[index]):
                yield chunk(index, generation.text[len(sent[index]):])
            yield chunk(index, None, generation.finish_reason)
            self._record(event_ids[index], call.prompts[index], generation, received, latency_ms, call.user, session)
        if call.include_usage:
            prompt_tokens = sum(g.prompt_tokens for g in generations)
            completion_tokens = sum(g.completion_tokens for g in generations)
            yield _sse({**head, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                         "completion_tokens": completion_tokens,
                                                         "total_tokens": prompt_tokens + completion_tokens}})
        yield _sse("[DONE]")

    def _stream_error(self, route: str, error: BaseException) -> bytes:
        """An error after the 200 went out: an error event (the OpenAI client raises it), counted as an error."""
        refusal = self._generation_error(error)
        if refusal.status >= 500:
            self.metrics.errors.labels(route, refusal.code or refusal.type).inc()
        return _sse({"error": refusal.body()})

    def _record(self, event_id: str, prompt: str, generation: Generation, received: dt.datetime, latency_ms: float,
                user: str | None, session: str | None) -> None:
        self.metrics.prompt_tokens.inc(generation.prompt_tokens)
        self.metrics.completion_tokens.inc(generation.completion_tokens)
        if self.events is None:
            return
        self.events.submit({
            "event_id": event_id, "deployment": self.deployment, "model_name": self.model_name,
            "model_version": self.model_version, "prompt": prompt, "response": generation.text,
            "timestamp": received.isoformat(), "latency_ms": round(latency_ms, 3),
            "prompt_tokens": generation.prompt_tokens, "response_tokens": generation.completion_tokens,
            "user": user, "session": session,
        })

    async def _feedback(self, request: Request) -> Response:
        """Signals on earlier answers (thumbs, edits, ...), through the feedback layer's handler. The events
        buffered here are written first, so a signal on a just-answered request finds its event."""
        from crucible.feedback.http import handle_feedback
        from crucible.feedback.pii import Scrubber

        try:
            body = await self._json_body(request)
        except APIError as error:
            return self._error(request, error)
        if self.feedback_lake is None:
            return self._error(request, APIError(404, "this server records no feedback (it has no lake)",
                                                 code="feedback_disabled"))
        status, answer = await run_in_threadpool(handle_feedback, self.feedback_lake, body,
                                                 scrubber=self._scrubber or Scrubber(),
                                                 source=f"server:{self.deployment}", before_write=self._write_events)
        if status >= 400 and isinstance(answer.get("error"), str):
            code = "unknown_event" if status == 422 else "invalid_value"
            answer = {**answer, "error": APIError(status, answer["error"], code=code).body()}
        return JSONResponse(answer, status_code=status)

    def _write_events(self) -> None:
        if self.events is None:
            return
        try:
            self.events.flush()
        except Exception as error:  # noqa: BLE001 - the events stay buffered; the signals are still taken
            log.warning("server %s: writing events before feedback failed (%s)", self.model_id, error)


def _local_checkpoint(uri: str, sha256: str, store: ArtifactStore | None, cache_dir: str | Path | None) -> Path:
    """The checkpoint folder of an artifact URI: a local path as it is, else fetched (and verified) into the cache."""
    if "://" not in uri or uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    from crucible.lake import default_home
    from crucible.registry.storage import artifact_store

    target = Path(cache_dir or Path(default_home()) / "serving_cache") / sha256
    if target.exists():
        return target
    return (store or artifact_store(uri)).get(uri, target, sha256)
