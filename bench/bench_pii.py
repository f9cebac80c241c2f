"""Times the bulk PII paths (``Scrubber.scrub_column``, no object per clean row; ``scrub_many``, one object per
row) on 1,000,000 chat prompts and answers of 50-300 characters (4% holding PII, 5% holding look-alikes
such as Luhn-failing numbers, bad IBANs, dates and versions) against the per-text path and a plain
``write_deltalake`` of the same column in one run, after checking the bulk paths agree with ``scrub``.

Every row is a distinct text, the worst case for ``scrub_column`` (it scrubs each distinct flagged text once).

Run: python bench/bench_pii.py [--rows N] [--pii-share 0.04] [--look-alike-share 0.05]
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
from tests.feedback.pii_corpus import HARD_NEGATIVES, KINDS, planted_value  # noqa: E402

_SENTENCES = (
    "How many apples does Tom have left after giving {n} to his sister?",
    "Summarise this paragraph in two sentences please.",
    "Write a Python function that returns the {n}th Fibonacci number.",
    "Thanks, that worked! Could you also explain why step {n} is needed?",
    "The answer should be {n}, not {m}. Can you check your arithmetic?",
    "Translate 'good morning' into French and Spanish.",
    "Tom has {n} apples left: he started with {m} and gave some away.",
    "Here is a summary in two sentences. The paragraph argues for smaller models.",
    "You are right, the answer is {n}. I made an arithmetic slip in step {m}.",
    "Sure! First, install the package with pip, then import it at the top of your script.",
    "The function runs in O(n log n) time because the list is sorted once.",
    "Use a context manager so that the file is closed even when an exception is raised.",
    "I would recommend splitting the essay into {n} sections with a short introduction.",
    "In {y} the company sold {n},{m:03d} units, up {n}% from the year before.",
    "Can you rewrite this email so it sounds more polite?",
    "The meeting is at {h}:{n:02d} tomorrow, please bring the draft.",
    "My order arrived on {y}-0{h:d}-{n:02d} but one item was missing.",
    "It costs ${n}.99, is there a discount for {m} units?",
    "What changed between v2.{n}.0 and v2.{m}.1 of the library?",
)


def texts(rows: int, pii_share: float, look_alike_share: float, seed: int = 0) -> list[str]:
    """Distinct chat prompts and answers of 50-300 characters; ``pii_share`` of them carry a planted value of
    a random kind (with its label), ``look_alike_share`` a hard negative, each at a random sentence."""
    rng = random.Random(seed)
    negatives = sorted(HARD_NEGATIVES)
    out = []
    for _ in range(rows):
        parts: list[str] = []
        target, length = rng.randrange(50, 300), 0
        while length < target:
            sentence = rng.choice(_SENTENCES).format(n=rng.randrange(2, 99), m=rng.randrange(999),
                                                      y=rng.randrange(1990, 2026), h=rng.randrange(1, 10))
            parts.append(sentence)
            length += len(sentence) + 1
        roll = rng.random()
        if roll < pii_share:
            label, value, _ = planted_value(rng, rng.choice(KINDS))
            parts.insert(rng.randrange(len(parts) + 1), f"{label.capitalize()}{value}.")
        elif roll < pii_share + look_alike_share:
            parts.insert(rng.randrange(len(parts) + 1), f"See {HARD_NEGATIVES[rng.choice(negatives)](rng)} for details.")
        out.append(" ".join(parts))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pii-share", type=float, default=0.04)
    parser.add_argument("--look-alike-share", type=float, default=0.05)
    args = parser.parse_args()
    import pyarrow as pa
    from deltalake import write_deltalake

    generated = texts(args.rows, args.pii_share, args.look_alike_share)
    column = pa.array(generated, type=pa.large_string())
    scrubber = Scrubber()
    sample = generated[:20_000]
    expected = [scrubber.scrub(t) for t in sample]
    assert scrubber.scrub_many(sample) == expected, "scrub_many and scrub disagree"
    assert scrubber.scrub_column(sample).texts.to_pylist() == [e.text for e in expected], "scrub_column and scrub disagree"
    mean_chars = sum(map(len, sample)) / len(sample)
    print(f"rows={args.rows:,} mean_chars={mean_chars:.0f} pii_share={args.pii_share} "
          f"look_alike_share={args.look_alike_share} load_avg={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}")

    start = time.perf_counter()
    hits = scrubber.candidates(column)
    prefilter_s = time.perf_counter() - start
    start = time.perf_counter()
    done = scrubber.scrub_column(column)
    column_s = time.perf_counter() - start
    start = time.perf_counter()
    scrubber.scrub_many(generated)
    bulk_s = time.perf_counter() - start
    start = time.perf_counter()
    for text in sample:
        scrubber.scrub(text)
    per_text_s = (time.perf_counter() - start) * len(column) / len(sample)
    with tempfile.TemporaryDirectory() as folder:
        table = pa.table({"text": column})
        start = time.perf_counter()
        write_deltalake(folder, table)
        write_s = time.perf_counter() - start

    redacted = int((done.redactions > 0).sum())
    print(f"pre-filter flags {len(hits) / len(column):.1%} of rows in {prefilter_s:.2f}s; {redacted:,} rows redacted")
    print(f"scrub_column         {column_s:6.2f}s  {len(column) / column_s:>12,.0f} rows/s")
    print(f"scrub_many           {bulk_s:6.2f}s  {len(column) / bulk_s:>12,.0f} rows/s")
    print(f"scrub per text (est) {per_text_s:6.2f}s  {len(column) / per_text_s:>12,.0f} rows/s")
    print(f"write_deltalake      {write_s:6.2f}s  {len(column) / write_s:>12,.0f} rows/s (same column, for scale)")
    print(f"speed-up over per-text: scrub_column {per_text_s / column_s:.1f}x, scrub_many {per_text_s / bulk_s:.1f}x; "
          f"scrub_column rows/s as a share of write_deltalake's: {write_s / column_s:.2f}; "
          f"load_avg after={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
