"""Times feedback ingestion (validation + PII scrubbing + pseudonymization + an insert-only Delta write) of
1,000,000 feedback-like rows against a plain ``write_deltalake`` of the same rows, in one run.

The floor (issue 11): ingestion reaches at least half the plain write's rows/s with the validated
detectors on. Both start from the same in-memory frame, as a batch file or an HTTP burst hands it over,
and write the same table layout (partitioned by ``day``); the plain write gets the ``day`` column for
free. Both writers are warmed up first, so neither pays Delta's first-call costs. For reading the result
the run also times a plain write of the stored rows themselves (Arrow, the table's 16 columns).

Run: python bench/bench_feedback_ingest.py [--rows N] [--pii-share 0.03] [--without-ids]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd

from crucible.feedback.ingest import ingest_events
from crucible.feedback.pii import Scrubber
from crucible.lake import DeltaLake
from schemas import INFERENCE_EVENTS

_PROMPTS = (
    "How many apples does Tom have left after giving {n} to his sister?",
    "Summarise this paragraph in two sentences please.",
    "Write a Python function that returns the {n}th Fibonacci number.",
    "The answer should be {n}, not {m}. Can you check your arithmetic?",
    "What changed between v2.{n}.0 and v2.{m}.1 of the library?",
    "My order arrived on 2024-03-{n:02d} but one item was missing, order 20231145{m}.",
)
_PII = (
    " You can reach me at jane.doe{n}@example.com if anything is unclear.",
    " Call me on +1 415-555-{n:04d} when you have the answer.",
    " My card 4111 1111 1111 1111 was charged twice, from IP 192.168.{m}.{n}.",
)
_RESPONSES = (
    "Tom has {n} apples left: he started with {m} and gave some away.",
    "Here is a summary in two sentences. The paragraph argues for smaller models.",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "You are right, the answer is {n}. I made an arithmetic slip in step {m}.",
)


def feedback_rows(rows: int, pii_share: float, with_ids: bool, seed: int = 0) -> pd.DataFrame:
    """Feedback-like events: ``pii_share`` of the prompts carry an email, a phone or a card and an IP."""
    rng = np.random.default_rng(seed)
    variants = 2000
    prompts = np.array([_PROMPTS[i % len(_PROMPTS)].format(n=i % 97, m=i % 89) for i in range(variants)],
                       dtype=object)
    with_pii = np.array([p + _PII[i % len(_PII)].format(n=i % 250, m=i % 200) for i, p in enumerate(prompts)],
                        dtype=object)
    responses = np.array([_RESPONSES[i % len(_RESPONSES)].format(n=i % 97, m=i % 13) for i in range(variants)],
                         dtype=object)
    pick = rng.integers(0, variants, rows)
    prompt = np.where(rng.random(rows) < pii_share, with_pii[pick], prompts[pick])
    seconds = rng.integers(0, 86_400, rows)
    stamps = (pd.Timestamp("2026-11-02", tz="UTC") + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.DataFrame({
        "deployment": "prod", "model_name": "crucible-tiny", "model_version": 3, "prompt": prompt,
        "response": responses[rng.integers(0, variants, rows)], "timestamp": np.asarray(stamps, dtype=object),
        "user": np.char.add("user-", rng.integers(0, 10_000, rows).astype(str)).astype(object),
        "session": np.char.add("s-", rng.integers(0, 200_000, rows).astype(str)).astype(object),
        "latency_ms": rng.gamma(2.0, 120.0, rows), "prompt_tokens": rng.integers(5, 200, rows),
        "response_tokens": rng.integers(1, 300, rows),
    })
    if with_ids:
        frame.insert(0, "event_id", np.char.add("ev-", np.arange(rows).astype(str)).astype(object))
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pii-share", type=float, default=0.03)
    parser.add_argument("--without-ids", action="store_true", help="derive every event id from its content")
    args = parser.parse_args()
    from deltalake import DeltaTable, write_deltalake

    frame = feedback_rows(args.rows, args.pii_share, with_ids=not args.without_ids)
    print(f"rows={args.rows:,} pii_share={args.pii_share} ids={'derived' if args.without_ids else 'given'} "
          f"load_avg={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}")
    # The table's layout: one partition per UTC day of the event, derived before the clock starts.
    plain_frame = frame.assign(day=pd.to_datetime(frame["timestamp"], utc=True).dt.date)
    with tempfile.TemporaryDirectory() as folder:
        warm = frame.head(1000)
        write_deltalake(f"{folder}/warm-plain", plain_frame.head(1000), partition_by=["day"])
        ingest_events(DeltaLake(f"{folder}/warm-lake"), warm, source="bench", scrubber=Scrubber(),
                      user_key=b"bench-key-" * 4)
        start = time.perf_counter()
        write_deltalake(f"{folder}/plain", plain_frame, partition_by=["day"])
        plain_s = time.perf_counter() - start

        lake = DeltaLake(f"{folder}/lake")
        start = time.perf_counter()
        result = ingest_events(lake, frame, source="bench", scrubber=Scrubber(), user_key=b"bench-key-" * 4)
        ingest_s = time.perf_counter() - start
        assert result.accepted == args.rows and result.rows_in == args.rows, result.summary()
        stored = lake.read(INFERENCE_EVENTS, columns=["prompt"])
        assert len(stored) == args.rows and not stored["prompt"].str.contains("@example.com").any()
        schema = INFERENCE_EVENTS.arrow_schema()
        stored_rows = DeltaTable(lake.uri(INFERENCE_EVENTS)).to_pyarrow_table().select(schema.names).cast(schema)
        start = time.perf_counter()
        write_deltalake(f"{folder}/stored-copy", stored_rows, partition_by=["day"])
        stored_s = time.perf_counter() - start
    # For reading the result: the share of the ingestion that is the scrubber's own pass over the texts.
    start = time.perf_counter()
    Scrubber().scrub_column([*frame["prompt"], *frame["response"]])
    scrub_s = time.perf_counter() - start
    print(f"plain write_deltalake  {plain_s:6.2f}s  {args.rows / plain_s:>12,.0f} rows/s  (the input frame, by day)")
    print(f"  for reading: write_deltalake of the stored rows (Arrow, 16 columns, by day) {stored_s:6.2f}s")
    print(f"ingest_events          {ingest_s:6.2f}s  {args.rows / ingest_s:>12,.0f} rows/s "
          f"({result.pii_redactions:,} values redacted: {result.pii_kinds})")
    print(f"  of which scrub_column over prompts+responses {scrub_s:6.2f}s; the rest (validation, ids, "
          f"pseudonyms, Arrow, insert) {ingest_s - scrub_s:6.2f}s")
    print(f"ratio (ingest rows/s / plain rows/s): {plain_s / ingest_s:.2f}  (floor 0.50)  "
          f"load_avg after={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
