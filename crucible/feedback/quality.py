"""Automatic quality checks of answered requests (format, length, refusal, repetition, an optional judge
model), each a score in 0..1 where 1 is best, with a pass flag per request."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pandas as pd

if TYPE_CHECKING:
    from crucible.inference import InferenceEngine

CHECKS = ("format", "length", "refusal", "repetition")

# Chat-template control strings of the common model families; one in an answer means the chat
# format leaked (a wrong renderer, a missing stop sequence).
TEMPLATE_MARKERS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
    "<start_of_turn>", "<end_of_turn>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>",
    "<|start|>", "<|message|>", "<|channel|>", "<｜Assistant｜>", "<｜User｜>", "<｜end▁of▁sentence｜>",
)

# Phrases that decline the request or hide behind being a model. Apostrophes are normalised to "'"
# before matching.
REFUSAL_PATTERNS = (
    r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:'t|not)|won't|am unable|'m unable|am not able)",
    r"\bI (?:can(?:'t|not)|won't|will not) (?:help|assist|comply|provide|do that|answer|fulfil|support|share|"
    r"create|generate|write|browse|access|verify)\b",
    r"\bI(?:'m| am) (?:unable|not able) to (?:help|assist|comply|provide|answer|do that|fulfil)",
    r"\bI must (?:decline|refuse)\b",
    r"\bas an AI\b",
    r"\bas a (?:large )?language model\b",
    r"\bagainst (?:my|our) (?:guidelines|policies|policy|programming)\b",
    r"\bI(?:'m| am) not (?:allowed|permitted) to\b",
)

# What a finished answer may end with: sentence punctuation, a closing bracket or quote after it,
# a number (a short numeric answer), a closing code fence, an emoji or a table row.
_COMPLETE_END = re.compile(r"""(?:[.!?:;…。！？)\]}"'`*|>]|\d|[\U0001F300-\U0001FAFF\u2600-\u27BF])\s*$""")
_BRACKETS = {")": "(", "]": "[", "}": "{"}
_TOKEN = re.compile(r"\w+|[^\w\s]")

# How much each format defect costs; one of weight 0.5 or more fails the check at the default
# threshold, while bracket imbalance alone does not ("1) first" lists are common in prose).
FORMAT_PENALTIES = {"empty": 1.0, "leaked_template": 1.0, "unbalanced_code_fence": 0.5, "incomplete_ending": 0.5,
                    "unbalanced_brackets": 0.25}


@dataclass(frozen=True)
class QualitySettings:
    """Bounds and thresholds of the checks. A request passes when every check scores at least
    ``pass_threshold`` and, when a judge ran, the judge at least ``judge_threshold``."""

    min_words: int = 2
    max_words: int = 400
    ngram: int = 3
    pass_threshold: float = 0.7
    judge_threshold: float = 0.5
    short_answer_words: int = 3
    extra_refusal_patterns: tuple[str, ...] = ()
    template_markers: tuple[str, ...] = TEMPLATE_MARKERS

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"QualitySettings: need 1 <= min_words <= max_words, got min_words={self.min_words}, "
                             f"max_words={self.max_words}")
        if self.ngram < 1:
            raise ValueError(f"QualitySettings: ngram must be at least 1, got {self.ngram}")
        for name in ("pass_threshold", "judge_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"QualitySettings: {name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class QualityScores:
    """The scores of one response, the format defects found, and the checks that failed."""

    format_score: float
    length_score: float
    refusal_score: float
    repetition_score: float
    judge_score: float | None
    quality_score: float
    passed: bool
    failed_checks: tuple[str, ...]
    format_defects: tuple[str, ...] = field(default=())


def _words(text: str) -> list[str]:
    return text.split()


def format_defects(text: str, settings: QualitySettings = QualitySettings()) -> list[str]:
    """The format defects of ``text`` (keys of :data:`FORMAT_PENALTIES`), in a fixed order."""
    stripped = text.strip()
    if not stripped:
        return ["empty"]
    defects = []
    if any(marker in text for marker in settings.template_markers):
        defects.append("leaked_template")
    if stripped.count("```") % 2:
        defects.append("unbalanced_code_fence")
    if not _brackets_balanced(_outside_code(stripped)):
        defects.append("unbalanced_brackets")
    if len(_words(stripped)) > settings.short_answer_words and not _COMPLETE_END.search(stripped):
        defects.append("incomplete_ending")
    return defects


def _outside_code(text: str) -> str:
    """``text`` without fenced and inline code, whose brackets follow other rules (regexes, slices)."""
    return re.sub(r"`[^`\n]*`", " ", re.sub(r"```.*?(?:```|$)", " ", text, flags=re.S))


def _brackets_balanced(text: str) -> bool:
    stack: list[str] = []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in _BRACKETS:
            if not stack or stack.pop() != _BRACKETS[char]:
                return False
    return not stack


def _penalised(defects: Sequence[str]) -> float:
    return max(0.0, 1.0 - sum(FORMAT_PENALTIES[d] for d in defects))


def format_score(text: str, settings: QualitySettings = QualitySettings()) -> float:
    """1 minus the penalties of the defects found, at least 0."""
    return _penalised(format_defects(text, settings))


def length_score(text: str, settings: QualitySettings = QualitySettings()) -> float:
    """1 inside [min_words, max_words]; below, the share of the minimum reached; above, max/len."""
    count = len(_words(text))
    if count < settings.min_words:
        return count / settings.min_words
    if count > settings.max_words:
        return settings.max_words / count
    return 1.0


def _refusal_regex(settings: QualitySettings) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in (*REFUSAL_PATTERNS, *settings.extra_refusal_patterns)),
                      re.IGNORECASE)


def refusal_score(text: str, settings: QualitySettings = QualitySettings(),
                  pattern: re.Pattern[str] | None = None) -> float:
    """1 when the answer does not refuse; 0 when it opens with a refusal or is little more than one;
    0.5 when a refusal phrase sits inside a substantive answer ("I can't browse, but here is ...")."""
    normalised = text.replace("\u2019", "'").replace("\u2018", "'")
    match = (pattern or _refusal_regex(settings)).search(normalised)
    if match is None:
        return 1.0
    opening = match.start() < 120
    short = len(_words(normalised)) < 40
    return 0.0 if opening or short else 0.5


def repetition_ratio(text: str, ngram: int = 3) -> float:
    """The larger of the repeated word-n-gram share and the repeated non-empty line share, in 0..1."""
    tokens = [t.lower() for t in _TOKEN.findall(text)]
    grams = [tuple(tokens[i:i + ngram]) for i in range(len(tokens) - ngram + 1)]
    gram_ratio = 1.0 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line_ratio = 1.0 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0
    return max(gram_ratio, line_ratio)


def repetition_score(text: str, settings: QualitySettings = QualitySettings()) -> float:
    """1 minus :func:`repetition_ratio`."""
    return 1.0 - repetition_ratio(text, settings.ngram)


def score_response(response: str, settings: QualitySettings = QualitySettings(), judge_score: float | None = None,
                   refusal_pattern: re.Pattern[str] | None = None) -> QualityScores:
    """Every check on one response; ``judge_score`` (0..1, or None) comes from a :class:`Judge`."""
    defects = format_defects(response, settings)
    scores = {
        "format": _penalised(defects),
        "length": length_score(response, settings),
        "refusal": refusal_score(response, settings, refusal_pattern),
        "repetition": repetition_score(response, settings),
    }
    failed = [name for name in CHECKS if scores[name] < settings.pass_threshold]
    values = list(scores.values())
    if judge_score is not None:
        if not 0.0 <= judge_score <= 1.0 or math.isnan(judge_score):
            raise ValueError(f"judge score {judge_score!r} is outside [0, 1]")
        values.append(judge_score)
        if judge_score < settings.judge_threshold:
            failed.append("judge")
    return QualityScores(scores["format"], scores["length"], scores["refusal"], scores["repetition"], judge_score,
                         sum(values) / len(values), not failed, tuple(failed), tuple(defects))


class Judge(Protocol):
    """A model that grades answers: one score in 0..1 (or None when it gave no usable grade) per pair."""

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]: ...


JUDGE_RUBRIC = ("You grade the answer of an AI assistant.\n\nQuestion:\n{prompt}\n\nAnswer:\n{response}\n\n"
                "Is the answer helpful, correct and complete? Reply with Yes or No.")
RATING_RUBRIC = ("You grade the answer of an AI assistant.\n\nQuestion:\n{prompt}\n\nAnswer:\n{response}\n\n"
                 "Rate the answer from 1 (useless) to 5 (excellent). Reply with the number only.")
# Long texts are cut so a judge call stays bounded; the engine would keep only the end anyway.
JUDGE_TEXT_CHARS = 2000


def _rubric_text(rubric: str, prompt: str, response: str) -> str:
    return rubric.format(prompt=prompt[:JUDGE_TEXT_CHARS], response=response[:JUDGE_TEXT_CHARS])


class LoglikelihoodJudge:
    """Asks a model the rubric's yes/no question and reads P(Yes) against P(No) from its log-likelihoods:
    ``score = exp(ll_yes) / (exp(ll_yes) + exp(ll_no))``. Deterministic, no generation needed.

    With a chat format (the engine's renderer) the rubric is a user turn followed by the generation
    prompt and the answers are ``Yes``/``No``; without one it is plain text ending in ``"\\nVerdict:"``
    and the answers are `` Yes``/`` No``.
    """

    def __init__(self, engine: InferenceEngine, rubric: str = JUDGE_RUBRIC, yes: str = "Yes", no: str = "No") -> None:
        self.engine, self.rubric, self.yes, self.no = engine, rubric, yes, no

    def context(self, prompt: str, response: str) -> tuple[str, str, str]:
        """The context and the two continuations the judge scores for one pair."""
        question = _rubric_text(self.rubric, prompt, response)
        renderer = self.engine.renderer
        if renderer is not None:
            text = renderer.render_text([{"role": "user", "content": question}], add_generation_prompt=True)
            return text, self.yes, self.no
        return f"{question}\nVerdict:", f" {self.yes}", f" {self.no}"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        from crucible.inference import LoglikelihoodRequest

        if len(prompts) != len(responses):
            raise ValueError(f"LoglikelihoodJudge: {len(prompts)} prompts but {len(responses)} responses")
        requests = []
        for prompt, response in zip(prompts, responses, strict=True):
            context, yes, no = self.context(prompt, response)
            requests += [LoglikelihoodRequest(context, yes), LoglikelihoodRequest(context, no)]
        scored = self.engine.loglikelihood(requests)
        # A two-way softmax written as a logistic of the difference, stable for any gap.
        return [1.0 / (1.0 + math.exp(scored[i + 1].logprob - scored[i].logprob)) for i in range(0, len(scored), 2)]


def parse_rating(text: str) -> int | None:
    """The first standalone digit 1-5 in a judge's reply ("4", "Rating: 4/5"), or None."""
    match = re.search(r"(?<![\d.])([1-5])(?!\d|\.\d)", text)
    return int(match.group(1)) if match else None


class RatingJudge:
    """Asks a chat model for a 1-5 rating (greedy) and maps it to 0..1 as ``(rating - 1) / 4``; a reply
    with no rating gives None, which counts as no judge for that request."""

    def __init__(self, engine: InferenceEngine, rubric: str = RATING_RUBRIC, max_new_tokens: int = 8) -> None:
        self.engine, self.rubric, self.max_new_tokens = engine, rubric, max_new_tokens
        self.replies: list[str] = []

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        if len(prompts) != len(responses):
            raise ValueError(f"RatingJudge: {len(prompts)} prompts but {len(responses)} responses")
        questions = [_rubric_text(self.rubric, p, r) for p, r in zip(prompts, responses, strict=True)]
        self.replies = [g.text for g in self.engine.chat(questions, max_new_tokens=self.max_new_tokens)]
        ratings = [parse_rating(reply) for reply in self.replies]
        return [None if r is None else (r - 1) / 4 for r in ratings]


QUALITY_INPUT_COLUMNS = ("event_id", "day", "model_version", "prompt", "response")


def quality_frame(events: pd.DataFrame, *, judge: Judge | None = None,
                  settings: QualitySettings = QualitySettings()) -> pd.DataFrame:
    """One QualitySchema row per event of ``events`` (columns event_id, day, model_version, response,
    and prompt when a judge runs), in the events' order."""
    needed = [c for c in QUALITY_INPUT_COLUMNS if c != "prompt" or judge is not None]
    missing = [c for c in needed if c not in events.columns]
    if missing:
        raise ValueError(f"quality_frame: the events lack columns {missing}; expected {needed} "
                         f"(read them from feedback/inference_events)")
    responses = events["response"].fillna("").astype(str).tolist()
    judged: list[float | None] = [None] * len(events)
    if judge is not None and len(events):
        judged = list(judge.score(events["prompt"].fillna("").astype(str).tolist(), responses))
        if len(judged) != len(events):
            raise ValueError(f"quality_frame: the judge returned {len(judged)} scores for {len(events)} events")
    pattern = _refusal_regex(settings)
    scored = [score_response(r, settings, j, pattern) for r, j in zip(responses, judged, strict=True)]
    return pd.DataFrame({
        "event_id": events["event_id"].astype(str).to_numpy(),
        "day": events["day"].to_numpy(),
        "model_version": events["model_version"].astype(int).to_numpy(),
        "format_score": [s.format_score for s in scored],
        "length_score": [s.length_score for s in scored],
        "refusal_score": [s.refusal_score for s in scored],
        "repetition_score": [s.repetition_score for s in scored],
        "judge_score": pd.Series([s.judge_score for s in scored], dtype="float64"),
        "quality_score": [s.quality_score for s in scored],
        "passed": [s.passed for s in scored],
        "failed_checks": [",".join(s.failed_checks) for s in scored],
        "checked_at": pd.Timestamp.now(tz="UTC"),
    })


def quality_summary(quality: pd.DataFrame) -> dict[str, float | int | dict[str, int]]:
    """Figures of a QualitySchema frame: rows, pass rate, mean of each score, failures by check."""
    failures = {name: 0 for name in (*CHECKS, "judge")}
    for listed in quality["failed_checks"]:
        for name in filter(None, str(listed).split(",")):
            failures[name] = failures.get(name, 0) + 1
    summary: dict[str, float | int | dict[str, int]] = {
        "rows": len(quality),
        "pass_rate": float(quality["passed"].mean()) if len(quality) else 0.0,
    }
    for column in ("format_score", "length_score", "refusal_score", "repetition_score", "quality_score"):
        summary[f"mean_{column}"] = float(quality[column].mean()) if len(quality) else 0.0
    judged = quality["judge_score"].dropna()
    summary["judged"] = len(judged)
    if len(judged):
        summary["mean_judge_score"] = float(judged.mean())
    summary["failures_by_check"] = failures
    return summary
