"""Quality checks: each check flags what it should and leaves good answers alone, rows match QualitySchema,
and a judge model on a real tiny Llama scores through the inference engine's log-likelihoods."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
import torch

from crucible.feedback.quality import (
    LoglikelihoodJudge,
    QualitySettings,
    RatingJudge,
    format_defects,
    length_score,
    parse_rating,
    quality_frame,
    quality_summary,
    refusal_score,
    repetition_ratio,
    score_response,
)
from crucible.inference import InferenceEngine
from crucible.train.config import TinyModelSpec
from crucible.train.models import build_tiny_causal_lm, train_bpe_tokenizer
from crucible.train.renderers import get_renderer
from schemas import QUALITY

DAY = dt.date(2026, 11, 2)
GOOD = "Natalia sold 48 clips in April and 24 in May, so she sold 72 clips in total."


@pytest.mark.parametrize(("text", "defects"), [
    (GOOD, []),
    ("72", []),  # a short answer needs no sentence punctuation
    ("   \n ", ["empty"]),
    ("<|im_start|>assistant\nThe answer is 72.", ["leaked_template"]),
    ("The answer is 72.<|eot_id|>", ["leaked_template"]),
    ("Run this:\n```python\nprint(72)\n", ["unbalanced_code_fence"]),
    ("Run this:\n```python\nprint(72)\n```", []),
    ("The total (April plus May is 72 clips.", ["unbalanced_brackets"]),
    ("Use `x[0` to index, and (carefully) check it.", []),  # code spans are exempt from bracket rules
    ("She sold 48 clips in April and then", ["incomplete_ending"]),
    ("Call <|im_end|> (now and", ["leaked_template", "unbalanced_brackets", "incomplete_ending"]),
])
def test_format_defects(text, defects):
    assert format_defects(text) == defects


def test_format_score_fails_each_serious_defect_but_not_a_stray_bracket():
    assert score_response(GOOD).format_score == 1.0
    assert "format" in score_response("She sold 48 clips in April and then").failed_checks
    stray = score_response("Steps: 1) add 48 and 24. The answer is 72.")
    assert stray.format_score == 0.75 and stray.passed


@pytest.mark.parametrize(("words", "expected"), [(0, 0.0), (1, 0.5), (2, 1.0), (10, 1.0), (20, 1.0), (40, 0.5)])
def test_length_score_against_bounds(words, expected):
    settings = QualitySettings(min_words=2, max_words=20)
    assert length_score(" ".join(["word"] * words), settings) == pytest.approx(expected)


@pytest.mark.parametrize(("text", "expected"), [
    ("I can't help with that.", 0.0),
    ("I\u2019m sorry, but I cannot assist with this request.", 0.0),
    ("As an AI language model, I do not have opinions.", 0.0),
    ("I must decline to answer.", 0.0),
    ("I am unable to provide medical advice.", 0.0),
    (GOOD, 1.0),
    ("I can help with that: the answer is 72.", 1.0),
    ("I can't believe how many clips she sold: 72.", 1.0),
    ("Here is the full derivation. " + "She sold 48 clips and then half as many. " * 8
     + "I can't verify the shop's records, but the arithmetic gives 72.", 0.5),
])
def test_refusal_score(text, expected):
    assert refusal_score(text) == expected


def test_extra_refusal_patterns_come_from_settings():
    settings = QualitySettings(extra_refusal_patterns=(r"\bno comment\b",))
    assert refusal_score("No comment.", settings) == 0.0
    assert refusal_score("No comment.") == 1.0


def test_repetition_ratio_by_hand():
    # tokens a b c a b c: trigrams abc bca cab abc -> 3 distinct of 4
    assert repetition_ratio("a b c a b c") == pytest.approx(0.25)
    # lines: 3 of 4 distinct; trigram share is lower, so the line share wins
    assert repetition_ratio("one line here\nanother line here\none line here\nlast one") == pytest.approx(0.25)
    assert repetition_ratio(GOOD) == 0.0
    looped = score_response("the cat sat on the mat " * 6)
    assert looped.repetition_score < 0.3 and "repetition" in looped.failed_checks


def _events(responses: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": [f"e{i}" for i in range(len(responses))], "day": DAY, "model_version": 3,
        "prompt": ["How many clips did Natalia sell in April and May?"] * len(responses), "response": responses,
        "latency_ms": 1.0,  # extra columns of the events table are ignored
    })


def test_quality_frame_rows_match_schema_and_flag_the_bad_answers():
    responses = [GOOD, "", "I'm sorry, but I can't help with that.", "the cat sat on the mat " * 6,
                 "The answer is 72.<|im_end|>", "Sure. " + "word " * 1000 + "done."]
    frame = quality_frame(_events(responses))
    QUALITY.model.validate(frame)
    assert frame["event_id"].tolist() == [f"e{i}" for i in range(6)]
    assert frame["failed_checks"].tolist() == ["", "format,length", "refusal", "format,repetition", "format",
                                               "length,repetition"]
    assert frame["passed"].tolist() == [True, False, False, False, False, False]
    assert frame["judge_score"].isna().all()
    assert frame.loc[0, "quality_score"] == 1.0
    summary = quality_summary(frame)
    assert summary["pass_rate"] == pytest.approx(1 / 6)
    assert summary["failures_by_check"] == {"format": 3, "length": 2, "refusal": 1, "repetition": 2, "judge": 0}


def test_quality_frame_names_missing_columns():
    with pytest.raises(ValueError, match=r"lack columns \['model_version'\]"):
        quality_frame(_events([GOOD]).drop(columns=["model_version"]))
    with pytest.raises(ValueError, match=r"lack columns \['prompt'\]"):
        quality_frame(_events([GOOD]).drop(columns=["prompt"]), judge=RatingJudge(engine=None))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="min_words <= max_words"):
        QualitySettings(min_words=10, max_words=5)
    with pytest.raises(ValueError, match="pass_threshold"):
        QualitySettings(pass_threshold=1.5)


@pytest.mark.parametrize(("reply", "rating"), [("4", 4), ("Rating: 5/5", 5), ("I'd say 2.", 2), ("10 out of 10", None),
                                               ("3.5", None), ("no idea", None), ("Score 1", 1)])
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


# -- a judge model: a real tiny Llama built from a config -------------------------------------------------

SPEC = TinyModelSpec(family="llama", vocab_size=384, hidden_size=64, num_layers=2, num_heads=4,
                     max_position_embeddings=512)
REFUSAL = "I'm sorry, but I can't help with that."
TEACH_STEPS = 40


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [GOOD, REFUSAL, "You grade the answer of an AI assistant. Question: Answer: Is the answer helpful, "
              "correct and complete? Reply with Yes or No. Yes No"]
    return train_bpe_tokenizer(corpus * 4, vocab_size=SPEC.vocab_size)


@pytest.fixture(scope="module")
def judge_engine(tokenizer) -> InferenceEngine:
    model = build_tiny_causal_lm(SPEC, tokenizer, seed=3)
    return InferenceEngine(model, tokenizer, batch_size=4, renderer=get_renderer("chatml"))


def _direct_logprob(engine: InferenceEngine, context: str, continuation: str) -> float:
    """log p(continuation | context) from one plain forward pass, independent of the engine's batching."""
    tokenizer, model = engine.tokenizer, engine.model
    context_ids = tokenizer.encode(context)
    whole = tokenizer.encode(context + continuation)
    assert whole[:len(context_ids)] == context_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return float(sum(logprobs[i - 1, whole[i]] for i in range(len(context_ids), len(whole))))


def test_loglikelihood_judge_reads_p_yes_against_p_no(judge_engine):
    judge = LoglikelihoodJudge(judge_engine)
    prompts = ["How many clips did Natalia sell?"] * 2
    scores = judge.score(prompts, [GOOD, REFUSAL])
    for prompt, response, score in zip(prompts, [GOOD, REFUSAL], scores, strict=True):
        context, yes, no = judge.context(prompt, response)
        assert context.endswith("<|im_start|>assistant\n") and response in context
        gap = _direct_logprob(judge_engine, context, no) - _direct_logprob(judge_engine, context, yes)
        assert score == pytest.approx(1.0 / (1.0 + math.exp(gap)), abs=1e-5)
    assert scores[0] != scores[1]  # the answer reaches the model


def _teach(engine: InferenceEngine, judge: LoglikelihoodJudge, lessons: list[tuple[str, str, str]]) -> None:
    """A few AdamW steps on the verdict token only: the tiny model learns to say Yes to one answer, No to another."""
    tokenizer, model = engine.tokenizer, engine.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(TEACH_STEPS):
        optimizer.zero_grad()
        loss = torch.zeros(())
        for prompt, response, verdict in lessons:
            context, yes, no = judge.context(prompt, response)
            context_ids = tokenizer.encode(context)
            whole = tokenizer.encode(context + (yes if verdict == "yes" else no))
            logits = model(torch.tensor([whole])).logits[0]
            targets = torch.tensor(whole[len(context_ids):])
            loss = loss + torch.nn.functional.cross_entropy(logits[len(context_ids) - 1:len(whole) - 1], targets)
        loss.backward()
        optimizer.step()
    model.eval()


def test_a_taught_judge_passes_the_right_answer_and_fails_the_wrong_one(tokenizer):
    engine = InferenceEngine(build_tiny_causal_lm(SPEC, tokenizer, seed=5), tokenizer,
                             renderer=get_renderer("chatml"))
    judge = LoglikelihoodJudge(engine)
    prompt = "How many clips did Natalia sell?"
    _teach(engine, judge, [(prompt, GOOD, "yes"), (prompt, "The answer is 7 clips.", "no")])
    events = _events([GOOD, "The answer is 7 clips."]).assign(prompt=prompt)
    frame = quality_frame(events, judge=judge)
    QUALITY.model.validate(frame)
    assert frame.loc[0, "judge_score"] > 0.9 > 0.1 > frame.loc[1, "judge_score"]
    # Every rule-based check passes both answers: only the judge tells them apart.
    assert frame["failed_checks"].tolist() == ["", "judge"]
    assert frame["passed"].tolist() == [True, False]
    assert frame.loc[0, "quality_score"] == pytest.approx((4 + frame.loc[0, "judge_score"]) / 5)


def test_rating_judge_maps_the_models_reply(judge_engine):
    judge = RatingJudge(judge_engine, max_new_tokens=4)
    scores = judge.score(["How many clips?"] * 2, [GOOD, REFUSAL])
    assert len(judge.replies) == 2
    expected = [None if parse_rating(r) is None else (parse_rating(r) - 1) / 4 for r in judge.replies]
    assert scores == expected
    frame = quality_frame(_events([GOOD, REFUSAL]), judge=judge)
    # A reply without a rating leaves judge_score empty and the rule-based verdict alone.
    for row, score in zip(frame.itertuples(), frame["judge_score"], strict=True):
        assert ("judge" in row.failed_checks.split(",")) == (not pd.isna(score) and score < 0.5)
