"""The traffic router: an HTTP reverse proxy on 127.0.0.1 in front of served versions, with weights.

The route table (backends, weights, the stable backend, stickiness, per-backend timeouts) is replaced
atomically: a request reads the table once and keeps it, so a switch never sees half a table. A request
that fails on a non-stable backend (connection error, 5xx, timeout) before anything was sent back is
retried on the stable backend, so the client sees the stable answer, and the failure is counted
against the backend that failed. Streaming responses pass through chunk by chunk.

Admin API, on the router's own port: ``GET|PUT /_router/routes``, ``GET /_router/stats[?reset=1]``,
``GET /_router/healthz``. Run standalone with ``python -m crucible.deploy.router --port-file PATH``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

BACKEND_HEADER = "X-Crucible-Backend"
RETRIED_HEADER = "X-Crucible-Retried-From"
STICKY_HEADER = "X-Session-Id"
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
               "transfer-encoding", "upgrade", "host", "content-length"}
_LATENCY_SAMPLES = 10_000


class RouteError(ValueError):
    """A route table that cannot be applied (unknown backend, no positive weight, bad url)."""


@dataclass(frozen=True)
class RouteTable:
    """Where traffic goes: ``weights`` (any scale, e.g. percent) over ``backends`` (name -> base url).

    ``stable`` is the backend failed requests are retried on; ``sticky`` routes by a hash of the request
    (its ``X-Session-Id`` header, else its JSON ``user``, else its body) so a session keeps its backend;
    ``timeouts`` (seconds per backend, default ``default_timeout_s``) bound a hung backend.
    """

    backends: Mapping[str, str]
    weights: Mapping[str, float]
    stable: str
    sticky: bool = False
    timeouts: Mapping[str, float] = field(default_factory=dict)
    default_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.stable not in self.backends:
            raise RouteError(f"route table: stable backend {self.stable!r} is not one of the backends "
                             f"({', '.join(self.backends) or 'none'})")
        unknown = set(self.weights) - set(self.backends)
        if unknown:
            raise RouteError(f"route table: weights name unknown backends {sorted(unknown)}; backends: "
                             f"{', '.join(self.backends)}")
        if any(w < 0 or not math.isfinite(w) for w in self.weights.values()):
            raise RouteError(f"route table: weights must be finite and >= 0, got {dict(self.weights)}")
        if sum(self.weights.values()) <= 0:
            raise RouteError(f"route table: no backend has a positive weight ({dict(self.weights)})")
        for name, url in self.backends.items():
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname or not parts.port:
                raise RouteError(f"route table: backend {name!r} url {url!r}: expected http://host:port")

    @classmethod
    def single(cls, name: str, url: str, **options: Any) -> RouteTable:
        """All traffic to one backend."""
        return cls({name: url}, {name: 100.0}, name, **options)

    def percent(self, name: str) -> float:
        return 100.0 * self.weights.get(name, 0.0) / sum(self.weights.values())

    def timeout(self, name: str) -> float:
        return float(self.timeouts.get(name, self.default_timeout_s))

    def choose(self, point: float) -> str:
        """The backend owning ``point`` in [0, 1) of the cumulative weights (names in sorted order)."""
        total = sum(self.weights.values())
        edge = 0.0
        positive = [n for n in sorted(self.weights) if self.weights[n] > 0]
        for name in positive:
            edge += self.weights[name] / total
            if point < edge:
                return name
        return positive[-1]

    def to_json(self) -> dict[str, Any]:
        return {"backends": dict(self.backends), "weights": dict(self.weights), "stable": self.stable,
                "sticky": self.sticky, "timeouts": dict(self.timeouts), "default_timeout_s": self.default_timeout_s}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> RouteTable:
        try:
            return cls(backends=dict(payload["backends"]),
                       weights={k: float(v) for k, v in payload["weights"].items()}, stable=payload["stable"],
                       sticky=bool(payload.get("sticky", False)),
                       timeouts={k: float(v) for k, v in (payload.get("timeouts") or {}).items()},
                       default_timeout_s=float(payload.get("default_timeout_s", 60.0)))
        except (KeyError, TypeError, AttributeError) as error:
            raise RouteError(f"route table JSON: {type(error).__name__} {error}; expected backends, weights, "
                             f"stable[, sticky, timeouts, default_timeout_s]") from None


@dataclass
class BackendStats:
    """What one backend did since the last reset: requests, failures (each retried or not), latencies."""

    requests: int = 0
    errors: int = 0
    retried: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the latencies, nearest-rank; None with no samples."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "retried": self.retried,
                "error_rate": self.error_rate, "p50_ms": self.percentile_ms(0.5),
                "p99_ms": self.percentile_ms(0.99)}


@dataclass(frozen=True)
class RouterStats:
    """Per-backend figures plus requests no backend could answer (``dropped``: the client saw a 502)."""

    backends: dict[str, dict[str, Any]]
    dropped: int
    since: float

    def of(self, name: str) -> dict[str, Any]:
        return self.backends.get(name, BackendStats().summary())


class TrafficControl(Protocol):
    """What a rollout needs from a router, in process (:class:`Router`) or over HTTP (:class:`RouterClient`)."""

    @property
    def url(self) -> str: ...

    def set_routes(self, table: RouteTable) -> None: ...

    def routes(self) -> RouteTable: ...

    def stats(self, reset: bool = False) -> RouterStats: ...


class _Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.backends: dict[str, BackendStats] = {}
        self.dropped = 0
        self.since = time.time()

    def record(self, name: str, latency_ms: float, failed: bool, retried: bool = False) -> None:
        with self._lock:
            stats = self.backends.setdefault(name, BackendStats())
            stats.requests += 1
            stats.errors += int(failed)
            stats.retried += int(retried)
            if len(stats.latencies_ms) < _LATENCY_SAMPLES:
                stats.latencies_ms.append(latency_ms)

    def drop(self) -> None:
        with self._lock:
            self.dropped += 1

    def snapshot(self, reset: bool) -> RouterStats:
        with self._lock:
            snapshot = RouterStats({n: s.summary() for n, s in self.backends.items()}, self.dropped, self.since)
            if reset:
                self._reset()
            return snapshot


class _Failed(Exception):
    """A backend failed before any byte reached the client, so the request can go elsewhere."""


def sticky_point(headers: Mapping[str, str], body: bytes) -> float:
    """Where in [0, 1) a request falls for sticky routing: a hash of its session header, JSON ``user`` or body."""
    key = headers.get(STICKY_HEADER)
    if not key and body:
        try:
            payload = json.loads(body)
            key = payload.get("user") if isinstance(payload, dict) else None
        except ValueError:
            key = None
    digest = hashlib.sha256((str(key) if key else "").encode() or body).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RouterServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass  # one line per request on stderr would drown the processes' logs

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        router = self.server.router
        body = self._body()
        path = urlsplit(self.path).path
        if path.startswith("/_router/"):
            self._admin(router, path, body)
            return
        table = router.routes()  # read once: this request keeps this table even if a switch happens now
        point = sticky_point(self.headers, body) if table.sticky else router.random()
        chosen = table.choose(point)
        attempts = [chosen] if chosen == table.stable else [chosen, table.stable]
        for name in attempts:
            started = time.perf_counter()
            recorded: list[int] = []

            def record(status: int, name: str = name, started: float = started,
                       recorded: list[int] = recorded) -> None:
                # Recorded before the answer reaches the client, so stats read after an answer include it.
                # A 5xx reaches the client only from the stable backend (nothing left to retry on); it counts.
                recorded.append(status)
                router.metrics.record(name, (time.perf_counter() - started) * 1000, failed=status >= 500)

            try:
                self._forward(table, name, body, chosen if name != chosen else None, record)
            except _Failed as failure:
                router.metrics.record(name, (time.perf_counter() - started) * 1000, failed=True,
                                      retried=name != attempts[-1])
                last = str(failure)
                continue
            except (ConnectionError, TimeoutError, OSError):
                # The client went away or the backend broke mid-stream: nothing can be retried now.
                if not recorded:
                    router.metrics.record(name, (time.perf_counter() - started) * 1000, failed=True)
                self.close_connection = True
            return
        router.metrics.drop()
        self._reply(502, {"error": {"message": f"router: no backend answered ({last})", "type": "bad_gateway",
                                    "code": 502}})

    def _admin(self, router: Router, path: str, body: bytes) -> None:
        if path == "/_router/healthz":
            self._reply(200, {"status": "ok"})
        elif path == "/_router/routes" and self.command == "GET":
            self._reply(200, router.routes().to_json())
        elif path == "/_router/routes" and self.command == "PUT":
            try:
                router.set_routes(RouteTable.from_json(json.loads(body or b"{}")))
            except (RouteError, ValueError) as error:
                self._reply(400, {"error": {"message": str(error), "type": "invalid_request_error"}})
                return
            self._reply(200, router.routes().to_json())
        elif path == "/_router/stats":
            stats = router.stats(reset="reset=1" in (urlsplit(self.path).query or ""))
            self._reply(200, asdict(stats))
        else:
            self._reply(404, {"error": {"message": f"router admin: no route {self.command} {path}"}})

    def _forward(self, table: RouteTable, name: str, body: bytes, retried_from: str | None,
                 record: Callable[[int], None]) -> None:
        """Send the request to backend ``name`` and its answer to the client; ``record(status)`` once the
        backend has answered in full (for a stream: once it ended)."""
        target = urlsplit(table.backends[name])
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = target.netloc
        if body:
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=table.timeout(name))
        try:
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                raise _Failed(f"{name}: {type(error).__name__}: {error}") from None
            if response.status >= 500 and name != table.stable:
                response.read()
                raise _Failed(f"{name}: HTTP {response.status}")
            streamed = response.getheader("Content-Length") is None
            if not streamed:
                try:
                    payload = response.read()
                except (OSError, http.client.HTTPException) as error:
                    raise _Failed(f"{name}: {type(error).__name__} reading the body: {error}") from None
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header(BACKEND_HEADER, name)
            if retried_from:
                self.send_header(RETRIED_HEADER, retried_from)
            if not streamed:
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                record(response.status)
                self.wfile.write(payload)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while chunk := response.read1(65536):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            record(response.status)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            connection.close()


class _RouterServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        self.router = router
        super().__init__(address, _Handler)


class Router:
    """The router in this process: ``Router(table).start()`` serves on ``.url`` until ``.stop()``."""

    def __init__(self, table: RouteTable, host: str = "127.0.0.1", port: int = 0, seed: int | None = None) -> None:
        import random

        self._table = table
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self.metrics = _Metrics()
        self._server = _RouterServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def random(self) -> float:
        with self._lock:
            return self._random.random()

    def routes(self) -> RouteTable:
        return self._table

    def set_routes(self, table: RouteTable) -> None:
        # One reference assignment: requests already routed keep the table they read.
        self._table = table

    def stats(self, reset: bool = False) -> RouterStats:
        return self.metrics.snapshot(reset)

    def start(self) -> Router:
        self._thread = threading.Thread(target=self._server.serve_forever, name="crucible-router", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RouterClient:
    """A router in another process, driven through its admin API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self.timeout = timeout

    @property
    def url(self) -> str:
        return self._url

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self._url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RouteError(f"router {self._url}{path}: HTTP {error.code}: {error.read().decode()}") from None

    def routes(self) -> RouteTable:
        return RouteTable.from_json(self._call("GET", "/_router/routes"))

    def set_routes(self, table: RouteTable) -> None:
        self._call("PUT", "/_router/routes", table.to_json())

    def stats(self, reset: bool = False) -> RouterStats:
        payload = self._call("GET", "/_router/stats" + ("?reset=1" if reset else ""))
        return RouterStats(payload["backends"], int(payload["dropped"]), float(payload["since"]))


def main(argv: list[str] | None = None) -> None:
    """Run a router process: the initial table from ``--routes`` (JSON file) or one ``--backend NAME=URL``."""
    parser = argparse.ArgumentParser(prog="python -m crucible.deploy.router", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--routes", help="a JSON file holding the initial route table")
    parser.add_argument("--backend", help="NAME=URL: all traffic to one backend")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    if args.routes:
        table = RouteTable.from_json(json.loads(Path(args.routes).read_text()))
    elif args.backend and "=" in args.backend:
        name, url = args.backend.split("=", 1)
        table = RouteTable.single(name, url)
    else:
        parser.error("give --routes FILE or --backend NAME=URL")
    router = Router(table, args.host, args.port)
    if args.port_file:
        # Written atomically so a reader never sees a half-written port.
        temporary = Path(f"{args.port_file}.tmp")
        temporary.write_text(str(router.url.rsplit(":", 1)[1]))
        temporary.replace(args.port_file)
    router.serve_forever()


if __name__ == "__main__":
    main()
