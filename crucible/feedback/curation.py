"""Curation: pick the production examples worth training on, drop duplicates, apply human reviews.

Strategies, in priority order (an event picked by one is not offered to the next):

- ``user_edit``: the user rewrote the answer; the edit is the target.
- ``high_quality``: the quality checks passed with a high score and the signals are positive.
- ``hard_example``: the checks failed, scored low, or the signals are negative. Kept for a reviewer to
  fix; never an SFT target unless a reviewer approves or edits it.
- ``active_learning``: the model was least sure of its own answer (lowest mean token log-prob).
- ``diverse``: the prompts farthest (cosine) from the window's embedding centroid.

Duplicates: an exact duplicate has the same normalised prompt and target; a near duplicate has a prompt
whose embedding cosine with a kept one reaches ``near_duplicate_cosine`` or, without embeddings, whose
MinHash (character shingles) Jaccard estimate reaches ``near_duplicate_jaccard``. The first of a group in
priority order is kept. Reviews (latest decision per example): reject drops, edit replaces the response,
approve marks it approved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crucible.lake import DeltaLake
from crucible.quarantine import StoredTable, store_validated
from crucible.registry.lineage import dataset_node, feedback_node
from schemas import CURATED, EXAMPLES, INFERENCE_EVENTS, LINEAGE_EDGES, QUALITY, REVIEWS, SIGNALS, TableSpec
from schemas.feedback import CURATION_STRATEGIES

# The examples-table slice the curated training examples of the latest window are written to.
FEEDBACK_DATASET = "feedback"
FEEDBACK_SPLIT = "train"
# Statuses whose response is a training target (a pending hard example is not: it awaits a fix).
_TARGET_STATUSES = ("approved", "edited")
_MERSENNE_31 = (1 << 31) - 1


@dataclass(frozen=True)
class CurationLimits:
    """Thresholds and caps of the strategies and of duplicate removal."""

    max_per_strategy: int = 200
    max_total: int = 1000
    high_quality_min_quality: float = 0.7
    high_quality_min_score: float = 0.0  # signal score must be above this (positive feedback)
    hard_max_quality: float = 0.4
    active_count: int = 16
    diverse_count: int = 16
    near_duplicate_cosine: float = 0.95
    near_duplicate_jaccard: float = 0.8
    minhash_permutations: int = 128
    shingle_size: int = 5

    def __post_init__(self) -> None:
        for name in ("max_per_strategy", "max_total", "active_count", "diverse_count", "minhash_permutations",
                     "shingle_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"CurationLimits.{name} must be >= 0, got {getattr(self, name)}")
        if self.hard_max_quality > self.high_quality_min_quality:
            raise ValueError(f"CurationLimits: hard_max_quality {self.hard_max_quality} is above "
                             f"high_quality_min_quality {self.high_quality_min_quality}; an answer cannot be both")


@dataclass
class Curation:
    """What one curation picked (CuratedSchema rows) and what it left out, for metadata and reports."""

    examples: pd.DataFrame
    candidates: int
    exact_duplicates: int
    near_duplicates: int
    near_duplicate_method: str  # "embedding" or "minhash"
    rejected_by_review: int
    by_strategy: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)


def curated_example_id(event_id: str) -> str:
    """The curated example of an event keeps its id across re-curations, so reviews stay attached."""
    return "cur-" + hashlib.sha256(event_id.encode()).hexdigest()[:20]


def normalized_text(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def minhash_signatures(texts: Sequence[str], permutations: int = 128, shingle_size: int = 5,
                       seed: int = 0) -> np.ndarray:
    """(len(texts), permutations) MinHash signatures over character shingles of the normalised texts.

    The share of equal positions of two signatures estimates the Jaccard similarity of their shingle sets.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _MERSENNE_31, permutations, dtype=np.uint64)
    b = rng.integers(0, _MERSENNE_31, permutations, dtype=np.uint64)
    signatures = np.empty((len(texts), permutations), dtype=np.uint64)
    for row, text in enumerate(texts):
        norm = normalized_text(text)
        shingles = {norm[i:i + shingle_size] for i in range(max(len(norm) - shingle_size + 1, 1))}
        hashes = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")
                           % _MERSENNE_31 for s in shingles], dtype=np.uint64)
        # a, hashes < 2^31, so a * hash + b stays below 2^63: no uint64 overflow.
        signatures[row] = ((np.outer(hashes, a) + b) % _MERSENNE_31).min(axis=0)
    return signatures


class _Deduplicator:
    """Remembers the kept examples and says whether a new one duplicates one of them."""

    def __init__(self, vectors: np.ndarray | None, signatures: np.ndarray | None, limits: CurationLimits) -> None:
        self.vectors, self.signatures, self.limits = vectors, signatures, limits
        self.exact: set[str] = set()
        self.kept: list[int] = []

    def duplicate(self, row: int, exact_key: str) -> str | None:
        """"exact", "near" or None for the event at position ``row``."""
        if exact_key in self.exact:
            return "exact"
        if self.kept:
            if self.vectors is not None:
                similarity = self.vectors[self.kept] @ self.vectors[row]
                if float(similarity.max()) >= self.limits.near_duplicate_cosine:
                    return "near"
            elif self.signatures is not None:
                agreement = (self.signatures[self.kept] == self.signatures[row]).mean(axis=1)
                if float(agreement.max()) >= self.limits.near_duplicate_jaccard:
                    return "near"
        return None

    def keep(self, row: int, exact_key: str) -> None:
        self.exact.add(exact_key)
        self.kept.append(row)


def _latest_reviews(reviews: pd.DataFrame | None) -> dict[str, dict]:
    """The latest decision per example, whoever made it."""
    if reviews is None or reviews.empty:
        return {}
    latest = reviews.sort_values("decided_at", kind="stable").groupby("example_id").tail(1)
    return {row["example_id"]: row for row in latest.to_dict("records")}


def _joined(events: pd.DataFrame, signals_agg: pd.DataFrame | None, quality: pd.DataFrame | None) -> pd.DataFrame:
    frame = events.drop_duplicates("event_id").reset_index(drop=True)
    if signals_agg is not None and not signals_agg.empty:
        wanted = [c for c in ("event_id", "score", "edited_text") if c in signals_agg.columns]
        frame = frame.merge(signals_agg[wanted], on="event_id", how="left")
    for column, default in (("score", 0.0), ("edited_text", None)):
        if column not in frame.columns:
            frame[column] = default
    frame["score"] = frame["score"].fillna(0.0).astype(float)
    if quality is not None and not quality.empty:
        frame = frame.merge(quality[["event_id", "quality_score", "passed", "failed_checks"]], on="event_id",
                            how="left")
    else:
        frame["quality_score"], frame["passed"], frame["failed_checks"] = np.nan, None, None
    return frame


def _has_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _quality_text(row: Mapping) -> str:
    if pd.isna(row["quality_score"]):
        return "quality unchecked"
    failed = f" (failed {row['failed_checks']})" if _has_text(row["failed_checks"]) else ""
    return f"quality {row['quality_score']:.2f}{failed}"


def _candidates(frame: pd.DataFrame, strategy: str, limits: CurationLimits, vectors: np.ndarray | None,
                mean_logprobs: np.ndarray | None) -> list[tuple[int, float, str]]:
    """(row, score, reason) of every event ``strategy`` would pick, best first."""
    passed = frame["passed"]
    quality = frame["quality_score"].astype(float)
    edited = frame["edited_text"].map(_has_text)
    score = frame["score"]
    # Events the automatic checks and the users did not object to: fit as targets for the ranking strategies.
    acceptable = ~edited & (passed.astype(object) != False) & (score >= 0)  # noqa: E712 - None (unchecked) passes
    picked: list[tuple[int, float, str]] = []
    if strategy == "user_edit":
        for row in frame.index[edited]:
            picked.append((row, float(score[row]), f"user edit (signals {score[row]:+.1f})"))
    elif strategy == "high_quality":
        mask = (passed.astype(object) == True) & (quality >= limits.high_quality_min_quality) \
            & (score > limits.high_quality_min_score) & ~edited  # noqa: E712 - object column of True/False/None
        for row in frame.index[mask]:
            picked.append((row, float(score[row] + quality[row]),
                           f"{_quality_text(frame.loc[row])}, signals {score[row]:+.1f}"))
    elif strategy == "hard_example":
        mask = ((passed.astype(object) == False) | (quality < limits.hard_max_quality) | (score < 0)) & ~edited  # noqa: E712
        for row in frame.index[mask]:
            badness = -float(score[row]) + (1.0 - (0.0 if pd.isna(quality[row]) else float(quality[row])))
            picked.append((row, badness, f"hard: {_quality_text(frame.loc[row])}, signals {score[row]:+.1f}"))
    elif strategy == "active_learning" and mean_logprobs is not None:
        for row in frame.index[acceptable & ~np.isnan(mean_logprobs)]:
            picked.append((row, -float(mean_logprobs[row]),
                           f"uncertain: mean token log-prob {mean_logprobs[row]:.3f}"))
    elif strategy == "diverse" and vectors is not None and len(vectors):
        centroid = vectors.mean(axis=0)
        centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
        distance = 1.0 - vectors @ centroid
        for row in frame.index[acceptable]:
            picked.append((row, float(distance[row]), f"diverse: cosine distance {distance[row]:.3f} from the "
                                                      f"window centroid"))
    return sorted(picked, key=lambda item: (-item[1], frame.at[item[0], "event_id"]))


def _aligned(values: np.ndarray | Mapping[str, float] | pd.Series | None, events: pd.DataFrame,
             what: str) -> np.ndarray | None:
    if values is None:
        return None
    if isinstance(values, Mapping | pd.Series):
        return np.array([float(values.get(e, np.nan)) for e in events["event_id"]], dtype=float)
    array = np.asarray(values, dtype=float)
    if len(array) != len(events):
        raise ValueError(f"curate: {what} has {len(array)} rows for {len(events)} events; pass one per event, in "
                         f"the events' order (or a mapping by event_id)")
    return array


def curate_window(events: pd.DataFrame, signals_agg: pd.DataFrame | None, quality: pd.DataFrame | None,
                  embeddings: np.ndarray | None, reviews: pd.DataFrame | None, *,
                  strategies: Sequence[str] = CURATION_STRATEGIES, limits: CurationLimits | None = None,
                  mean_logprobs: np.ndarray | Mapping[str, float] | pd.Series | None = None,
                  window: tuple[dt.date, dt.date] | None = None,
                  now: pd.Timestamp | None = None) -> Curation:
    """Curate ``events`` (INFERENCE_EVENTS rows) into CuratedSchema rows, with counts of what was left out.

    ``signals_agg`` is ``aggregate_signals`` output (score, edited_text per event); ``quality`` QUALITY rows;
    ``embeddings`` one L2-normalised prompt vector per event row (None: MinHash for near duplicates and no
    ``diverse`` picks); ``mean_logprobs`` the serving model's mean token log-prob of each response (None: no
    ``active_learning`` picks); ``reviews`` REVIEWS rows; ``window`` the (start, end) days, by default the
    events' first and last day.
    """
    unknown = [s for s in strategies if s not in CURATION_STRATEGIES]
    if unknown:
        raise ValueError(f"curate: unknown strategies {unknown}; expected some of {list(CURATION_STRATEGIES)}")
    limits = limits or CurationLimits()
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    empty = Curation(pd.DataFrame(columns=CURATED.columns), 0, 0, 0, "none", 0)
    if events.empty:
        return empty
    if embeddings is not None and len(embeddings) != len(events):
        raise ValueError(f"curate: embeddings has {len(embeddings)} rows for {len(events)} events; pass one "
                         f"prompt vector per event, in the events' order")
    keep = ~events["event_id"].duplicated().to_numpy()
    vectors = None if embeddings is None else np.asarray(embeddings, dtype=np.float32)[keep]
    logprobs = _aligned(mean_logprobs, events, "mean_logprobs")
    logprobs = None if logprobs is None else logprobs[keep]
    frame = _joined(events, signals_agg, quality)
    if window is None:
        window = (min(frame["day"]), max(frame["day"]))
    signatures = None if vectors is not None else minhash_signatures(
        frame["prompt"].tolist(), limits.minhash_permutations, limits.shingle_size)
    dedup = _Deduplicator(vectors, signatures, limits)

    chosen: list[dict] = []
    taken: set[int] = set()
    counts = {"candidates": 0, "exact": 0, "near": 0}
    ordered = [s for s in CURATION_STRATEGIES if s in strategies]
    caps = {"active_learning": limits.active_count, "diverse": limits.diverse_count}
    for strategy in ordered:
        cap = min(limits.max_per_strategy, caps.get(strategy, limits.max_per_strategy))
        accepted = 0
        for row, score, reason in _candidates(frame, strategy, limits, vectors, logprobs):
            if row in taken:
                continue
            if accepted >= cap or len(chosen) >= limits.max_total:
                break
            counts["candidates"] += 1
            event = frame.loc[row]
            target = event["edited_text"] if strategy == "user_edit" else event["response"]
            if not _has_text(target):
                continue
            exact_key = normalized_text(event["prompt"]) + "\x00" + normalized_text(target)
            duplicate = dedup.duplicate(row, exact_key)
            if duplicate:
                counts[duplicate] += 1
                taken.add(row)
                continue
            dedup.keep(row, exact_key)
            taken.add(row)
            accepted += 1
            chosen.append({
                "example_id": curated_example_id(event["event_id"]), "event_id": event["event_id"],
                "day": event["day"], "strategy": strategy, "prompt": event["prompt"], "response": target,
                "score": score, "reason": reason, "model_version": int(event["model_version"]),
                "window_start": window[0], "window_end": window[1], "status": "pending", "curated_at": now,
            })
    examples, rejected = _apply_reviews(chosen, _latest_reviews(reviews))
    frame_out = pd.DataFrame(examples, columns=CURATED.columns)
    return Curation(
        frame_out, counts["candidates"], counts["exact"], counts["near"],
        "embedding" if vectors is not None else "minhash", rejected,
        by_strategy={s: int((frame_out["strategy"] == s).sum()) for s in ordered},
        by_status=frame_out["status"].value_counts().to_dict() if len(frame_out) else {},
    )


def _apply_reviews(chosen: list[dict], latest: Mapping[str, Mapping]) -> tuple[list[dict], int]:
    kept, rejected = [], 0
    for example in chosen:
        review = latest.get(example["example_id"])
        decision = review["decision"] if review is not None else None
        if decision == "reject":
            rejected += 1
            continue
        if decision == "edit" and _has_text(review["edited_response"]):
            example = {**example, "response": review["edited_response"], "status": "edited",
                       "reason": f"{example['reason']}; edited by {review['reviewer']}"}
        elif decision == "approve":
            example = {**example, "status": "approved", "reason": f"{example['reason']}; approved by "
                                                                   f"{review['reviewer']}"}
        kept.append(example)
    return kept, rejected


def curate(events: pd.DataFrame, signals_agg: pd.DataFrame | None, quality: pd.DataFrame | None,
           embeddings: np.ndarray | None, reviews: pd.DataFrame | None, *,
           strategies: Sequence[str] = CURATION_STRATEGIES, limits: CurationLimits | None = None,
           mean_logprobs: np.ndarray | Mapping[str, float] | pd.Series | None = None,
           window: tuple[dt.date, dt.date] | None = None) -> pd.DataFrame:
    """CuratedSchema rows for ``events``; see :func:`curate_window` (which also reports what was dropped)."""
    return curate_window(events, signals_agg, quality, embeddings, reviews, strategies=strategies, limits=limits,
                         mean_logprobs=mean_logprobs, window=window).examples


def is_training_target(curated: pd.DataFrame) -> pd.Series:
    """Which curated rows are SFT targets: reviewed ones (approved, edited) and pending ones that are not hard."""
    return curated["status"].isin(_TARGET_STATUSES) | (
        (curated["status"] == "pending") & (curated["strategy"] != "hard_example"))


def window_source(start: dt.date, end: dt.date) -> str:
    """The ``source`` of curated training examples: the lineage node of their feedback window."""
    return feedback_node(start, end)


def training_examples(curated: pd.DataFrame, window: tuple[dt.date, dt.date]) -> pd.DataFrame:
    """ExamplesSchema rows (dataset ``feedback``, split ``train``) of the curated rows that are SFT targets."""
    targets = curated[is_training_target(curated)] if len(curated) else curated
    rows = [{
        "dataset": FEEDBACK_DATASET, "split": FEEDBACK_SPLIT, "example_id": r.example_id, "input": r.prompt,
        "target": r.response,
        "messages": json.dumps([{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.response}]),
        "metadata": json.dumps({"event_id": r.event_id, "strategy": r.strategy, "status": r.status,
                                "day": str(r.day), "model_version": int(r.model_version), "score": float(r.score)}),
        "source": window_source(*window),
    } for r in targets.itertuples()]
    return pd.DataFrame(rows, columns=EXAMPLES.columns)


def mean_token_logprobs(engine, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """The mean log-prob per token of each response given its prompt, as ``engine`` (an InferenceEngine)
    scores it: the prompt is rendered as a user turn in the model's chat format. NaN for an empty response."""
    from crucible.inference import LoglikelihoodRequest

    if len(prompts) != len(responses):
        raise ValueError(f"mean_token_logprobs: {len(prompts)} prompts but {len(responses)} responses")
    contexts = [_chat_context(engine, prompt) for prompt in prompts]
    wanted = [i for i, response in enumerate(responses) if _has_text(response)]
    scores = np.full(len(prompts), np.nan)
    if wanted:
        scored = engine.loglikelihood([LoglikelihoodRequest(contexts[i], responses[i]) for i in wanted])
        for i, result in zip(wanted, scored, strict=True):
            scores[i] = result.logprob / max(result.num_tokens, 1)
    return scores


def _chat_context(engine, prompt: str) -> str:
    messages = [{"role": "user", "content": prompt}]
    if engine.renderer is not None:
        return engine.renderer.render_text(messages, add_generation_prompt=True)
    if getattr(engine.tokenizer, "chat_template", None):
        return engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return prompt


def days_of(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day of a window, both ends included."""
    if end < start:
        raise ValueError(f"feedback window {start}..{end} ends before it starts")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


EmbedTexts = Callable[[list[str]], np.ndarray]
ScoreResponses = Callable[[list[str], list[str]], np.ndarray]


def curate_from_lake(lake: DeltaLake, start: dt.date, end: dt.date, *, embed: EmbedTexts | None = None,
                     score_responses: ScoreResponses | None = None,
                     strategies: Sequence[str] = CURATION_STRATEGIES,
                     limits: CurationLimits | None = None) -> Curation:
    """Curate the window ``start..end`` from the lake: its INFERENCE_EVENTS, SIGNALS (aggregated), QUALITY
    and every REVIEW. ``embed`` maps prompts to L2-normalised vectors (e.g. ``embed_cached`` bound to an
    embedder); ``score_responses`` gives the mean token log-prob of each (prompt, response), e.g.
    :func:`mean_token_logprobs` bound to the serving model."""
    from crucible.feedback.signals import aggregate_signals

    days = days_of(start, end)
    events = _read(lake, INFERENCE_EVENTS, days).sort_values("event_id").reset_index(drop=True)
    signals = _read(lake, SIGNALS, days)
    quality = _read(lake, QUALITY, days)
    reviews = lake.read(REVIEWS) if lake.exists(REVIEWS) else None
    prompts, responses = events["prompt"].tolist(), events["response"].tolist()
    vectors = embed(prompts) if embed is not None and prompts else None
    wants_logprobs = score_responses is not None and "active_learning" in strategies and prompts
    logprobs = score_responses(prompts, responses) if wants_logprobs else None
    return curate_window(events, aggregate_signals(signals) if len(signals) else None, quality, vectors, reviews,
                         strategies=strategies, limits=limits, mean_logprobs=logprobs, window=(start, end))


def _read(lake: DeltaLake, spec: TableSpec, days: list[dt.date]) -> pd.DataFrame:
    if not lake.exists(spec):
        return pd.DataFrame(columns=spec.columns)
    return lake.read(spec, where={"day": days})


@dataclass
class StoredCuration:
    """The writes of one curation: the CURATED rows of its days, and the training examples slice."""

    curated: StoredTable
    examples: StoredTable
    lineage_node: str  # dataset:feedback@v<N>, the examples-table version holding this window's examples


def store_curation(lake: DeltaLake, curation: Curation, start: dt.date, end: dt.date, *,
                   created_by: str) -> StoredCuration:
    """Replace the curated rows of the window's days, write the window's SFT targets as the ``feedback/train``
    slice of datasets/examples (a new table version), and record ``feedback:<window> -[curated_from]->
    dataset:feedback@v<N>`` in registry/lineage_edges."""
    days = days_of(start, end)
    source = window_source(start, end)
    curated = store_validated(lake, CURATED, curation.examples, source=source, replace_where={"day": days})
    kept = lake.read(CURATED, where={"day": days})
    examples = store_validated(lake, EXAMPLES, training_examples(kept, (start, end)), source=source,
                               replace_where={"dataset": FEEDBACK_DATASET, "split": FEEDBACK_SPLIT})
    node = dataset_node(FEEDBACK_DATASET, examples.version)
    edge = pd.DataFrame([{"source": source, "target": node, "relation": "curated_from", "registration_id": None,
                          "created_by": created_by, "created_at": pd.Timestamp.now(tz="UTC")}],
                        columns=LINEAGE_EDGES.columns)
    store_validated(lake, LINEAGE_EDGES, edge, source=created_by)
    return StoredCuration(curated, examples, node)
