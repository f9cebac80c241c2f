"""Ingest inference events and user signals from any producer (files, HTTP, the server, the Python API):
validated column-wise, scrubbed of personal data, and written insert-only by id.

Rules:

- An event needs ``deployment``, ``model_version``, ``prompt``, ``response`` and ``timestamp`` (ISO-8601;
  a timestamp without an offset is read as UTC); ``event_id``, ``model_name`` (default: the deployment),
  ``user``, ``session``, ``latency_ms``, ``prompt_tokens``, ``response_tokens`` and ``signals`` (a list of
  ``{signal, timestamp?, edited_text?, signal_id?}``) are optional. Numbers may arrive as numeric strings
  (CSV); any other type is refused.
- Prompt, response, session id and edited texts are scrubbed before anything is written, quarantined
  records included; user ids become keyed pseudonyms, so a user id without a key is an error that
  writes nothing.
- An event without an id gets one derived from its scrubbed content, so the same file ingested twice
  adds nothing. Ingestion is insert-only: a stored id is a duplicate, never overwritten. Ids are unique
  within a day (the table's partition), which is what the insert checks.
- A signal belongs to its event's day (so a window of days holds its events' signals) and its id is
  derived from (event, signal, timestamp, edited text) unless given; a signal for an event that is not
  stored is quarantined.
- Every record is counted once: rows in = accepted + duplicates + quarantined.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crucible.feedback.pii import Scrubber, pseudonymize_user
from schemas import INFERENCE_EVENTS, SIGNALS, TableSpec
from schemas.feedback import SIGNAL_WEIGHTS

if TYPE_CHECKING:
    from crucible.lake import DeltaLake

REQUIRED_FIELDS = ("deployment", "model_version", "prompt", "response", "timestamp")
OPTIONAL_FIELDS = ("event_id", "model_name", "user", "session", "latency_ms", "prompt_tokens", "response_tokens",
                   "signals")
SIGNAL_FIELDS = ("event_id", "signal", "timestamp", "edited_text", "signal_id")
SIMULATION_SOURCE = "simulation"
FILE_SUFFIXES = (".jsonl", ".ndjson", ".parquet", ".csv")
MAX_ID_LENGTH = 128
# Producers' clocks drift a little; an event dated further ahead is a bug in its producer.
MAX_CLOCK_SKEW = pd.Timedelta(hours=1)


class UserKeyMissing(ValueError):
    """Records carry user ids but no pseudonymization key was given: nothing was written."""


class FeedbackFileError(ValueError):
    """A feedback file that cannot be read at all (its records are never half-ingested)."""


@dataclass
class IngestResult:
    """What one ingestion did; ``rows_in == accepted + duplicates + quarantined`` always holds.

    ``event_ids`` lists the id of every record that is stored (accepted or duplicate), in input order;
    ``per_day`` the accepted rows per day; ``signals`` the signals inserted (attached ones, for events).
    """

    rows_in: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    days: list[dt.date] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    signals: int = 0
    signal_duplicates: int = 0
    per_day: dict[dt.date, int] = field(default_factory=dict)
    pii_redactions: int = 0
    pii_kinds: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts (for HTTP bodies and asset metadata)."""
        return {"rows_in": self.rows_in, "accepted": self.accepted, "duplicates": self.duplicates,
                "quarantined": self.quarantined, "signals": self.signals, "signal_duplicates": self.signal_duplicates,
                "days": [d.isoformat() for d in self.days], "pii_redactions": self.pii_redactions,
                "pii_kinds": dict(self.pii_kinds), "reasons": list(self.reasons[:20])}


@dataclass
class PreparedEvents:
    """Events validated and scrubbed, not yet written: what :func:`store_prepared` writes in one batch.

    ``rows`` are INFERENCE_EVENTS rows as an Arrow table (batch duplicates already removed), ``signals``
    SIGNALS rows, ``quarantined`` (scrubbed record, reason) pairs.
    """

    source: str
    rows: Any
    signals: pd.DataFrame
    quarantined: list[tuple[dict, str]]
    rows_in: int
    batch_duplicates: int
    event_ids: list[str]
    pii_kinds: dict[str, int]

    @property
    def problems(self) -> list[str]:
        return [reason for _, reason in self.quarantined]


# -- column checks -------------------------------------------------------------------------------


class _Problems:
    """Reasons per record position; a record with any reason is quarantined."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = labels
        self.reasons: dict[int, list[str]] = {}
        self.arrow: dict[str, Any] = {}  # text columns already converted to Arrow, reused when writing

    def add(self, mask: np.ndarray, problem: str | Any) -> None:
        """Add ``problem`` (a string, or a function of the position) to every position where ``mask``."""
        for position in np.flatnonzero(mask):
            text = problem(int(position)) if callable(problem) else problem
            self.reasons.setdefault(int(position), []).append(text)

    def bad(self, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        mask[list(self.reasons)] = True
        return mask

    def reason(self, position: int) -> str:
        return f"{self.labels[position]}: " + "; ".join(self.reasons[position])


def _missing(column: pd.Series) -> np.ndarray:
    return column.isna().to_numpy(dtype=bool)


def _text_masks(column: pd.Series, keep: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    """(missing, not a string) masks of a text column; an all-string column is kept in Arrow in ``keep``."""
    import pyarrow as pa

    try:
        converted = pa.array(column, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        missing = _missing(column)
        return missing, ~(column.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool) | missing)
    keep[name] = converted
    missing = converted.is_null().to_numpy(zero_copy_only=False) if converted.null_count \
        else np.zeros(len(column), dtype=bool)
    return missing, np.zeros(len(column), dtype=bool)


def _numbers(column: pd.Series, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float values, NaN where not a number; the positions holding something that is no number)."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.full(len(column), np.nan), ~missing
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=float, na_value=np.nan), np.zeros(len(column), dtype=bool)
    wrong_type = column.map(lambda v: isinstance(v, bool | list | dict | tuple)).to_numpy(dtype=bool)
    values = pd.to_numeric(column.where(~wrong_type), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return values, wrong_type | (np.isnan(values) & ~missing)


def _timestamps(column: pd.Series, missing: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """(UTC timestamps, NaT where invalid; the positions holding no readable ISO-8601 time)."""
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC"), np.zeros(len(column), dtype=bool)
    if pd.api.types.is_datetime64_dtype(column.dtype):
        return column.dt.tz_localize("UTC"), np.zeros(len(column), dtype=bool)
    import pyarrow as pa

    try:
        # Arrow parses ISO-8601 with a zone offset in C++; anything else takes pandas' slower path.
        parsed = pa.array(column, type=pa.string(), from_pandas=True).cast(pa.timestamp("us", tz="UTC"))
        return pd.Series(parsed.to_pandas(), index=column.index), np.zeros(len(column), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    readable = column.map(lambda v: isinstance(v, str | dt.datetime)).to_numpy(dtype=bool)
    candidates = column.where(readable & ~missing)
    try:
        parsed = pd.to_datetime(candidates, utc=True, errors="coerce", format="ISO8601")
    except (ValueError, TypeError):
        parsed = candidates.map(lambda v: pd.to_datetime(v, utc=True, errors="coerce", format="ISO8601"))
        parsed = pd.to_datetime(parsed, utc=True)
    return parsed, ~missing & parsed.isna().to_numpy(dtype=bool)


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_text(frame: pd.DataFrame, name: str, problems: _Problems, *, required: bool,
                non_empty: bool) -> np.ndarray:
    """Check a text field; returns its missing mask."""
    n = len(frame)
    if name not in frame.columns:
        if required:
            problems.add(np.ones(n, dtype=bool), f"missing required field {name!r}")
        return np.ones(n, dtype=bool)
    column = frame[name]
    missing, wrong = _text_masks(column, problems.arrow, name)
    if required:
        problems.add(missing, f"missing required field {name!r}")
    problems.add(wrong, lambda i: f"{name} must be a string, got {type(column.iat[i]).__name__} "
                                  f"{_show(column.iat[i])}")
    if non_empty:
        empty = ~missing & ~wrong
        if empty.any():
            import pyarrow.compute as pc

            if name in problems.arrow:
                lengths = pc.utf8_length(problems.arrow[name]).to_numpy(zero_copy_only=False)
                empty &= np.nan_to_num(lengths.astype(float), nan=1.0) == 0
            else:
                empty[empty] = column[empty].map(len).to_numpy() == 0
        problems.add(empty, f"{name} is empty")
    return missing


def _check_number(frame: pd.DataFrame, name: str, problems: _Problems, *, required: bool, integer: bool,
                  minimum: float) -> tuple[np.ndarray, np.ndarray]:
    """Check a numeric field; returns (values with NaN for missing, missing mask)."""
    n = len(frame)
    if name not in frame.columns:
        if required:
            problems.add(np.ones(n, dtype=bool), f"missing required field {name!r}")
        return np.full(n, np.nan), np.ones(n, dtype=bool)
    column = frame[name]
    missing = _missing(column)
    if required:
        problems.add(missing, f"missing required field {name!r}")
    values, wrong = _numbers(column, missing)
    kind = "an integer" if integer else "a number"
    problems.add(wrong, lambda i: f"{name} must be {kind}, got {_show(column.iat[i])}")
    present = ~missing & ~wrong
    with np.errstate(invalid="ignore"):
        bad = present & ~np.isfinite(values)
        if integer:
            bad |= present & np.isfinite(values) & (np.floor(values) != values)
        problems.add(bad, lambda i: f"{name} must be {kind}, got {_show(column.iat[i])}")
        low = present & ~bad & (values < minimum)
    problems.add(low, lambda i: f"{name} must be >= {minimum:g}, got {_show(column.iat[i])}")
    return values, missing


def _check_timestamp(frame: pd.DataFrame, name: str, problems: _Problems, now: pd.Timestamp, *,
                     required: bool) -> tuple[pd.Series, np.ndarray]:
    n = len(frame)
    if name not in frame.columns:
        if required:
            problems.add(np.ones(n, dtype=bool), f"missing required field {name!r}")
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]"), np.ones(n, dtype=bool)
    column = frame[name]
    missing = _missing(column)
    if required:
        problems.add(missing, f"missing required field {name!r}")
    parsed, wrong = _timestamps(column, missing)
    problems.add(wrong, lambda i: f"{name} {_show(column.iat[i])} is not an ISO-8601 time "
                                  f"(e.g. 2026-11-02T13:45:00Z)")
    future = (parsed > now + MAX_CLOCK_SKEW).to_numpy(dtype=bool)
    problems.add(future, lambda i: f"{name} {parsed.iat[i].isoformat()} is in the future (now {now.isoformat()})")
    return parsed, missing


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


def signal_id_of(event_id: str, signal: str, timestamp: pd.Timestamp, edited_text: str | None) -> str:
    """The id of a signal given without one: the same signal sent twice is one signal."""
    return "s-" + _short_hash(event_id, signal, timestamp.isoformat(), edited_text or "")


# -- signals -------------------------------------------------------------------------------------


def _signal_frame(items: list[dict], labels: list[str], problems_of: dict[int, list[str]], owner: list[int],
                  default_ts: list[pd.Timestamp | None], now: pd.Timestamp) -> pd.DataFrame:
    """Validate signal items (one per row of ``items``); problems go to ``problems_of[owner[i]]``.

    Returns the valid items with their parsed timestamp (``default_ts`` when none is given).
    """
    frame = pd.DataFrame(items, columns=list(SIGNAL_FIELDS)) if items else pd.DataFrame(columns=list(SIGNAL_FIELDS))
    problems = _Problems(labels)
    unknown = ~frame["signal"].isin(list(SIGNAL_WEIGHTS)).to_numpy(dtype=bool)
    problems.add(unknown, lambda i: f"unknown signal {_show(frame['signal'].iat[i])} "
                                    f"(one of {', '.join(SIGNAL_WEIGHTS)})")
    edited_missing = _check_text(frame, "edited_text", problems, required=False, non_empty=False)
    is_edit = (frame["signal"] == "edit").to_numpy(dtype=bool)
    empty_edit = is_edit & (edited_missing | (frame["edited_text"].fillna("").astype(str).str.strip() == "")
                            .to_numpy(dtype=bool))
    problems.add(empty_edit, "an 'edit' signal needs a non-empty edited_text")
    problems.add(~is_edit & ~edited_missing & ~unknown, lambda i: f"edited_text is only for 'edit' signals, not "
                                                                  f"{frame['signal'].iat[i]!r}")
    _check_text(frame, "signal_id", problems, required=False, non_empty=True)
    stamps, stamp_missing = _check_timestamp(frame, "timestamp", problems, now, required=False)
    fallback = pd.Series([t if t is not None else now for t in default_ts], index=frame.index,
                         dtype="datetime64[ns, UTC]") if len(frame) else stamps
    frame["parsed_ts"] = stamps.where(~stamp_missing, fallback) if len(frame) else stamps
    for position, reasons in problems.reasons.items():
        problems_of.setdefault(owner[position], []).extend(f"{labels[position]}: {r}" for r in reasons)
    frame["owner"] = owner
    return frame.loc[~problems.bad(len(frame))]


def _signal_rows(valid: pd.DataFrame, event_ids: Sequence[str], days: Sequence[dt.date], source: str,
                 scrubber: Scrubber, now: pd.Timestamp) -> tuple[pd.DataFrame, dict[str, int]]:
    """SIGNALS rows from validated items (``event_ids``/``days`` aligned with ``valid``), edits scrubbed."""
    edited = valid["edited_text"].where(valid["signal"] == "edit")
    kinds: dict[str, int] = {}
    texts = edited.dropna()
    if len(texts):
        cleaned, _, kinds = _scrub(scrubber, texts.tolist())
        edited.loc[texts.index] = cleaned.to_pylist()
    edited = edited.where(edited.notna(), None)
    ids = [given if isinstance(given, str) and given else signal_id_of(e, s, t, x)
           for given, e, s, t, x in zip(valid["signal_id"], event_ids, valid["signal"], valid["parsed_ts"], edited,
                                        strict=True)]
    rows = pd.DataFrame({
        "signal_id": ids, "event_id": list(event_ids), "day": list(days),
        "timestamp": valid["parsed_ts"].dt.as_unit("us").to_numpy(), "signal": valid["signal"].to_numpy(),
        "weight": valid["signal"].map(SIGNAL_WEIGHTS).astype(float).to_numpy(), "edited_text": edited.to_numpy(),
        "source": source, "ingested_at": now,
    })
    rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True)
    return rows.drop_duplicates(["event_id", "signal_id"]).reset_index(drop=True), kinds


def _parse_attached(value: Any) -> list | None | str:
    """An event's ``signals`` field as a list (a JSON string from CSV is parsed); a str is a problem."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except ValueError:
            return "signals is not a JSON list"
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        return f"signals must be a list of objects, got {_show(value)}"
    return [dict(item) for item in value]


# -- events --------------------------------------------------------------------------------------


class _Numbered(Sequence[str]):
    """Labels "record 0", "record 1", ... made only for the records a problem names."""

    def __init__(self, what: str, count: int) -> None:
        self.what, self.count = what, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, position):  # noqa: ANN001, ANN204 - Sequence's int-or-slice protocol
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(self.count))]
        if not -self.count <= position < self.count:
            raise IndexError(position)
        return f"{self.what} {int(position) % self.count}"


def _as_frame(records: Iterable[Mapping] | pd.DataFrame, labels: Sequence[str] | None,
              what: str = "record") -> tuple[pd.DataFrame, list[str], list[tuple[int, Any]]]:
    """(a frame of the records, a label per record, (position, value) of the ones that are no objects)."""
    if isinstance(records, pd.DataFrame):
        # Positions index everything below; a frame already indexed 0..n-1 is used as it is (no copy).
        plain = isinstance(records.index, pd.RangeIndex) and records.index.start == 0 and records.index.step == 1
        frame = records if plain else records.reset_index(drop=True)
        return frame, list(labels) if labels is not None else _Numbered(what, len(frame)), []
    items = list(records)
    labels = list(labels) if labels is not None else _Numbered(what, len(items))
    if len(labels) != len(items):
        raise ValueError(f"{len(labels)} labels for {len(items)} records")
    not_objects = [(i, item) for i, item in enumerate(items) if not isinstance(item, Mapping)]
    if not_objects:
        keep = [i for i, item in enumerate(items) if isinstance(item, Mapping)]
        frame = pd.DataFrame([items[i] for i in keep])
        return frame, [labels[i] for i in keep], not_objects
    return pd.DataFrame(items), labels, []


def _scrubbed_record(record: Mapping[str, Any], scrubber: Scrubber, user_key: bytes | None) -> dict:
    """A quarantined record as it may be stored: texts scrubbed, the user pseudonymized (or withheld)."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, float) and np.isnan(value):
            continue
        if name == "user" and value is not None:
            out[name] = pseudonymize_user(str(value), user_key) if user_key else "[USER]"
        elif isinstance(value, str):
            out[name] = scrubber.scrub(value).text
        elif isinstance(value, list | tuple | np.ndarray):
            out[name] = [_scrubbed_record(v, scrubber, user_key) if isinstance(v, Mapping)
                         else scrubber.scrub(v).text if isinstance(v, str) else v for v in list(value)]
        elif isinstance(value, Mapping):
            out[name] = _scrubbed_record(value, scrubber, user_key)
        else:
            out[name] = value
    return out


def prepare_events(records: Iterable[Mapping] | pd.DataFrame, *, source: str, scrubber: Scrubber,
                   user_key: bytes | None, labels: Sequence[str] | None = None,
                   now: pd.Timestamp | None = None) -> PreparedEvents:
    """Validate, scrub and pseudonymize event records without writing them (see the module docstring).

    ``labels`` name each record in problems ("events.jsonl line 7"); by default "record <position>".
    Raises :class:`UserKeyMissing` when a record carries a user id and ``user_key`` is None.
    """
    if not source:
        raise ValueError("ingest: source is empty; name where the records come from (a file, 'http', 'simulation')")
    import pyarrow.compute as pc

    now = now or pd.Timestamp.now(tz="UTC")
    frame, labels, not_objects = _as_frame(records, labels)
    n = len(frame)
    problems = _Problems(labels)
    quarantined: list[tuple[dict, str]] = [
        ({"value": _show(scrubber.scrub(str(value)).text, 200)},
         f"record {position}: is {type(value).__name__}, not an object") for position, value in not_objects]

    if "user" in frame.columns:
        has_user = ~_missing(frame["user"])
        if has_user.any() and not user_key:
            first = labels[int(np.flatnonzero(has_user)[0])]
            raise UserKeyMissing(f"{first} carries a user id but no pseudonymization key was given: set the key "
                                 f"(env var CRUCIBLE_PII_KEY, see FeedbackResource.pii_key_env) or drop the user "
                                 f"field; nothing was written")

    _check_text(frame, "deployment", problems, required=True, non_empty=True)
    _check_text(frame, "prompt", problems, required=True, non_empty=True)
    _check_text(frame, "response", problems, required=True, non_empty=False)
    model_name_missing = _check_text(frame, "model_name", problems, required=False, non_empty=True)
    id_missing = _check_text(frame, "event_id", problems, required=False, non_empty=True)
    if "event_id" in problems.arrow:
        lengths = pc.utf8_length(problems.arrow["event_id"]).fill_null(0).to_numpy(zero_copy_only=False)
        problems.add(lengths > MAX_ID_LENGTH, f"event_id is longer than {MAX_ID_LENGTH} characters")
    elif "event_id" in frame.columns:
        long = ~id_missing & (frame["event_id"].astype(str).str.len().to_numpy() > MAX_ID_LENGTH)
        problems.add(long, f"event_id is longer than {MAX_ID_LENGTH} characters")
    version, _ = _check_number(frame, "model_version", problems, required=True, integer=True, minimum=1)
    latency, latency_missing = _check_number(frame, "latency_ms", problems, required=False, integer=False, minimum=0)
    tokens = {name: _check_number(frame, name, problems, required=False, integer=True, minimum=0)
              for name in ("prompt_tokens", "response_tokens")}
    stamps, _ = _check_timestamp(frame, "timestamp", problems, now, required=True)
    for name in ("user", "session"):
        if name in frame.columns and _text_masks(frame[name], problems.arrow, name)[1].any():
            column = frame[name]
            odd = column.map(lambda v: v is not None and not isinstance(v, str | int | float)
                             or isinstance(v, bool)).to_numpy(dtype=bool) & ~_missing(column)
            problems.add(odd, lambda i, c=column, f=name: f"{f} must be a string, got {_show(c.iat[i])}")

    # Attached signals: a record whose signals are malformed is quarantined whole, with the reason.
    items: list[dict] = []
    owner: list[int] = []
    item_labels: list[str] = []
    if "signals" in frame.columns:
        for position in np.flatnonzero(~_missing(frame["signals"]) if frame["signals"].dtype != object
                                       else np.ones(n, dtype=bool)):
            parsed = _parse_attached(frame["signals"].iat[position])
            if isinstance(parsed, str):
                problems.add(np.eye(1, n, position, dtype=bool)[0], parsed)
                continue
            for k, item in enumerate(parsed or []):
                items.append({name: item.get(name) for name in SIGNAL_FIELDS if name != "event_id"})
                owner.append(int(position))
                item_labels.append(f"signals[{k}]")
    stamp_of = [stamps.iat[i] if not pd.isna(stamps.iat[i]) else None for i in owner]
    signal_problems: dict[int, list[str]] = {}
    valid_items = _signal_frame(items, item_labels, signal_problems, owner, stamp_of, now)
    for position, reasons in signal_problems.items():
        problems.reasons.setdefault(position, []).extend(reasons)

    bad = problems.bad(n)
    good = np.flatnonzero(~bad)
    for position in np.flatnonzero(bad):
        quarantined.append((_scrubbed_record(frame.iloc[position].to_dict(), scrubber, user_key),
                            scrubber.scrub(problems.reason(int(position))).text))

    rows, kinds = _event_rows(frame, good, stamps, version, latency, latency_missing, tokens, model_name_missing,
                              id_missing, source, scrubber, user_key, now, problems.arrow)
    # The same id twice in one batch: a repeat with the same content is a duplicate, else quarantined.
    ids_column = rows.column("event_id")
    # Ids given as strings for every record are the frame's own objects: listing them copies nothing.
    given = len(good) == n and "event_id" in problems.arrow and not id_missing.any()
    all_ids = frame["event_id"].tolist() if given else ids_column.to_pylist()
    batch_duplicates = 0
    conflicted: set[int] = set()
    if len(rows) and len(ids_column.unique()) < len(rows):
        repeated = np.flatnonzero(pd.Series(all_ids).duplicated(keep="first").to_numpy())
        first_at: dict[str, int] = {}
        for i, eid in enumerate(all_ids):
            first_at.setdefault(eid, i)
        content = ["timestamp", "deployment", "model_version", "prompt", "response"]
        for i in repeated:
            first = first_at[all_ids[i]]
            if all(rows.column(c)[int(i)] == rows.column(c)[first] for c in content):
                batch_duplicates += 1
                continue
            conflicted.add(int(i))
            quarantined.append((_scrubbed_record(frame.iloc[int(good[i])].to_dict(), scrubber, user_key),
                                f"{labels[good[i]]}: event_id {all_ids[i]!r} was already given to "
                                f"{labels[good[first]]} with different content"))
        keep = np.ones(len(rows), dtype=bool)
        keep[repeated] = False
        rows = rows.filter(keep)
    event_ids = [eid for i, eid in enumerate(all_ids) if i not in conflicted] if conflicted else all_ids

    # Signals of every good record (a repeated record's signals too: they are deduplicated by id).
    signals = pd.DataFrame(columns=SIGNALS.columns)
    row_of = {int(p): i for i, p in enumerate(good)} if len(valid_items) else {}
    valid_items = valid_items.loc[[o in row_of and row_of[o] not in conflicted for o in valid_items["owner"]]]
    if len(valid_items):
        signal_event_ids = [all_ids[row_of[o]] for o in valid_items["owner"]]
        signal_days = [stamps.iat[o].date() for o in valid_items["owner"]]
        signals, signal_kinds = _signal_rows(valid_items, signal_event_ids, signal_days, source, scrubber, now)
        for kind, count in signal_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + count
    return PreparedEvents(source, rows, signals, quarantined, n + len(not_objects), batch_duplicates, event_ids,
                          kinds)


def _optional_texts(frame: pd.DataFrame, name: str, good: np.ndarray, arrow: dict[str, Any]) -> Any:
    """An optional id field of the good records as an Arrow string array (numbers become their text)."""
    import pyarrow as pa

    if name not in frame.columns:
        return pa.nulls(len(good), pa.string())
    if name in arrow:
        return _pick(arrow[name], good, len(frame))
    raw = frame[name] if len(good) == len(frame) else frame[name].iloc[good]
    try:
        return pa.array(raw, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(raw.map(lambda v: None if pd.isna(v) else str(int(v)) if isinstance(v, float) and v.is_integer()
                                else str(v)), type=pa.string(), from_pandas=True)


def _pick(values: Any, good: np.ndarray, n: int) -> Any:
    """The ``good`` positions of an Arrow array of ``n`` values; all of it, uncopied, when every record is good."""
    import pyarrow as pa

    return values if len(good) == n else values.take(pa.array(good))


def _scrub(scrubber: Scrubber, texts: Any) -> tuple[Any, np.ndarray, dict[str, int]]:
    """(scrubbed texts as an Arrow ``string`` array, redactions per text, redactions per kind)."""
    import pyarrow as pa

    done = scrubber.scrub_column(texts)
    column = done.texts.cast(pa.string()) if isinstance(done.texts, pa.Array | pa.ChunkedArray) \
        else pa.array(done.texts, type=pa.string())
    counts = done.redactions.to_numpy(zero_copy_only=False) if hasattr(done.redactions, "to_numpy") \
        else done.redactions
    return column, np.asarray(counts, dtype=np.int64), dict(done.kinds)


def _event_rows(frame: pd.DataFrame, good: np.ndarray, stamps: pd.Series, version: np.ndarray, latency: np.ndarray,
                latency_missing: np.ndarray, tokens: dict, model_name_missing: np.ndarray, id_missing: np.ndarray,
                source: str, scrubber: Scrubber, user_key: bytes | None, now: pd.Timestamp,
                arrow: dict[str, Any]) -> tuple[Any, dict[str, int]]:
    """INFERENCE_EVENTS rows (an Arrow table) for the good records: scrubbed, pseudonymized, with ids.

    Built column by column in Arrow: a million rows never become a million Python dicts.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(good)
    if not count:
        return INFERENCE_EVENTS.arrow_schema().empty_table(), {}
    every = count == len(frame)

    def text_column(name: str) -> Any:
        if name in arrow:
            return _pick(arrow[name], good, len(frame))
        return pa.array(frame[name].to_numpy(dtype=object)[good], type=pa.string())

    def chosen(values: np.ndarray) -> np.ndarray:
        return values if every else values[good]

    # One pass of the scrubber over prompts and responses together: its pre-filter is one C++ call.
    texts, both, kinds = _scrub(scrubber, pa.concat_arrays([text_column("prompt"), text_column("response")]))
    redactions = both[:count] + both[count:]
    prompt_text, response_text = texts.slice(0, count), texts.slice(count)

    session = _optional_texts(frame, "session", good, arrow)
    if session.null_count < count:
        valid = np.flatnonzero(session.is_valid().to_numpy(zero_copy_only=False))
        cleaned, counts, session_kinds = _scrub(scrubber, session.drop_null())
        session = pc.replace_with_mask(session, session.is_valid(), cleaned)
        redactions[valid] += counts
        for kind, n in session_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    users = _optional_texts(frame, "user", good, arrow)
    if users.null_count < count:
        distinct = pc.unique(users.drop_null())
        pseudonyms = pa.array([pseudonymize_user(u, user_key) for u in distinct.to_pylist()], type=pa.string())
        user = pc.take(pseudonyms, pc.index_in(users, value_set=distinct))
    else:
        user = users

    deployment = text_column("deployment")
    unnamed = chosen(model_name_missing)
    if "model_name" not in frame.columns or unnamed.all():
        model_name = deployment
    elif unnamed.any():
        model_name = pc.if_else(pa.array(unnamed), deployment, text_column("model_name"))
    else:
        model_name = text_column("model_name")
    ts = pa.array(stamps if every else stamps.iloc[good], type=pa.timestamp("us", tz="UTC"))
    versions = chosen(version).astype(np.int64)

    derive = np.flatnonzero(chosen(id_missing))
    if not len(derive):
        ids = text_column("event_id")
    else:
        ids = frame["event_id"].to_numpy(dtype=object)[good].copy() if "event_id" in frame.columns \
            else np.empty(count, dtype=object)
        at = pa.array(derive)
        parts = zip(*(column.take(at).to_pylist() for column in (deployment, model_name, prompt_text, response_text,
                                                                  user, session)), strict=True)
        stamp_text = stamps.iloc[good[derive]].map(lambda t: t.isoformat()).tolist()
        for i, stamp, (deployed, name, prompt, response, pseudonym, session_id) in zip(derive, stamp_text, parts,
                                                                                      strict=True):
            # hashlib per row, only for the records that came without an id
            ids[i] = "e-" + _short_hash(deployed, name, str(versions[i]), stamp, prompt, response, pseudonym or "",
                                        session_id or "")
        ids = pa.array(ids, type=pa.string())

    def optional_number(values: np.ndarray, missing: np.ndarray, kind: Any) -> Any:
        absent = chosen(missing)
        filled = np.where(absent, 0, np.nan_to_num(chosen(values)))
        return pa.array(filled.astype(np.int64) if kind == pa.int64() else filled, type=kind,
                        mask=absent if absent.any() else None)

    arrays = {
        "event_id": ids, "day": pc.cast(ts, pa.date32()), "timestamp": ts,
        "deployment": deployment, "model_name": model_name,
        "model_version": pa.array(versions, type=pa.int64()), "prompt": prompt_text, "response": response_text,
        "prompt_tokens": optional_number(*tokens["prompt_tokens"], pa.int64()),
        "response_tokens": optional_number(*tokens["response_tokens"], pa.int64()),
        "latency_ms": optional_number(latency, latency_missing, pa.float64()),
        "pii_redactions": pa.array(redactions, type=pa.int64()), "user_id": user, "session_id": session,
        "source": pa.repeat(pa.scalar(source, pa.string()), count),
        "ingested_at": pa.repeat(pa.scalar(now.as_unit("us").to_pydatetime(), pa.timestamp("us", tz="UTC")), count),
    }
    schema = INFERENCE_EVENTS.arrow_schema()
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema), kinds


# -- writing -------------------------------------------------------------------------------------


def _arrow(spec: TableSpec, rows: pd.DataFrame) -> Any:
    import pyarrow as pa

    return pa.Table.from_pandas(rows[spec.columns], schema=spec.arrow_schema(), preserve_index=False)


def _stored_ids(lake: DeltaLake, spec: TableSpec, days: list[dt.date]) -> set[str]:
    if not days or not lake.exists(spec):
        return set()
    key = spec.keys[-1] if spec is SIGNALS else "event_id"
    return set(lake.read(spec, where={"day": days}, columns=[key])[key])


def _store_quarantine(lake: DeltaLake, table: str, source: str, quarantined: list[tuple[dict, str]],
                      now: pd.Timestamp) -> None:
    from crucible.quarantine import quarantine_rows, store_quarantined

    if quarantined:
        store_quarantined(lake, quarantine_rows(table, ((r, source, why) for r, why in quarantined), day=now.date()))


def _insert_signals(lake: DeltaLake, signals: pd.DataFrame) -> tuple[int, int]:
    """(signals inserted, signals already stored)."""
    if signals.empty:
        return 0, 0
    written = lake.insert_new(SIGNALS, _arrow(SIGNALS, signals))
    return written.rows_written, len(signals) - written.rows_written


def store_prepared(lake: DeltaLake, prepared: PreparedEvents | Sequence[PreparedEvents]) -> IngestResult:
    """Write prepared events (one batch, or several as one commit per table): quarantine first, then the
    events, then their signals, so a signal is never visible before its event."""
    import pyarrow as pa
    import pyarrow.compute as pc

    batches = [prepared] if isinstance(prepared, PreparedEvents) else list(prepared)
    now = pd.Timestamp.now(tz="UTC")
    for batch in batches:
        _store_quarantine(lake, INFERENCE_EVENTS.path, batch.source, batch.quarantined, now)
    rows = pa.concat_tables([b.rows for b in batches]) if batches else INFERENCE_EVENTS.arrow_schema().empty_table()
    if len(batches) > 1 and len(rows.column("event_id").unique()) < len(rows):
        # Batches may repeat each other's events (two posts of one event): the first one is inserted.
        rows = rows.filter(~pd.Series(rows.column("event_id").to_pylist()).duplicated(keep="first").to_numpy())
    days = sorted(rows.column("day").unique().to_pylist())
    stored = _stored_ids(lake, INFERENCE_EVENTS, days)
    fresh = rows.filter(pc.invert(pc.is_in(rows.column("event_id"), value_set=pa.array(sorted(stored),
                                                                                        type=pa.string())))) \
        if stored else rows
    inserted = lake.insert_new(INFERENCE_EVENTS, fresh).rows_written if len(fresh) else 0
    signals = [b.signals for b in batches if len(b.signals)]
    signal_counts = _insert_signals(lake, pd.concat(signals, ignore_index=True).drop_duplicates(
        ["event_id", "signal_id"])) if signals else (0, 0)
    per_day = {d["values"]: int(d["counts"]) for d in pc.value_counts(fresh.column("day")).to_pylist()} \
        if len(fresh) else {}
    kinds: dict[str, int] = {}
    for batch in batches:
        for kind, n in batch.pii_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    rows_in = sum(b.rows_in for b in batches)
    quarantined = sum(len(b.quarantined) for b in batches)
    return IngestResult(
        rows_in=rows_in, accepted=inserted, duplicates=rows_in - inserted - quarantined, quarantined=quarantined,
        days=sorted(per_day), event_ids=[eid for b in batches for eid in b.event_ids], signals=signal_counts[0],
        signal_duplicates=signal_counts[1], per_day=dict(sorted(per_day.items())),
        pii_redactions=int(pc.sum(rows.column("pii_redactions")).as_py() or 0) if len(rows) else 0,
        pii_kinds=kinds, reasons=[reason for b in batches for reason in b.problems],
    )


def ingest_events(lake: DeltaLake, records: Iterable[Mapping] | pd.DataFrame, *, source: str, scrubber: Scrubber,
                  user_key: bytes | None, labels: Sequence[str] | None = None) -> IngestResult:
    """Validate, scrub and store inference events (with their attached signals), insert-only by event id."""
    return store_prepared(lake, prepare_events(records, source=source, scrubber=scrubber, user_key=user_key,
                                               labels=labels))


def _validated_signals(records: Iterable[Mapping] | pd.DataFrame, labels: Sequence[str] | None,
                       now: pd.Timestamp) -> tuple[pd.DataFrame, _Problems, list[tuple[int, Any]], pd.DataFrame]:
    """(the records as a frame, their problems, the ones that are no objects, the valid signal items)."""
    frame, labels, not_objects = _as_frame(records, labels, what="signal")
    problems = _Problems(labels)
    _check_text(frame, "event_id", problems, required=True, non_empty=True)
    items = [{name: record.get(name) for name in SIGNAL_FIELDS if name != "event_id"}
             for record in frame.to_dict("records")]
    signal_problems: dict[int, list[str]] = {}
    valid = _signal_frame(items, [""] * len(items), signal_problems, list(range(len(items))),
                          [None] * len(items), now)
    for position, reasons in signal_problems.items():
        problems.reasons.setdefault(position, []).extend(r.removeprefix(": ") for r in reasons)
    return frame, problems, not_objects, valid


def signal_problems(records: Iterable[Mapping] | pd.DataFrame, labels: Sequence[str] | None = None) -> list[str]:
    """What is wrong with signal records on their own (no lake needed): for refusing a request up front."""
    frame, problems, not_objects, _ = _validated_signals(records, labels, pd.Timestamp.now(tz="UTC"))
    return [f"signal {p}: is {type(v).__name__}, not an object" for p, v in not_objects] + \
        [problems.reason(position) for position in sorted(problems.reasons)]


def ingest_signals(lake: DeltaLake, records: Iterable[Mapping] | pd.DataFrame, *, source: str, scrubber: Scrubber,
                   labels: Sequence[str] | None = None) -> IngestResult:
    """Store user signals posted after their events (records: event_id, signal, timestamp?, edited_text?,
    signal_id?). A signal for an event that is not stored is quarantined with that reason."""
    if not source:
        raise ValueError("ingest_signals: source is empty; name where the signals come from")
    now = pd.Timestamp.now(tz="UTC")
    frame, problems, not_objects, valid = _validated_signals(records, labels, now)
    quarantined: list[tuple[dict, str]] = [({"value": _show(scrubber.scrub(str(v)).text, 200)},
                                            f"signal {p}: is {type(v).__name__}, not an object") for p, v in not_objects]
    wanted = sorted({e for i, e in enumerate(frame.get("event_id", pd.Series(dtype=object)))
                     if i not in problems.reasons and isinstance(e, str)})
    known = (lake.read(INFERENCE_EVENTS, where={"event_id": wanted}, columns=["event_id", "day"])
             if wanted and lake.exists(INFERENCE_EVENTS) else pd.DataFrame(columns=["event_id", "day"]))
    day_of = dict(zip(known["event_id"], known["day"], strict=True))
    unknown = np.array([i not in problems.reasons and frame["event_id"].iat[i] not in day_of
                        for i in range(len(frame))], dtype=bool)
    problems.add(unknown, lambda i: f"event {frame['event_id'].iat[i]!r} is not in {INFERENCE_EVENTS.path}; "
                                    f"ingest the event before its signals")
    for position in np.flatnonzero(problems.bad(len(frame))):
        quarantined.append((_scrubbed_record(frame.iloc[position].to_dict(), scrubber, None),
                            scrubber.scrub(problems.reason(int(position))).text))
    valid = valid.loc[[o not in problems.reasons for o in valid["owner"]]]
    event_ids = [frame["event_id"].iat[o] for o in valid["owner"]]
    rows, kinds = _signal_rows(valid, event_ids, [day_of[e] for e in event_ids], source, scrubber, now) \
        if len(valid) else (pd.DataFrame(columns=SIGNALS.columns), {})
    _store_quarantine(lake, SIGNALS.path, source, quarantined, now)
    inserted, _ = _insert_signals(lake, rows)
    rows_in = len(frame) + len(not_objects)
    return IngestResult(rows_in=rows_in, accepted=inserted, duplicates=rows_in - inserted - len(quarantined),
                        quarantined=len(quarantined), days=sorted(set(rows["day"])) if len(rows) else [],
                        event_ids=list(dict.fromkeys(event_ids)), signals=inserted,
                        signal_duplicates=len(valid) - inserted, pii_kinds=kinds,
                        per_day={d: int(n) for d, n in rows["day"].value_counts().sort_index().items()},
                        reasons=[reason for _, reason in quarantined])


# -- files ---------------------------------------------------------------------------------------


def is_signals_file(path: Path) -> bool:
    """``*.signals.jsonl`` (and .csv, .parquet) hold signals; any other feedback file holds events."""
    return ".signals." in path.name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_feedback_file(path: str | Path) -> tuple[list | pd.DataFrame, list[str], list[tuple[dict, str]]]:
    """(records, a label per record, (record, reason) of lines that are not JSON objects) of a JSONL,
    Parquet or CSV file; raises :class:`FeedbackFileError` naming the file when it cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise FeedbackFileError(f"feedback file {path.name}: unsupported type {suffix or '(none)'}; use one of "
                                f"{', '.join(FILE_SUFFIXES)}")
    try:
        if suffix in (".jsonl", ".ndjson"):
            records, labels, bad = [], [], []
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError as error:
                        bad.append(({"line": line[:200]}, f"{path.name} line {number}: not JSON ({error})"))
                        continue
                    if not isinstance(record, dict):
                        bad.append(({"line": line[:200]}, f"{path.name} line {number}: is "
                                                           f"{type(record).__name__}, not an object"))
                        continue
                    records.append(record)
                    labels.append(f"{path.name} line {number}")
            return records, labels, bad
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            # Every CSV cell stays text ("NA" is a prompt, not a missing value); empty cells are missing.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError) as error:
        raise FeedbackFileError(f"feedback file {path.name}: cannot be read ({error})") from error
    except Exception as error:  # noqa: BLE001 - pandas/pyarrow raise many types for a malformed file
        raise FeedbackFileError(f"feedback file {path.name}: not a valid {suffix[1:]} file ({error})") from error
    first = 2 if suffix == ".csv" else 0  # CSV: line 1 is the header
    return frame, [f"{path.name} {'line' if suffix == '.csv' else 'row'} {i + first}" for i in range(len(frame))], []


def ingest_file(lake: DeltaLake, path: str | Path, *, scrubber: Scrubber, user_key: bytes | None,
                source: str | None = None) -> IngestResult:
    """Ingest a JSONL, Parquet or CSV file of events (or of signals, ``*.signals.*``); lines that are not
    JSON objects are quarantined beside the invalid records and counted in ``rows_in``."""
    path = Path(path)
    source = source or f"file:{path.name}"
    records, labels, bad = read_feedback_file(path)
    scrubbed_bad = [(_scrubbed_record(r, scrubber, user_key), scrubber.scrub(why).text) for r, why in bad]
    if is_signals_file(path):
        result = ingest_signals(lake, records, source=source, scrubber=scrubber, labels=labels)
        table = SIGNALS.path
    else:
        prepared = prepare_events(records, source=source, scrubber=scrubber, user_key=user_key, labels=labels)
        prepared.quarantined.extend(scrubbed_bad)
        prepared.rows_in += len(bad)
        return store_prepared(lake, prepared)
    _store_quarantine(lake, table, source, scrubbed_bad, pd.Timestamp.now(tz="UTC"))
    result.rows_in += len(bad)
    result.quarantined += len(bad)
    result.reasons.extend(why for _, why in scrubbed_bad)
    return result


# -- reading back --------------------------------------------------------------------------------


@dataclass
class DaySummary:
    """What a day of ``feedback/inference_events`` holds: totals, per source and per deployment."""

    day: dt.date
    events: int
    real: int
    per_source: dict[str, int]
    per_deployment: dict[str, int]
    pii_redactions: int
    signals: int
    per_signal: dict[str, int]


def day_summary(lake: DeltaLake, day: dt.date) -> DaySummary:
    """Counts of one day's stored events (``real`` = not simulated) and of their signals."""
    columns = ["source", "deployment", "pii_redactions"]
    events = lake.read(INFERENCE_EVENTS, where={"day": day}, columns=columns) if lake.exists(INFERENCE_EVENTS) \
        else pd.DataFrame(columns=columns)
    signals = lake.read(SIGNALS, where={"day": day}, columns=["signal"]) if lake.exists(SIGNALS) \
        else pd.DataFrame(columns=["signal"])
    return DaySummary(
        day=day, events=len(events), real=int((events["source"] != SIMULATION_SOURCE).sum()),
        per_source={str(k): int(v) for k, v in events["source"].value_counts().sort_index().items()},
        per_deployment={str(k): int(v) for k, v in events["deployment"].value_counts().sort_index().items()},
        pii_redactions=int(events["pii_redactions"].sum()), signals=len(signals),
        per_signal={str(k): int(v) for k, v in signals["signal"].value_counts().sort_index().items()},
    )


def remove_simulated_day(lake: DeltaLake, day: dt.date) -> None:
    """Delete ``day``'s simulated events and signals, so a re-simulated day replaces them."""
    for spec in (INFERENCE_EVENTS, SIGNALS):
        if lake.exists(spec):
            lake.replace_where(spec, pd.DataFrame(columns=spec.columns), {"day": day, "source": SIMULATION_SOURCE})


# -- the inbox -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxFile:
    """A feedback file in the inbox; ``sha256`` names its content (one ingestion run per content)."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int


@dataclass
class InboxScan:
    files: list[InboxFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def scan_inbox(folder: str | Path, known: Mapping[str, tuple[int, int, str]] | None = None) -> InboxScan:
    """The feedback files of ``folder`` with their content hash, and what was skipped and why; never raises.

    ``known`` maps a file name to (size, mtime_ns, sha256) from an earlier scan, so an unchanged file is
    not hashed again. Hidden files and names ending in .tmp/.part (files still being written) are left
    alone silently; other entries that cannot be ingested are reported.
    """
    folder = Path(folder)
    scan = InboxScan()
    known = known or {}
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return scan
    except OSError as error:
        scan.problems.append(f"feedback inbox {folder}: cannot be listed ({error.strerror or error})")
        return scan
    for path in entries:
        if path.name.startswith(".") or path.suffix.lower() in (".tmp", ".part"):
            continue
        if path.is_dir():
            scan.problems.append(f"feedback inbox entry {path.name!r} skipped: a folder; move its files into the "
                                 f"inbox itself")
            continue
        if path.suffix.lower() not in FILE_SUFFIXES:
            scan.problems.append(f"feedback inbox entry {path.name!r} skipped: unsupported type "
                                 f"{path.suffix or '(none)'}; use one of {', '.join(FILE_SUFFIXES)}")
            continue
        try:
            stat = path.stat()
            if stat.st_size == 0:
                scan.problems.append(f"feedback inbox entry {path.name!r} skipped: the file is empty")
                continue
            seen = known.get(path.name)
            if seen and tuple(seen[:2]) == (stat.st_size, stat.st_mtime_ns):
                sha = seen[2]
            else:
                sha = file_sha256(path)
        except OSError as error:
            scan.problems.append(f"feedback inbox entry {path.name!r} skipped: cannot be read "
                                 f"({error.strerror or error}); fix its permissions or remove it")
            continue
        scan.files.append(InboxFile(path, sha, stat.st_size, stat.st_mtime_ns))
    return scan
