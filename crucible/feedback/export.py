"""Export of curated feedback: SFT examples as JSONL, Parquet or a Hugging Face ``datasets`` folder, and
preference pairs (a user's or reviewer's edit over the original; a thumbs-up answer over a thumbs-down one)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crucible.feedback.curation import is_training_target, normalized_text
from crucible.lake import DeltaLake
from schemas import CURATED, FEEDBACK_PAIRS

EXPORT_FORMATS = ("jsonl", "parquet", "hf")
# Thumbs pairs per prompt at most: every up x down combination of a popular prompt would swamp the rest.
MAX_THUMBS_PAIRS_PER_PROMPT = 4


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: str
    rows: int


def pair_id(source: str, chosen_event_id: str, rejected_event_id: str, chosen: str) -> str:
    """Stable for the same pair, so re-building the pairs of a window replaces rather than adds."""
    text = "\x00".join([source, chosen_event_id, rejected_event_id, chosen])
    return "pair-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _count(signals_agg: pd.DataFrame, signal: str) -> pd.Series:
    """The per-event count of ``signal`` in ``aggregate_signals`` output (0 when the column is absent)."""
    for column in (signal, f"n_{signal}"):
        if column in signals_agg.columns:
            return signals_agg[column].fillna(0).astype(int)
    return pd.Series(0, index=signals_agg.index)


def build_preference_pairs(events: pd.DataFrame, signals_agg: pd.DataFrame | None, *,
                           curated: pd.DataFrame | None = None, reviews: pd.DataFrame | None = None,
                           now: pd.Timestamp | None = None) -> pd.DataFrame:
    """FeedbackPairsSchema rows from a window's events (INFERENCE_EVENTS rows) and their aggregated signals.

    - ``edit``: a user's latest edit is chosen over the model's answer; so is a reviewer's edit of a curated
      example (``curated`` and ``reviews`` given), whose rejected side is the event's original answer.
    - ``thumbs``: for each prompt (compared after normalising case and spaces), an answer with thumbs up and
      no thumbs down is chosen over an answer with thumbs down, up to ``MAX_THUMBS_PAIRS_PER_PROMPT``.
    """
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    rows: list[dict] = []
    by_event = events.drop_duplicates("event_id").set_index("event_id")

    def add(source: str, prompt: str, chosen: str, rejected: str, chosen_event: str, rejected_event: str,
            day) -> None:
        if not chosen.strip() or not rejected.strip() or normalized_text(chosen) == normalized_text(rejected):
            return
        rows.append({"pair_id": pair_id(source, chosen_event, rejected_event, chosen), "prompt": prompt,
                     "chosen": chosen, "rejected": rejected, "source": source, "chosen_event_id": chosen_event,
                     "rejected_event_id": rejected_event, "day": day, "created_at": now})

    agg = signals_agg if signals_agg is not None else pd.DataFrame(columns=["event_id"])
    agg = agg[agg["event_id"].isin(by_event.index)]
    if "edited_text" in agg.columns:
        for event_id, edited in zip(agg["event_id"], agg["edited_text"], strict=True):
            if isinstance(edited, str):
                event = by_event.loc[event_id]
                add("edit", event["prompt"], edited, event["response"], event_id, event_id, event["day"])
    if curated is not None and reviews is not None and len(curated) and len(reviews):
        latest = reviews.sort_values("decided_at", kind="stable").groupby("example_id").tail(1)
        edits = latest[(latest["decision"] == "edit") & latest["edited_response"].notna()]
        merged = edits.merge(curated[["example_id", "event_id"]], on="example_id")
        for row in merged.itertuples():
            if row.event_id in by_event.index:
                event = by_event.loc[row.event_id]
                add("edit", event["prompt"], row.edited_response, event["response"], row.event_id, row.event_id,
                    event["day"])
    if len(agg):
        ups, downs = _count(agg, "thumbs_up"), _count(agg, "thumbs_down")
        liked = set(agg["event_id"][(ups > 0) & (downs == 0)])
        disliked = set(agg["event_id"][downs > 0])
        candidates = by_event[by_event.index.isin(liked | disliked)].reset_index()
        candidates["key"] = candidates["prompt"].map(normalized_text)
        for _, group in candidates.sort_values("event_id").groupby("key", sort=True):
            good = group[group["event_id"].isin(liked)]
            bad = group[group["event_id"].isin(disliked)]
            made = 0
            for g in good.itertuples():
                for b in bad.itertuples():
                    if made >= MAX_THUMBS_PAIRS_PER_PROMPT:
                        break
                    before = len(rows)
                    add("thumbs", g.prompt, g.response, b.response, g.event_id, b.event_id, max(g.day, b.day))
                    made += len(rows) - before
    frame = pd.DataFrame(rows, columns=FEEDBACK_PAIRS.columns)
    return frame.drop_duplicates("pair_id").reset_index(drop=True)


def sft_records(curated: pd.DataFrame, *, targets_only: bool = True) -> pd.DataFrame:
    """Curated rows as export records: ``messages`` (a user/assistant chat, JSON), ``prompt``, ``response`` and
    what curation knew (strategy, status, score, reason, event, day, window). ``targets_only`` keeps the rows
    that are SFT targets (reviewed ones, and pending ones that are not hard examples)."""
    rows = curated[is_training_target(curated)] if targets_only and len(curated) else curated
    records = pd.DataFrame({
        "example_id": rows["example_id"].astype(str),
        "messages": [json.dumps([{"role": "user", "content": p}, {"role": "assistant", "content": r}])
                     for p, r in zip(rows["prompt"], rows["response"], strict=True)],
        "prompt": rows["prompt"].astype(str), "response": rows["response"].astype(str),
        "strategy": rows["strategy"].astype(str), "status": rows["status"].astype(str),
        "score": rows["score"].astype(float), "reason": rows["reason"].astype(str),
        "event_id": rows["event_id"].astype(str), "model_version": rows["model_version"].astype(int),
        "day": rows["day"].astype(str), "window_start": rows["window_start"].astype(str),
        "window_end": rows["window_end"].astype(str),
    })
    return records.sort_values("example_id").reset_index(drop=True)


def pair_records(pairs: pd.DataFrame) -> pd.DataFrame:
    """Preference pairs as export records (``prompt``, ``chosen``, ``rejected``: the columns TRL's DPO reads)."""
    columns = ["pair_id", "prompt", "chosen", "rejected", "source", "chosen_event_id", "rejected_event_id"]
    records = pairs[columns].astype(str).assign(day=pairs["day"].astype(str))
    return records.sort_values("pair_id").reset_index(drop=True)


def write_records(records: pd.DataFrame, path: str | Path, fmt: str) -> ExportResult:
    """Write ``records`` as ``jsonl`` (one JSON object a line), ``parquet``, or ``hf`` (a ``datasets`` folder
    written with ``Dataset.save_to_disk``, read back with ``datasets.load_from_disk``)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for record in records.to_dict("records"):
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    elif fmt == "parquet":
        records.to_parquet(path, index=False)
    else:
        import datasets

        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"export folder {path} is not empty: pick a new folder for the Hugging Face "
                                  "dataset (save_to_disk would mix two datasets)")
        datasets.Dataset.from_pandas(records, preserve_index=False).save_to_disk(str(path))
    return ExportResult(str(path), fmt, len(records))


def read_records(path: str | Path, fmt: str) -> pd.DataFrame:
    """Read back what :func:`write_records` wrote (the same columns and rows)."""
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "hf":
        import datasets

        return datasets.load_from_disk(str(path)).to_pandas()
    raise ValueError(f"export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")


def filter_window(frame: pd.DataFrame, start: dt.date | None = None, end: dt.date | None = None) -> pd.DataFrame:
    """Rows whose ``day`` is within ``start..end`` (either end may be None: open)."""
    days = pd.to_datetime(frame["day"]).dt.date
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= days >= start
    if end is not None:
        keep &= days <= end
    return frame[keep]


def export_from_lake(lake: DeltaLake, what: str, path: str | Path, fmt: str, *, start: dt.date | None = None,
                     end: dt.date | None = None, targets_only: bool = True) -> ExportResult:
    """Export ``curated`` (feedback/curated as SFT records) or ``pairs`` (feedback/preference_pairs) rows whose
    day lies in ``start..end`` to ``path`` in ``fmt``."""
    if what not in ("curated", "pairs"):
        raise ValueError(f"export {what!r}: expected 'curated' or 'pairs'")
    spec = CURATED if what == "curated" else FEEDBACK_PAIRS
    if not lake.exists(spec):
        producer = "feedback/curated_examples" if what == "curated" else "feedback/preference_pairs"
        raise LookupError(f"{spec.path} does not exist in the lake at {lake.root}: materialize {producer} first")
    rows = filter_window(lake.read(spec), start, end)
    records = sft_records(rows, targets_only=targets_only) if what == "curated" else pair_records(rows)
    return write_records(records, path, fmt)
