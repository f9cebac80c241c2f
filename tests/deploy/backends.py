"""Small real HTTP backends for router and strategy tests: each answers with its name, or fails on purpose."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Backend:
    """An HTTP server on 127.0.0.1 in a thread. ``mode``: ok, error (500), hang (sleeps ``delay_s``), slow
    (answers after ``delay_s``), stream (chunked SSE, three events, the last after ``release`` is set)."""

    def __init__(self, name: str, mode: str = "ok", delay_s: float = 0.0) -> None:
        self.name, self.mode, self.delay_s = name, mode, delay_s
        self.release = threading.Event()
        self.hits = 0
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with backend._lock:
                    backend.hits += 1
                backend.handle(self, body)

            do_GET = do_POST  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def handle(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        if self.mode in ("hang", "slow"):
            time.sleep(self.delay_s)
        if self.mode == "error":
            self._json(request, 500, {"error": {"message": f"{self.name} broken on purpose"}})
        elif self.mode == "stream":
            request.send_response(200)
            request.send_header("Content-Type", "text/event-stream")
            request.send_header("Transfer-Encoding", "chunked")
            request.end_headers()
            for index in range(3):
                if index == 2:
                    self.release.wait(10)
                data = f"data: {json.dumps({'backend': self.name, 'index': index})}\n\n".encode()
                request.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                request.wfile.flush()
            request.wfile.write(b"0\r\n\r\n")
        else:
            self._json(request, 200, {"backend": self.name, "echo": body.decode() or None})

    @staticmethod
    def _json(request: BaseHTTPRequestHandler, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def __enter__(self) -> Backend:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
