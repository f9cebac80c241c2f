"""The router in front of real HTTP backends: weights, stickiness, retries on the stable version, streaming,
atomic switches under load, and its admin API."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest

from crucible.deploy.router import (
    BACKEND_HEADER,
    RETRIED_HEADER,
    RouteError,
    Router,
    RouterClient,
    RouteTable,
)
from tests.deploy.backends import Backend


def call(url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 20) -> tuple[int, dict, dict]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = json.dumps(body or {"prompt": "hi"}).encode()
    connection.request("POST", "/v1/completions", body=data, headers={"Content-Type": "application/json",
                                                                      **(headers or {})})
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    return response.status, payload, dict(response.getheaders())


def test_weights_split_traffic_and_a_zero_weight_gets_none():
    with Backend("a") as a, Backend("b") as b:
        table = RouteTable({"a": a.url, "b": b.url}, {"a": 70, "b": 30}, stable="a")
        with Router(table, seed=7) as router:
            seen = Counter(call(router.url)[1]["backend"] for _ in range(300))
            assert 170 <= seen["a"] <= 250 and seen["a"] + seen["b"] == 300
            router.set_routes(RouteTable({"a": a.url, "b": b.url}, {"a": 0, "b": 100}, stable="a"))
            assert {call(router.url)[1]["backend"] for _ in range(20)} == {"b"}
            stats = router.stats()
            assert stats.of("b")["requests"] == seen["b"] + 20 and stats.dropped == 0


def test_sticky_routing_keeps_a_session_on_one_backend():
    with Backend("a") as a, Backend("b") as b:
        table = RouteTable({"a": a.url, "b": b.url}, {"a": 50, "b": 50}, stable="a", sticky=True)
        with Router(table) as router:
            per_session = {s: {call(router.url, headers={"X-Session-Id": f"s{s}"})[1]["backend"] for _ in range(5)}
                           for s in range(20)}
            assert all(len(backends) == 1 for backends in per_session.values())
            assert {next(iter(b)) for b in per_session.values()} == {"a", "b"}  # sessions spread over both
            by_user = {call(router.url, body={"prompt": str(i), "user": "u1"})[1]["backend"] for i in range(5)}
            assert len(by_user) == 1  # the JSON user field decides when there is no session header


@pytest.mark.parametrize("mode", ["error", "hang", "dead"])
def test_a_failing_new_version_is_retried_on_the_stable_one_and_counted_against_it(mode):
    with Backend("stable") as stable, Backend("new", mode=mode if mode != "dead" else "ok", delay_s=5) as new:
        new_url = new.url
        if mode == "dead":
            new.server.shutdown()
            new.server.server_close()  # connection refused from now on
        table = RouteTable({"stable": stable.url, "new": new_url}, {"new": 100}, stable="stable",
                           timeouts={"new": 0.3})
        with Router(table) as router:
            started = time.monotonic()
            answers = [call(router.url) for _ in range(3)]
            assert [(s, p["backend"]) for s, p, _ in answers] == [(200, "stable")] * 3
            assert all(h[BACKEND_HEADER] == "stable" and h[RETRIED_HEADER] == "new" for _, _, h in answers)
            stats = router.stats()
            assert stats.of("new")["requests"] == 3 and stats.of("new")["errors"] == 3
            assert stats.of("new")["retried"] == 3 and stats.of("stable")["errors"] == 0 and stats.dropped == 0
            if mode == "hang":
                assert 0.9 <= time.monotonic() - started < 4  # three 0.3 s timeouts, not the backend's 5 s
                assert stats.of("new")["p99_ms"] >= 300


def test_the_stable_version_failing_reaches_the_client_and_counts():
    with Backend("stable", mode="error") as stable:
        with Router(RouteTable.single("stable", stable.url)) as router:
            status, payload, _ = call(router.url)
            assert status == 500 and "broken on purpose" in payload["error"]["message"]
            assert router.stats().of("stable")["errors"] == 1


def test_streaming_passes_through_chunk_by_chunk():
    with Backend("s", mode="stream") as backend:
        with Router(RouteTable.single("s", backend.url)) as router:
            parts = urlsplit(router.url)
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            connection.request("POST", "/v1/chat/completions", body=b"{}")
            response = connection.getresponse()
            assert response.getheader("Content-Type") == "text/event-stream"
            first = response.read1(65536)
            # The backend holds its last event until released: the first ones reached us before it ended.
            assert b'"index": 0' in first and b'"index": 2' not in first
            backend.release.set()
            rest = response.read()
            assert b'"index": 2' in first + rest
            connection.close()


def test_switching_tables_under_concurrent_load_drops_nothing():
    with Backend("a") as a, Backend("b") as b, Backend("broken", mode="error") as broken:
        backends = {"a": a.url, "b": b.url, "broken": broken.url}
        tables = [RouteTable(backends, {"a": 100 - p, "b": p, "broken": 10}, stable=s)
                  for p in (0, 10, 50, 90, 100) for s in ("a", "b")]
        with Router(tables[0]) as router:
            statuses: list[int] = []
            stop = threading.Event()

            def client() -> None:
                while not stop.is_set():
                    statuses.append(call(router.url)[0])

            threads = [threading.Thread(target=client) for _ in range(6)]
            for thread in threads:
                thread.start()
            for index in range(60):
                router.set_routes(tables[index % len(tables)])
                time.sleep(0.01)
            stop.set()
            for thread in threads:
                thread.join()
            assert len(statuses) > 60 and set(statuses) == {200}
            stats = router.stats()
            assert stats.dropped == 0 and stats.of("broken")["errors"] == stats.of("broken")["requests"] > 0


def test_admin_api_changes_routes_atomically_and_refuses_bad_tables():
    with Backend("a") as a, Backend("b") as b:
        with Router(RouteTable.single("a", a.url)) as router:
            client = RouterClient(router.url)
            client.set_routes(RouteTable({"a": a.url, "b": b.url}, {"b": 1}, stable="a", timeouts={"b": 2}))
            assert client.routes().percent("b") == 100 and client.routes().timeout("b") == 2
            assert call(router.url)[1]["backend"] == "b"
            assert client.stats(reset=True).of("b")["requests"] == 1
            assert client.stats().of("b")["requests"] == 0
            with pytest.raises(RouteError, match="HTTP 400.*unknown backends"):
                client._call("PUT", "/_router/routes", {"backends": {"a": a.url}, "weights": {"zz": 1}, "stable": "a"})
            assert client.routes().percent("b") == 100  # the refused table changed nothing


@pytest.mark.parametrize("table, message", [
    (dict(backends={"a": "http://127.0.0.1:1"}, weights={"a": 1}, stable="b"), "stable backend 'b'"),
    (dict(backends={"a": "http://127.0.0.1:1"}, weights={"a": 0}, stable="a"), "no backend has a positive weight"),
    (dict(backends={"a": "http://127.0.0.1:1"}, weights={"a": -1}, stable="a"), "finite and >= 0"),
    (dict(backends={"a": "127.0.0.1:1"}, weights={"a": 1}, stable="a"), "expected http://host:port"),
])
def test_route_table_refuses_what_cannot_route(table, message):
    with pytest.raises(RouteError, match=message):
        RouteTable(**table)
