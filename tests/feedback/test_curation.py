"""Curation: every strategy picks what it should, duplicates go (embeddings or MinHash), reviews apply, and a
window curated on a real lake becomes a new version of datasets/examples with its lineage edge."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from crucible.feedback.curation import (
    CurationLimits,
    curate,
    curate_window,
    curated_example_id,
    is_training_target,
    minhash_signatures,
    training_examples,
)
from schemas import CURATED, EXAMPLES

DAY = dt.date(2026, 11, 3)
NOW = pd.Timestamp("2026-11-04T00:00:00Z")


def events_frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """(event_id, prompt, response) -> INFERENCE_EVENTS rows of DAY."""
    return pd.DataFrame([{
        "event_id": event_id, "day": DAY, "timestamp": pd.Timestamp(DAY, tz="UTC"), "model_name": "tiny-gpt",
        "model_version": 1, "prompt": prompt, "response": response, "prompt_tokens": 3, "response_tokens": 3,
        "latency_ms": 5.0, "pii_redactions": 0, "deployment": "prod", "user_id": None, "session_id": None,
        "source": "test", "ingested_at": pd.Timestamp(DAY, tz="UTC")} for event_id, prompt, response in rows])


def signals_frame(rows: dict[str, tuple[float, str | None]]) -> pd.DataFrame:
    """event_id -> (score, edited_text): the shape aggregate_signals gives."""
    return pd.DataFrame([{"event_id": e, "score": s, "n_signals": 1, "edited_text": t} for e, (s, t) in rows.items()])


def quality_frame(rows: dict[str, tuple[float, bool]]) -> pd.DataFrame:
    return pd.DataFrame([{"event_id": e, "quality_score": q, "passed": p, "failed_checks": "" if p else "refusal"}
                         for e, (q, p) in rows.items()])


def review(example_id: str, decision: str, at: str, edited: str | None = None, reviewer: str = "ana") -> dict:
    return {"example_id": example_id, "reviewer": reviewer, "decision": decision, "edited_response": edited,
            "note": None, "decided_at": pd.Timestamp(at, tz="UTC")}


def unit(vector: list[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture()
def world():
    events = events_frame([
        ("e-edit", "Translate 'cat' to French", "gato"),
        ("e-good", "What is 2 + 2?", "2 + 2 = 4."),
        ("e-bad", "Explain photosynthesis", "I cannot help with that."),
        ("e-thumbdown", "Name a prime number", "Nine."),
        ("e-plain", "Say hello", "Hello!"),
        ("e-odd", "Write a haiku about winter rain", "Cold rain on the roof"),
        ("e-unsure", "What year did Rome fall?", "Maybe 476, I think."),
    ])
    signals = signals_frame({"e-edit": (5.0, "chat"), "e-good": (3.0, None), "e-thumbdown": (-2.0, None),
                             "e-plain": (0.0, None)})
    quality = quality_frame({"e-edit": (0.6, True), "e-good": (0.95, True), "e-bad": (0.1, False),
                             "e-thumbdown": (0.8, True), "e-plain": (0.8, True), "e-odd": (0.8, True),
                             "e-unsure": (0.8, True)})
    # Prompts are far apart except e-odd, which points away from the rest (the diverse pick).
    vectors = np.stack([unit(v) for v in ([1, 0, 0, 0.1], [0.9, 0.3, 0, 0], [0.8, 0, 0.4, 0], [0.9, 0, 0, 0.4],
                                          [1, 0.2, 0.2, 0], [-1, 0.1, 0, 0], [0.7, 0.5, 0.1, 0])])
    logprobs = {"e-edit": -1.0, "e-good": -0.5, "e-bad": -2.0, "e-thumbdown": -1.5, "e-plain": -0.4, "e-odd": -0.6,
                "e-unsure": -4.0}
    return events, signals, quality, vectors, logprobs


def by_event(curated: pd.DataFrame) -> dict[str, dict]:
    return {row["event_id"]: row for row in curated.to_dict("records")}


def test_each_strategy_picks_its_events_with_a_reason(world):
    events, signals, quality, vectors, logprobs = world
    limits = CurationLimits(active_count=1, diverse_count=1)
    picked = by_event(curate(events, signals, quality, vectors, None, limits=limits, mean_logprobs=logprobs))
    assert picked["e-edit"]["strategy"] == "user_edit" and picked["e-edit"]["response"] == "chat"
    assert picked["e-good"]["strategy"] == "high_quality"
    assert picked["e-bad"]["strategy"] == "hard_example" and "refusal" in picked["e-bad"]["reason"]
    assert picked["e-thumbdown"]["strategy"] == "hard_example" and "-2.0" in picked["e-thumbdown"]["reason"]
    assert picked["e-unsure"]["strategy"] == "active_learning" and "-4.000" in picked["e-unsure"]["reason"]
    assert picked["e-odd"]["strategy"] == "diverse"
    assert "e-plain" not in picked  # neutral, ordinary, confident: nothing to learn from
    assert {row["status"] for row in picked.values()} == {"pending"}
    assert picked["e-edit"]["example_id"] == curated_example_id("e-edit")


def test_output_satisfies_the_curated_schema_and_hard_examples_are_not_targets(world):
    events, signals, quality, vectors, logprobs = world
    curated = curate(events, signals, quality, vectors, None, mean_logprobs=logprobs)
    CURATED.model.validate(curated)
    targets = set(curated[is_training_target(curated)]["event_id"])
    assert "e-bad" not in targets and "e-thumbdown" not in targets
    assert {"e-edit", "e-good"} <= targets
    examples = training_examples(curated, (DAY, DAY))
    EXAMPLES.model.validate(examples)
    assert set(examples["dataset"]) == {"feedback"} and set(examples["split"]) == {"train"}
    assert set(examples["source"]) == {f"feedback:{DAY}..{DAY}"}
    edit = examples[examples["example_id"] == curated_example_id("e-edit")].iloc[0]
    assert json.loads(edit["messages"]) == [{"role": "user", "content": "Translate 'cat' to French"},
                                            {"role": "assistant", "content": "chat"}]


def test_without_logprobs_or_embeddings_those_strategies_pick_nothing(world):
    events, signals, quality, _, _ = world
    curated = curate(events, signals, quality, None, None)
    assert not {"active_learning", "diverse"} & set(curated["strategy"])
    with pytest.raises(ValueError, match="embeddings has 2 rows for 7 events"):
        curate(events, signals, quality, np.zeros((2, 4)), None)
    with pytest.raises(ValueError, match=r"unknown strategies \['popular'\]"):
        curate(events, signals, quality, None, None, strategies=["popular"])


def test_exact_duplicates_keep_the_higher_priority_pick():
    events = events_frame([("a", "What is 2 + 2?", "4"), ("b", "what is  2 + 2?", "4"), ("c", "Capital of Peru?", "Lima")])
    signals = signals_frame({"a": (3.0, None), "b": (-2.0, None), "c": (3.0, None)})
    quality = quality_frame({"a": (0.9, True), "b": (0.9, True), "c": (0.9, True)})
    result = curate_window(events, signals, quality, None, None)
    assert set(result.examples["event_id"]) == {"a", "c"}  # b is a hard example of the same text
    assert result.exact_duplicates == 1


def test_near_duplicates_by_embedding_cosine():
    events = events_frame([("a", "p1", "r1"), ("b", "p2", "r2"), ("c", "p3", "r3")])
    signals = signals_frame({e: (3.0, None) for e in "abc"})
    quality = quality_frame({e: (0.9, True) for e in "abc"})
    vectors = np.stack([unit([1, 0, 0]), unit([1, 0.2, 0]), unit([0, 1, 0])])  # cos(a, b) = 0.98
    result = curate_window(events, signals, quality, vectors, None)
    assert len(result.examples) == 2 and result.near_duplicates == 1 and result.near_duplicate_method == "embedding"
    loose = curate_window(events, signals, quality, vectors, None, limits=CurationLimits(near_duplicate_cosine=0.99))
    assert len(loose.examples) == 3 and loose.near_duplicates == 0


def test_near_duplicates_by_minhash_without_embeddings():
    base = "How do I reset the password of my account on the mobile app?"
    events = events_frame([("a", base, "Open settings."), ("b", base.replace("How do", "how  do") + "!", "Go to "
                           "settings."), ("c", "Which trains run from Lyon to Paris on Sundays?", "The TGV.")])
    signals = signals_frame({e: (3.0, None) for e in "abc"})
    quality = quality_frame({e: (0.9, True) for e in "abc"})
    result = curate_window(events, signals, quality, None, None)
    assert result.near_duplicate_method == "minhash"
    assert set(result.examples["event_id"]) == {"a", "c"} and result.near_duplicates == 1


def test_minhash_estimates_jaccard_of_shingle_sets():
    texts = ["the quick brown fox jumps over the lazy dog", "the quick brown fox jumped over a lazy dog",
             "completely different words in this sentence"]
    signatures = minhash_signatures(texts, permutations=256, shingle_size=5)

    def shingles(text: str) -> set[str]:
        return {text[i:i + 5] for i in range(len(text) - 4)}

    for i, j in ((0, 1), (0, 2)):
        true = len(shingles(texts[i]) & shingles(texts[j])) / len(shingles(texts[i]) | shingles(texts[j]))
        estimate = float((signatures[i] == signatures[j]).mean())
        assert abs(estimate - true) < 0.1, (i, j, true, estimate)


def test_reviews_reject_edit_and_approve_by_latest_decision(world):
    events, signals, quality, vectors, logprobs = world
    reviews = pd.DataFrame([
        review(curated_example_id("e-good"), "approve", "2026-11-04T10:00"),
        review(curated_example_id("e-good"), "reject", "2026-11-04T11:00", reviewer="bo"),  # latest wins
        review(curated_example_id("e-bad"), "edit", "2026-11-04T10:00", edited="Plants turn light into sugar."),
        review(curated_example_id("e-thumbdown"), "approve", "2026-11-04T10:00"),
        review(curated_example_id("e-edit"), "reject", "2026-11-04T09:00"),
        review(curated_example_id("e-edit"), "approve", "2026-11-04T12:00", reviewer="bo"),
    ])
    result = curate_window(events, signals, quality, vectors, reviews, mean_logprobs=logprobs)
    picked = by_event(result.examples)
    assert "e-good" not in picked and result.rejected_by_review == 1
    assert picked["e-bad"]["status"] == "edited" and picked["e-bad"]["response"] == "Plants turn light into sugar."
    assert picked["e-thumbdown"]["status"] == "approved" and picked["e-edit"]["status"] == "approved"
    targets = set(result.examples[is_training_target(result.examples)]["event_id"])
    assert {"e-bad", "e-thumbdown"} <= targets  # a reviewed hard example becomes a target


def test_limits_cap_each_strategy_and_the_total():
    events = events_frame([(f"e{i}", f"question number {i} about topic {i * 7}", f"answer {i}") for i in range(12)])
    signals = signals_frame({f"e{i}": (float(i), None) for i in range(12)})
    quality = quality_frame({f"e{i}": (0.9, True) for i in range(12)})
    capped = curate(events, signals, quality, None, None, limits=CurationLimits(max_per_strategy=3))
    assert list(capped["event_id"]) == ["e11", "e10", "e9"]  # the best scored first
    total = curate(events, signals, quality, None, None, limits=CurationLimits(max_total=2))
    assert len(total) == 2


def test_mean_token_logprobs_match_the_engine_and_rank_the_models_own_answer_first():
    import torch

    from crucible.feedback.curation import mean_token_logprobs
    from crucible.inference import InferenceEngine, LoglikelihoodRequest
    from crucible.train.config import TinyModelSpec
    from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
    from crucible.train.renderers import get_renderer

    spec = TinyModelSpec(family="llama", vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                         max_position_embeddings=128)
    tokenizer = train_bpe_tokenizer(["the cat sat on the mat", "what is two plus two", "four"] * 8,
                                    vocab_size=spec.vocab_size)
    model = build_tiny_causal_lm(spec, tokenizer, seed=1)
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)  # far from uniform, so the greedy answer is clearly the likeliest
    engine = InferenceEngine(model, tokenizer, renderer=get_renderer("chatml"))
    prompt = "what is two plus two"
    own = engine.generate([engine_request(prompt)])[0]
    assert own.token_ids
    own_text = tokenizer.decode(list(own.token_ids), skip_special_tokens=True)
    scores = mean_token_logprobs(engine, [prompt, prompt, prompt], [own_text, "mat cat the sat on", ""])
    assert np.isnan(scores[2])
    context = get_renderer("chatml").render_text([{"role": "user", "content": prompt}], add_generation_prompt=True)
    [direct] = engine.loglikelihood([LoglikelihoodRequest(context, "mat cat the sat on")])
    assert scores[1] == pytest.approx(direct.logprob / direct.num_tokens)
    assert scores[0] > scores[1]


def engine_request(prompt: str):
    from crucible.inference import GenerationRequest

    return GenerationRequest(messages=[{"role": "user", "content": prompt}], max_new_tokens=6)


def test_a_window_on_a_real_lake_is_rerunnable_and_follows_reviews(tmp_path, world):
    from crucible.feedback.curation import curate_from_lake, store_curation
    from crucible.lake import DeltaLake
    from crucible.registry.registry import lineage_edges
    from crucible.train.data import RowsNotLoadedError, select_feedback_rows
    from schemas import INFERENCE_EVENTS, LINEAGE_EDGES, QUALITY, REVIEWS, SIGNALS

    events, _, quality, _, _ = world
    lake = DeltaLake(tmp_path / "lake")
    lake.replace_where(INFERENCE_EVENTS, events, {"day": DAY})
    stamp = pd.Timestamp("2026-11-03T12:00", tz="UTC")
    signals = pd.DataFrame([
        {"signal_id": "s1", "event_id": "e-edit", "signal": "edit", "weight": 5.0, "edited_text": "chat"},
        {"signal_id": "s2", "event_id": "e-good", "signal": "thumbs_up", "weight": 3.0, "edited_text": None},
        {"signal_id": "s3", "event_id": "e-thumbdown", "signal": "thumbs_down", "weight": -2.0, "edited_text": None},
    ]).assign(day=DAY, timestamp=stamp, source="test", ingested_at=stamp)
    lake.replace_where(SIGNALS, signals[SIGNALS.columns], {"day": DAY})
    full_quality = quality.assign(day=DAY, model_version=1, format_score=1.0, length_score=1.0, refusal_score=1.0,
                                  repetition_score=1.0, judge_score=None, checked_at=stamp)
    lake.replace_where(QUALITY, full_quality[QUALITY.columns], {"day": DAY})

    first = curate_from_lake(lake, DAY, DAY)
    assert set(first.examples["event_id"]) >= {"e-edit", "e-good", "e-bad", "e-thumbdown"}
    stored = store_curation(lake, first, DAY, DAY, created_by="test")
    assert stored.curated.accepted == len(first.examples) and stored.curated.quarantined == 0
    window = f"feedback:{DAY}..{DAY}"
    assert (window, stored.lineage_node, "curated_from") in set(
        lineage_edges(lake)[["source", "target", "relation"]].itertuples(index=False, name=None))
    feedback = select_feedback_rows(lake, DAY, DAY)
    assert feedback.version == stored.examples.version and feedback.window == window
    assert set(feedback.rows["example_id"]) == {curated_example_id(e) for e in ("e-edit", "e-good")}

    again = store_curation(lake, curate_from_lake(lake, DAY, DAY), DAY, DAY, created_by="test")
    assert len(lake.read(CURATED)) == len(first.examples)  # a re-run replaces the window's rows
    assert len(lake.read(LINEAGE_EDGES)) == 2  # v<N> and v<N+1> each curated from the window, once

    lake.upsert(REVIEWS, pd.DataFrame([review(curated_example_id("e-good"), "reject", "2026-11-04T10:00")]))
    store_curation(lake, curate_from_lake(lake, DAY, DAY), DAY, DAY, created_by="test")
    assert "e-good" not in set(lake.read(CURATED)["event_id"])
    assert set(select_feedback_rows(lake, DAY, DAY).rows["example_id"]) == {curated_example_id("e-edit")}
    with pytest.raises(RowsNotLoadedError, match=r"materialize feedback/curated_examples with "
                                                 r"window_start=2026-11-01 and window_end=2026-11-03 first"):
        select_feedback_rows(lake, dt.date(2026, 11, 1), DAY)
    assert again.examples.version < lake.version(EXAMPLES)
