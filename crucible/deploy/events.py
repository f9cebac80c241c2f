"""The server's event sink: every answered request becomes an inference event, buffered in memory and
written in batches by a background thread through the feedback layer's ingestion (which scrubs it).

Nothing is lost: a batch that fails to write stays buffered and is retried; on close the buffer is
flushed, and what still cannot be written is spilled to a JSONL file (the feedback inbox, which
``ingest_file`` reads) instead of being dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crucible.feedback.pii import Scrubber
    from crucible.lake import DeltaLake

log = logging.getLogger(__name__)

# write(records) stores one batch of event records or raises; the buffer retries what raised.
EventWriter = Callable[[Sequence[Mapping[str, Any]]], object]


def lake_writer(lake: DeltaLake, *, source: str, scrubber: Scrubber | None = None,
                user_key: bytes | None = None) -> EventWriter:
    """A writer that ingests event records into ``feedback/inference_events`` (and scrubs them) through
    :func:`crucible.feedback.ingest.ingest_events`. Without ``user_key`` user ids cannot be pseudonymized,
    so they are left out rather than stored or refused."""

    def write(records: Sequence[Mapping[str, Any]]) -> object:
        from crucible.feedback.ingest import ingest_events
        from crucible.feedback.pii import Scrubber

        rows = [dict(r) if user_key else {k: v for k, v in r.items() if k != "user"} for r in records]
        return ingest_events(lake, rows, source=source, scrubber=scrubber or Scrubber(), user_key=user_key)

    return write


@dataclass(frozen=True)
class SinkStats:
    submitted: int
    written: int
    pending: int
    failed_writes: int
    spilled: int


class EventBuffer:
    """Collects event records from request handlers and writes them in batches on its own thread.

    A batch is written every ``flush_interval_s`` or as soon as ``max_batch`` records wait, so a busy
    server makes one commit per batch, never one per request. ``submit`` never blocks on storage.
    """

    def __init__(self, write: EventWriter, *, flush_interval_s: float = 2.0, max_batch: int = 512,
                 spill_dir: str | Path | None = None, name: str = "events") -> None:
        if flush_interval_s <= 0 or max_batch < 1:
            raise ValueError(f"event buffer {name}: flush_interval_s must be > 0 and max_batch >= 1, got "
                             f"{flush_interval_s} and {max_batch}")
        self._write, self.flush_interval_s, self.max_batch = write, flush_interval_s, max_batch
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.name = name
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # One writer at a time: the flusher thread and an explicit flush() never interleave batches.
        self._writing = threading.Lock()
        self._closed = False
        self._submitted = self._written = self._failed_writes = self._spilled = 0
        self._thread: threading.Thread | None = None

    def start(self) -> EventBuffer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"crucible-{self.name}-flusher", daemon=True)
            self._thread.start()
        return self

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue one event record (it must carry its ``event_id``)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"event buffer {self.name} is closed; event {record.get('event_id')} was not taken")
            self._pending.append(dict(record))
            self._submitted += 1
            if len(self._pending) >= self.max_batch:
                self._wake.notify()

    def flush(self) -> int:
        """Write everything buffered now, on the caller's thread; returns how many records were written.
        Raises the writer's error after putting the records back (the flusher retries them)."""
        written = 0
        with self._writing:
            while True:
                with self._lock:
                    batch = self._pending[:self.max_batch]
                    del self._pending[:len(batch)]
                if not batch:
                    return written
                try:
                    self._write(batch)
                except Exception:
                    with self._lock:
                        self._pending[:0] = batch  # back in front: order is kept for the retry
                        self._failed_writes += 1
                    raise
                with self._lock:
                    self._written += len(batch)
                written += len(batch)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking events, write what is buffered (retrying until ``timeout_s``), and spill the rest."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            try:
                self.flush()
                return
            except Exception as error:  # noqa: BLE001 - any storage failure: retry, then spill
                if time.monotonic() + delay > deadline:
                    self._spill(error)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def stats(self) -> SinkStats:
        with self._lock:
            return SinkStats(self._submitted, self._written, len(self._pending), self._failed_writes, self._spilled)

    def _run(self) -> None:
        backoff = self.flush_interval_s
        while True:
            with self._lock:
                if not self._closed and len(self._pending) < self.max_batch:
                    self._wake.wait(backoff)
                if self._closed:
                    return  # close() writes the rest on its own thread, with its deadline
            try:
                self.flush()
                backoff = self.flush_interval_s
            except Exception as error:  # noqa: BLE001 - keep the records, retry later, keep serving
                log.warning("event buffer %s: writing %d events failed (%s); retrying", self.name,
                            self.stats().pending, error)
                backoff = min(backoff * 2, 30.0)

    def _spill(self, error: BaseException) -> None:
        with self._lock:
            records, self._pending = self._pending, []
        if not records:
            return
        if self.spill_dir is None:
            log.error("event buffer %s: %d events could not be written (%s) and there is no spill_dir; they are "
                      "lost", self.name, len(records), error)
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / f"{self.name}-unwritten-{uuid.uuid4().hex[:12]}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, default=str) + "\n")
        with self._lock:
            self._spilled += len(records)
        log.error("event buffer %s: %d events could not be written (%s); spilled to %s for ingest_file",
                  self.name, len(records), error, path)
