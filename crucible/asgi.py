"""An ASGI app served by uvicorn on a thread of this process: the inference server and the review page."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


class ThreadedServer:
    """Listens on ``host:port`` (0 picks a free port) and serves ``app`` until :meth:`stop`."""

    def __init__(self, app: Any, host: str, port: int, *, name: str, backlog: int = 128,
                 graceful_shutdown_s: int | None = None) -> None:
        self.app, self.host, self.port, self.name = app, host, port, name
        self.backlog, self.graceful_shutdown_s = backlog, graceful_shutdown_s
        self._socket: socket.socket | None = None
        self._uvicorn: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._socket is None:
            raise RuntimeError(f"{self.name} is not started; call start() first")
        host, port = self._socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self, timeout_s: float = 30.0) -> ThreadedServer:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((self.host, self.port))
        except OSError as error:
            self._socket.close()
            self._socket = None
            raise RuntimeError(f"{self.name}: cannot listen on {self.host}:{self.port} ({error}); pick another "
                               f"port (0 picks a free one)") from error
        self._socket.listen(self.backlog)
        options = {} if self.graceful_shutdown_s is None else {"timeout_graceful_shutdown": self.graceful_shutdown_s}
        self._uvicorn = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                      lifespan="off", **options))
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._socket]},
                                        name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start listening on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self, join_s: float = 15.0) -> None:
        """Stop listening; requests in flight finish first (up to ``join_s``)."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            self._thread.join(join_s)
            self._uvicorn = None
        if self._socket is not None:
            self._socket.close()


def serve_until_signal(start: Callable[[], Any], stop: Callable[[], None], url: Callable[[], str],
                       on_listening: Callable[[str], None] | None = None) -> None:
    """Start, report the URL, serve until SIGTERM or SIGINT, then stop (main thread only)."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    start()
    if on_listening is not None:
        on_listening(url())
    while not stopping.wait(0.5):
        pass
    stop()
