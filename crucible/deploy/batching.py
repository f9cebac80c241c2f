"""Dynamic batching for the server: concurrent requests queue, and one worker thread runs them through the
engine as batches, with an optional chaos-testing fault planted in every generation."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crucible.inference import Generation, GenerationRequest, InferenceEngine

FAULT_KINDS = ("error", "hang", "slow")


class GenerationFault(RuntimeError):
    """A failure planted by ``--inject-fault error`` (chaos testing)."""


class BatcherStopped(RuntimeError):
    """The server stopped before this request was generated."""


@dataclass(frozen=True)
class FaultSpec:
    """A chaos-testing switch that plants a broken version: ``error`` (every generation fails; ``error:0.3``
    fails 30% of them), ``hang`` (generations never return until the server stops), ``slow:250`` (every
    batch takes 250 ms longer). Used to prove that rollouts roll back, never in production."""

    kind: str
    rate: float = 1.0
    delay_ms: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec | None:
        if not text:
            return None
        kind, _, argument = text.partition(":")
        try:
            if kind == "error":
                rate = float(argument) if argument else 1.0
                if 0 < rate <= 1:
                    return cls("error", rate=rate)
            elif kind == "hang" and not argument:
                return cls("hang")
            elif kind == "slow" and argument and float(argument) > 0:
                return cls("slow", delay_ms=float(argument))
        except ValueError:
            pass
        raise ValueError(f"fault {text!r}: expected 'error', 'error:RATE' (0 < RATE <= 1), 'hang' or 'slow:MS'")

    def __str__(self) -> str:
        if self.kind == "error":
            return "error" if self.rate == 1.0 else f"error:{self.rate:g}"
        return "hang" if self.kind == "hang" else f"slow:{self.delay_ms:g}"


@dataclass
class _Job:
    request: GenerationRequest
    future: Future
    on_token: Callable[[int], None] | None


class DynamicBatcher:
    """Runs queued generation requests as batches of at most ``max_batch_size`` on one worker thread.

    The worker starts a batch as soon as it is free. It holds it open (at most ``max_wait_ms``) only
    while fewer requests wait than its previous batch had: closed-loop clients come back together, so
    the next batch fills up, while a lone request never waits.
    """

    def __init__(self, max_batch_size: int = 8, max_wait_ms: float = 5.0, fault: FaultSpec | None = None,
                 on_batch: Callable[[int], None] | None = None, seed: int = 0) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"batcher: max_batch_size must be >= 1 and max_wait_ms >= 0, got {max_batch_size} "
                             f"and {max_wait_ms}")
        self.max_batch_size, self.max_wait_ms, self.fault = max_batch_size, max_wait_ms, fault
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._stopped = threading.Event()
        self._engine: InferenceEngine | None = None
        self._thread: threading.Thread | None = None
        self._last_batch = 1
        self._random = random.Random(seed)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def start(self, engine: InferenceEngine) -> None:
        self._engine = engine
        self._thread = threading.Thread(target=self._run, name="crucible-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None) -> Future:
        """Queue ``request``; the future gets its :class:`Generation`. ``on_token(token_id)`` streams it."""
        future: Future = Future()
        with self._ready:
            if self._stopped.is_set():
                raise BatcherStopped("the server is stopping; it takes no new requests")
            self._queue.append(_Job(request, future, on_token))
            self._ready.notify()
        return future

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the running batch, fail what still waits with :class:`BatcherStopped`, end the worker."""
        with self._ready:
            self._stopped.set()
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._ready:
            left, self._queue = list(self._queue), deque()
        for job in left:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherStopped("the server stopped before this request ran"))

    def _take(self) -> list[_Job]:
        with self._ready:
            while not self._queue and not self._stopped.is_set():
                self._ready.wait()
            if self._stopped.is_set():
                return []
            wanted = min(self.max_batch_size, self._last_batch)
            deadline = time.monotonic() + self.max_wait_ms / 1000
            while len(self._queue) < wanted and not self._stopped.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(left)
            count = min(self.max_batch_size, len(self._queue))
            jobs = [self._queue.popleft() for _ in range(count)]
        # A request whose caller gave up (a client that disconnected) is not generated.
        return [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while not self._stopped.is_set():
            jobs = self._take()
            if not jobs:
                continue
            self._last_batch = len(jobs)
            if self._on_batch is not None:
                self._on_batch(len(jobs))
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[_Job]) -> None:
        if self.fault is not None:
            jobs = self._plant_fault(jobs)
            if not jobs:
                return
        try:
            generations = self._generate(jobs)
        except Exception as error:  # noqa: BLE001 - one bad request must not fail its batch-mates: run each alone
            if len(jobs) == 1:
                self._fail(jobs, error)
                return
            for job in jobs:
                try:
                    job.future.set_result(self._generate([job])[0])
                except Exception as error:  # noqa: BLE001 - the caller turns it into an error response
                    job.future.set_exception(error)
            return
        for job, generation in zip(jobs, generations, strict=True):
            job.future.set_result(generation)

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            job.future.set_exception(error)

    def _generate(self, jobs: list[_Job]) -> list[Generation]:
        streams = {index: job.on_token for index, job in enumerate(jobs) if job.on_token is not None}

        def on_token(index: int, token: int) -> None:
            stream = streams.get(index)
            if stream is not None:
                stream(token)

        return self._engine.generate([job.request for job in jobs], batch_size=len(jobs),
                                     on_token=on_token if streams else None)

    def _plant_fault(self, jobs: list[_Job]) -> list[_Job]:
        """The jobs left to generate after the fault took its share."""
        fault = self.fault
        if fault.kind == "hang":
            self._stopped.wait()
            self._fail(jobs, BatcherStopped("generation hung (injected fault 'hang') until the server stopped"))
            return []
        if fault.kind == "slow":
            time.sleep(fault.delay_ms / 1000)
            return jobs
        failing = [job for job in jobs if self._random.random() < fault.rate]
        self._fail(failing, GenerationFault(f"injected fault '{fault}': generation failed on purpose"))
        return [job for job in jobs if job not in failing]
