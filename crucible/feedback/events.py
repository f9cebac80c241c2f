"""Inference events: simulated user traffic for demos, and turning answers into scrubbed event rows."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Sequence

import pandas as pd

from crucible.feedback.pii import sanitize_pii
from crucible.inference import Generation

_CONTACT_LINES = (
    "You can reach me at {name}@example.com if anything is unclear.",
    "Call me on +1 415-555-{n:04d} when you have the answer.",
    "My number is (020) 7946 {n:04d}, my mail {name}.{n}@mail.example.org.",
    "Card 4111 1111 1111 1111 was charged twice (order #2024{n:04d}), refund to DE89 3704 0044 0532 0130 00.",
    "My SSN is 219-09-{n:04d}; the app logged my IP 198.51.100.23 at 14:35:09.",
    "Our key AKIAIOSFODNN7EXAMPLE leaked with header Authorization: Bearer tok_{n:04d}abcdefghij.",
)
_NAMES = ("jane.doe", "li.wei", "omar", "sofia_r", "k.tanaka")
_LONG_CONTEXT = ("Please think about every detail of the situation carefully before answering, and explain "
                 "how each quantity in the story relates to the others. ")


def simulated_prompts(pool: Sequence[str], day: dt.date, count: int, long_prompt_share: float = 0.0,
                      pii_share: float = 0.1, seed: int = 0) -> list[str]:
    """A day of user prompts drawn from ``pool``, deterministic for (day, seed).

    Some carry contact details (to exercise PII scrubbing); ``long_prompt_share`` of them carry a
    long preamble, which shifts the prompt-length distribution (a planted drift).
    """
    if not pool:
        raise ValueError("simulated_prompts: the prompt pool is empty")
    rng = random.Random(f"{day.isoformat()}:{seed}")
    prompts = []
    for _ in range(count):
        prompt = rng.choice(pool)
        if rng.random() < pii_share:
            line = rng.choice(_CONTACT_LINES).format(name=rng.choice(_NAMES), n=rng.randrange(10_000))
            prompt = f"{prompt} {line}"
        if rng.random() < long_prompt_share:
            prompt = _LONG_CONTEXT * 6 + prompt
        prompts.append(prompt)
    return prompts


def event_rows(day: dt.date, prompts: Sequence[str], generations: Sequence[Generation], model_name: str,
               model_version: int) -> pd.DataFrame:
    """Event rows for one day (``generations[i]`` answers ``prompts[i]``); ids are stable for
    (day, position), so re-running a day replaces it."""
    if len(prompts) != len(generations):
        raise ValueError(f"event_rows: {len(prompts)} prompts but {len(generations)} generations")
    start = pd.Timestamp(day, tz="UTC")
    rows = []
    for position, (asked, generation) in enumerate(zip(prompts, generations, strict=True)):
        prompt = sanitize_pii(asked)
        response = sanitize_pii(generation.text)
        event_id = hashlib.sha256(f"{day.isoformat()}:{position}".encode()).hexdigest()[:24]
        rows.append({
            "event_id": event_id, "day": day,
            "timestamp": start + pd.Timedelta(seconds=position * (86_400 // max(len(generations), 1))),
            "model_name": model_name, "model_version": model_version,
            "prompt": prompt.text, "response": response.text,
            "prompt_tokens": generation.prompt_tokens, "response_tokens": generation.completion_tokens,
            "latency_ms": generation.latency_ms, "pii_redactions": prompt.redactions + response.redactions,
        })
    return pd.DataFrame(rows)


def prompt_length(texts: Sequence[str]) -> list[int]:
    """The drift feature: prompt length in whitespace-separated words."""
    return [len(text.split()) for text in texts]
