"""Simulated user traffic for demos and tests: prompts, the model's answers as event records, and user
signals that follow answer quality, all deterministic for (day, seed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from crucible.feedback.pii import sanitize_pii
from crucible.inference import Generation

SIMULATED_DEPLOYMENT = "simulation"
_CONTACT_LINES = (
    "You can reach me at {name}@example.com if anything is unclear.",
    "Call me on +1 415-555-{n:04d} when you have the answer.",
    "My number is (020) 7946 {n:04d}, my mail {name}.{n}@mail.example.org.",
)
_NAMES = ("jane.doe", "li.wei", "omar", "sofia_r", "k.tanaka")
_LONG_CONTEXT = ("Please think about every detail of the situation carefully before answering, and explain "
                 "how each quantity in the story relates to the others. ")


@dataclass(frozen=True)
class SimulatedRequest:
    """A simulated user's prompt and the position in the pool it was drawn from (to find its reference)."""

    prompt: str
    pool_index: int


def simulated_requests(pool: Sequence[str], day: dt.date, count: int, long_prompt_share: float = 0.0,
                       pii_share: float = 0.1, seed: int = 0) -> list[SimulatedRequest]:
    """A day of user prompts drawn from ``pool``, deterministic for (day, seed).

    Some carry contact details (to exercise PII scrubbing); ``long_prompt_share`` of them carry a
    long preamble, which shifts the prompt-length distribution (a planted drift).
    """
    if not pool:
        raise ValueError("simulated_prompts: the prompt pool is empty")
    rng = random.Random(f"{day.isoformat()}:{seed}")
    requests = []
    for _ in range(count):
        index = rng.randrange(len(pool))
        prompt = pool[index]
        if rng.random() < pii_share:
            line = rng.choice(_CONTACT_LINES).format(name=rng.choice(_NAMES), n=rng.randrange(10_000))
            prompt = f"{prompt} {line}"
        if rng.random() < long_prompt_share:
            prompt = _LONG_CONTEXT * 2 + prompt  # long, yet within a tiny model's 512-token context
        requests.append(SimulatedRequest(prompt, index))
    return requests


def simulated_prompts(pool: Sequence[str], day: dt.date, count: int, long_prompt_share: float = 0.0,
                      pii_share: float = 0.1, seed: int = 0) -> list[str]:
    """The prompts of :func:`simulated_requests`."""
    return [r.prompt for r in simulated_requests(pool, day, count, long_prompt_share, pii_share, seed)]


def simulated_event_id(day: dt.date, position: int) -> str:
    """Stable for (day, position), so a re-simulated day has the same ids."""
    return hashlib.sha256(f"{day.isoformat()}:{position}".encode()).hexdigest()[:24]


def _timestamp(day: dt.date, position: int, count: int) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(seconds=position * (86_400 // max(count, 1)))


def event_records(day: dt.date, prompts: Sequence[str], generations: Sequence[Generation], model_name: str,
                  model_version: int, deployment: str = SIMULATED_DEPLOYMENT) -> list[dict]:
    """Raw event records for ``ingest_events`` (not scrubbed: ingestion scrubs), ``generations[i]``
    answering ``prompts[i]``; ids are stable for (day, position)."""
    if len(prompts) != len(generations):
        raise ValueError(f"event_records: {len(prompts)} prompts but {len(generations)} generations")
    return [{"event_id": simulated_event_id(day, position), "deployment": deployment, "model_name": model_name,
             "model_version": model_version, "prompt": asked, "response": generation.text,
             "timestamp": _timestamp(day, position, len(prompts)).isoformat(),
             "prompt_tokens": generation.prompt_tokens, "response_tokens": generation.completion_tokens,
             "latency_ms": generation.latency_ms}
            for position, (asked, generation) in enumerate(zip(prompts, generations, strict=True))]


def event_rows(day: dt.date, prompts: Sequence[str], generations: Sequence[Generation], model_name: str,
               model_version: int, deployment: str = SIMULATED_DEPLOYMENT, source: str = "simulation") -> pd.DataFrame:
    """INFERENCE_EVENTS rows for one day, scrubbed (for tests and fixtures that write the table directly;
    ingestion goes through ``crucible.feedback.ingest``)."""
    now = pd.Timestamp.now(tz="UTC")
    rows = []
    for record in event_records(day, prompts, generations, model_name, model_version, deployment):
        prompt, response = sanitize_pii(record["prompt"]), sanitize_pii(record["response"])
        rows.append({**record, "day": day, "timestamp": pd.Timestamp(record["timestamp"]), "prompt": prompt.text,
                     "response": response.text, "pii_redactions": prompt.redactions + response.redactions,
                     "user_id": None, "session_id": None, "source": source, "ingested_at": now})
    return pd.DataFrame(rows)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def answer_is_right(response: str, reference: str | None) -> bool:
    """The simulated user's judgement: the reference's final number appears in the answer (or, without a
    reference, the answer is a short non-empty text)."""
    if reference:
        wanted = _NUMBER.findall(reference.replace(",", ""))
        if wanted:
            return wanted[-1] in _NUMBER.findall(response.replace(",", ""))
        return reference.strip().lower() in response.lower()
    words = len(response.split())
    return 0 < words <= 80


def simulated_signals(records: Sequence[dict], references: Sequence[str | None], seed: int = 0) -> list[list[dict]]:
    """Signals of simulated users on each record, deterministic per event id: right answers get thumbs up,
    copies and shares; wrong ones thumbs down, regenerations, reports and edits to the reference answer
    ("The answer is 42."), so curation has edits and positive examples to pick from."""
    if len(records) != len(references):
        raise ValueError(f"simulated_signals: {len(records)} records but {len(references)} references")
    out = []
    for record, reference in zip(records, references, strict=True):
        rng = random.Random(f"{record['event_id']}:{seed}")
        picked: list[tuple[str, str | None]] = []
        if answer_is_right(record["response"], reference):
            picked += [(signal, None) for signal, chance in (("thumbs_up", 0.5), ("copy", 0.25), ("share", 0.05))
                       if rng.random() < chance]
        else:
            picked += [(signal, None) for signal, chance in (("thumbs_down", 0.3), ("regenerate", 0.2),
                                                             ("report", 0.02)) if rng.random() < chance]
            numbers = _NUMBER.findall((reference or "").replace(",", ""))
            if numbers and rng.random() < 0.15:
                picked.append(("edit", f"The answer is {numbers[-1]}."))
        start = pd.Timestamp(record["timestamp"])
        out.append([{"signal": signal, "timestamp": (start + pd.Timedelta(seconds=5 + 10 * k)).isoformat(),
                     **({"edited_text": edited} if edited else {})} for k, (signal, edited) in enumerate(picked)])
    return out


def prompt_length(texts: Sequence[str]) -> list[int]:
    """The drift feature: prompt length in whitespace-separated words."""
    return [len(text.split()) for text in texts]
