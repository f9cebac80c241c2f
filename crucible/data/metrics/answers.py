"""Answer-level metrics: SQuAD exact match and token F1, GSM8K answer extraction as
lm-evaluation-harness does it, and MMLU accuracy."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Literal

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

# lm-evaluation-harness gsm8k.yaml (version 3): the "strict-match" filter takes the first
# "#### <number>", the "flexible-extract" filter the last number-looking span in the text.
_GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# The task's exact_match `regexes_to_ignore`, applied in this order to prediction and target.
_GSM8K_IGNORED = [re.compile(pattern) for pattern in (",", r"\$", r"(?s).*#### ", r"\.$")]

GSM8KMode = Literal["strict", "flexible"]


def normalize_answer(s: str) -> str:
    """SQuAD answer normalization: lowercase, drop ASCII punctuation, drop the articles
    a/an/the as whole words, collapse whitespace."""
    text = s.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _as_references(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("expected at least one reference answer, got an empty list")
    return refs


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 if normalize_answer(prediction) equals that of any reference, else 0.0."""
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(ref) for ref in _as_references(references)))


def _token_f1(prediction_tokens: list[str], reference_tokens: list[str]) -> float:
    if not prediction_tokens or not reference_tokens:
        # SQuAD v2 convention: two empty answers agree, an empty and a non-empty one do not.
        return float(prediction_tokens == reference_tokens)
    common = sum((Counter(prediction_tokens) & Counter(reference_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(prediction_tokens)
    recall = common / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    """SQuAD token F1, maximised over references.

    With P = |pred ∩ ref| / |pred| and R = |pred ∩ ref| / |ref| over the multisets of
    normalized tokens, F1 = 2PR / (P + R).
    """
    prediction_tokens = normalize_answer(prediction).split()
    return max(
        _token_f1(prediction_tokens, normalize_answer(ref).split()) for ref in _as_references(references)
    )


def _gsm8k_normalize(answer: str) -> str:
    for pattern in _GSM8K_IGNORED:
        answer = pattern.sub("", answer)
    return answer.lower()


def extract_gsm8k_answer(text: str, mode: GSM8KMode = "strict") -> str | None:
    """The final numeric answer in a model's GSM8K output, or None when there is none.

    strict: the first `#### <number>`; flexible: the last span matching
    `(-?[$0-9.,]{2,})|(-?[0-9]+)`. The span is stripped, then commas, `$` and one trailing
    `.` are removed, as the harness's exact_match does before comparing.
    """
    if mode == "strict":
        match = _GSM8K_STRICT.search(text)
        span = match.group(1) if match else None
    elif mode == "flexible":
        matches = _GSM8K_FLEXIBLE.findall(text)
        span = next(group for group in matches[-1] if group) if matches else None
    else:
        raise ValueError(f"GSM8K extraction mode {mode!r}; expected 'strict' or 'flexible'")
    return None if span is None else _gsm8k_normalize(span.strip())


def gsm8k_is_correct(prediction_text: str, target: str, mode: GSM8KMode = "strict") -> bool:
    """Whether the answer extracted from `prediction_text` equals the target answer.

    `target` is either a GSM8K solution ending in `#### <answer>` or the bare answer; it is
    normalized the same way (text up to the last "#### ", commas, `$`, trailing `.` removed).
    """
    answer = extract_gsm8k_answer(prediction_text, mode)
    return answer is not None and answer == _gsm8k_normalize(target)


def mmlu_accuracy(predicted: Sequence[int], gold: Sequence[int]) -> float:
    """Fraction of questions whose predicted choice index equals the gold index."""
    if len(predicted) != len(gold):
        raise ValueError(f"mmlu_accuracy: {len(predicted)} predictions but {len(gold)} gold answers")
    if not gold:
        raise ValueError("mmlu_accuracy: no questions; expected at least one (prediction, gold) pair")
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
