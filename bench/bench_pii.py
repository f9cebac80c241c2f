"""Times the bulk PII paths (``Scrubber.scrub_column``, no object per clean row; ``scrub_many``, one object per
row) on 1,000,000 short feedback texts (about 5% holding PII) against the per-text path and a plain
``write_deltalake`` of the same column, after checking the bulk paths agree with ``scrub``.

Run: python bench/bench_pii.py [--rows N] [--pii-share 0.05]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

# The planted-PII generator lives with the tests; the benchmark reuses it rather than a second copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crucible.feedback.pii import Scrubber  # noqa: E402
from tests.feedback.pii_corpus import clean_corpus, corpus  # noqa: E402

_PROMPTS = (
    "How many apples does Tom have left after giving {n} to his sister?",
    "Summarise this paragraph in two sentences please.",
    "Write a Python function that returns the {n}th Fibonacci number.",
    "Thanks, that worked! Could you also explain why step {n} is needed?",
    "The answer should be {n}, not {m}. Can you check your arithmetic?",
    "Translate 'good morning' into French and Spanish.",
    "What changed between v2.{n}.0 and v2.{m}.1 of the library?",
    "My order arrived on 2024-03-{d:02d} but one item was missing.",
    "It costs ${n}.99, is there a discount for {m} units?",
)


def texts(rows: int, pii_share: float, seed: int = 0) -> list[str]:
    """Short feedback-like texts; ``pii_share`` of them are tickets, chats or logs with planted PII."""
    rng = random.Random(seed)
    with_pii = [line.text for line in corpus(seed, 5000)]
    look_alikes = [line.text for line in clean_corpus(seed + 1, 5000)]
    out = []
    for _ in range(rows):
        roll = rng.random()
        if roll < pii_share:
            out.append(rng.choice(with_pii))
        elif roll < pii_share + 0.05:
            out.append(rng.choice(look_alikes))
        else:
            out.append(rng.choice(_PROMPTS).format(n=rng.randrange(2, 99), m=rng.randrange(2, 99), d=rng.randrange(1, 29)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pii-share", type=float, default=0.05)
    args = parser.parse_args()
    import pyarrow as pa
    from deltalake import write_deltalake

    column = texts(args.rows, args.pii_share)
    scrubber = Scrubber()
    sample = column[:20_000]
    expected = [scrubber.scrub(t) for t in sample]
    assert scrubber.scrub_many(sample) == expected, "scrub_many and scrub disagree"
    assert scrubber.scrub_column(sample).texts == [e.text for e in expected], "scrub_column and scrub disagree"
    print(f"rows={args.rows:,} pii_share={args.pii_share} load_avg={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}")

    start = time.perf_counter()
    hits = scrubber.candidates(column)
    prefilter_s = time.perf_counter() - start
    start = time.perf_counter()
    scrubber.scrub_column(column)
    column_s = time.perf_counter() - start
    start = time.perf_counter()
    scrubbed = scrubber.scrub_many(column)
    bulk_s = time.perf_counter() - start
    start = time.perf_counter()
    for text in sample:
        scrubber.scrub(text)
    per_text_s = (time.perf_counter() - start) * len(column) / len(sample)
    with tempfile.TemporaryDirectory() as folder:
        table = pa.table({"text": pa.array(column)})
        start = time.perf_counter()
        write_deltalake(folder, table)
        write_s = time.perf_counter() - start

    redacted = sum(1 for s in scrubbed if s.redactions)
    print(f"pre-filter flags {len(hits) / len(column):.1%} of rows in {prefilter_s:.2f}s; {redacted:,} rows redacted")
    print(f"scrub_column         {column_s:6.2f}s  {len(column) / column_s:>12,.0f} rows/s")
    print(f"scrub_many           {bulk_s:6.2f}s  {len(column) / bulk_s:>12,.0f} rows/s")
    print(f"scrub per text (est) {per_text_s:6.2f}s  {len(column) / per_text_s:>12,.0f} rows/s")
    print(f"write_deltalake      {write_s:6.2f}s  {len(column) / write_s:>12,.0f} rows/s (same column, for scale)")
    print(f"speed-up over per-text: scrub_column {per_text_s / column_s:.1f}x, scrub_many {per_text_s / bulk_s:.1f}x; "
          f"scrub_column rows/s as a share of write_deltalake's: {write_s / column_s:.2f}")


if __name__ == "__main__":
    main()
