"""Seeded monitoring data written into a real lake: training prompts, a day of served events, its
quality rows and its user signals."""

from __future__ import annotations

import datetime as dt
import json
import random

import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import store_validated
from schemas import EXAMPLES, INFERENCE_EVENTS, QUALITY, SIGNALS
from schemas.feedback import SIGNAL_WEIGHTS

TOPICS = ["apples", "trains", "marbles", "tickets", "cookies", "pencils", "stamps", "books"]


def question(rng: random.Random, extra_words: int = 0) -> str:
    a, b, topic = rng.randrange(2, 90), rng.randrange(2, 90), rng.choice(TOPICS)
    padding = " ".join(rng.choice(TOPICS) for _ in range(extra_words))
    return f"{padding} Sam has {a} {topic} and buys {b} more. How many {topic} does Sam have now?".strip()


def write_examples(lake: DeltaLake, count: int = 300, dataset: str = "prompts", seed: int = 0) -> None:
    rng = random.Random(seed)
    rows = [{"dataset": dataset, "split": "train", "example_id": f"{dataset}-{i}",
             "input": question(rng, rng.randrange(0, 6)), "target": "1", "messages": json.dumps([]),
             "metadata": "{}", "source": "test"} for i in range(count)]
    store_validated(lake, EXAMPLES, pd.DataFrame(rows), source="test examples")


def write_day(lake: DeltaLake, day: dt.date, count: int = 80, *, long_share: float = 0.0, slow: float = 0.0,
              model_version: int = 1, seed: int = 0, deployment: str = "prod") -> pd.DataFrame:
    """A day of served events; ``long_share`` of the prompts gain 60 words, ``slow`` adds latency."""
    rng = random.Random(f"{day}:{seed}")
    start, now = pd.Timestamp(day, tz="UTC"), pd.Timestamp.now(tz="UTC")
    rows = []
    for i in range(count):
        prompt = question(rng, rng.randrange(0, 6) + (60 if rng.random() < long_share else 0))
        rows.append({"event_id": f"{day}-{seed}-{i}", "day": day, "timestamp": start + pd.Timedelta(minutes=i),
                     "deployment": deployment, "model_name": "m", "model_version": model_version, "prompt": prompt,
                     "response": f"Sam has {rng.randrange(4, 180)} now.", "prompt_tokens": 20, "response_tokens": 6,
                     "latency_ms": max(rng.gauss(200 + slow, 20), 0.0), "pii_redactions": 0, "user_id": None,
                     "session_id": None, "source": "test", "ingested_at": now})
    # Only the columns of the table's current schema (other engineers evolve it).
    events = pd.DataFrame(rows)[[c for c in INFERENCE_EVENTS.columns if c in rows[0]]]
    store_validated(lake, INFERENCE_EVENTS, events, source="test traffic", replace_where={"day": day}, day=day)
    return events


def write_quality(lake: DeltaLake, events: pd.DataFrame, pass_share: float, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    now = pd.Timestamp.now(tz="UTC")
    rows = []
    for event in events.itertuples():
        passed = rng.random() < pass_share
        score = rng.uniform(0.8, 1.0) if passed else rng.uniform(0.1, 0.6)
        rows.append({"event_id": event.event_id, "day": event.day, "model_version": event.model_version,
                     "format_score": score, "length_score": 1.0, "refusal_score": 1.0, "repetition_score": 1.0,
                     "judge_score": None, "quality_score": score, "passed": passed,
                     "failed_checks": "" if passed else "format", "checked_at": now})
    frame = pd.DataFrame(rows)
    day = events["day"].iloc[0]
    store_validated(lake, QUALITY, frame, source="test quality", replace_where={"day": day}, day=day)
    return frame


def write_signals(lake: DeltaLake, events: pd.DataFrame, kinds: list[str]) -> pd.DataFrame:
    """One signal per event, cycling through ``kinds``."""
    now = pd.Timestamp.now(tz="UTC")
    rows = [{"signal_id": f"s{i}", "event_id": event.event_id, "day": event.day, "timestamp": event.timestamp,
             "signal": kinds[i % len(kinds)], "weight": SIGNAL_WEIGHTS[kinds[i % len(kinds)]],
             "edited_text": "Sam has 10 now." if kinds[i % len(kinds)] == "edit" else None, "source": "test",
             "ingested_at": now} for i, event in enumerate(events.itertuples())]
    frame = pd.DataFrame(rows)
    day = events["day"].iloc[0]
    store_validated(lake, SIGNALS, frame, source="test signals", replace_where={"day": day}, day=day)
    return frame
