"""ROUGE-N, ROUGE-L and ROUGE-Lsum equal to Google's `rouge_score.rouge_scorer.RougeScorer`.

LCS lengths come from a bit-parallel algorithm (one big-int update per token instead of a
row of the dynamic-programming table), and Porter stems are memoized, which is where
rouge-score spends its time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_ROUGE_N = re.compile(r"rouge([1-9])")
_ALPHANUMERIC_RUN = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class RougeScore:
    """Precision, recall and F1 of one ROUGE type for one (prediction, reference) pair."""

    precision: float
    recall: float
    fmeasure: float


def _score(matches: int, prediction_len: int, reference_len: int) -> RougeScore:
    """P = matches / |prediction|, R = matches / |reference|, F = 2PR / (P + R)."""
    precision = matches / max(prediction_len, 1)
    recall = matches / max(reference_len, 1)
    fmeasure = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RougeScore(precision, recall, fmeasure)


@cache
def _porter_stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=2**18)
def _stem(token: str) -> str:
    return _porter_stemmer().stem(token)


@lru_cache(maxsize=2**16)
def rouge_tokenize(text: str, use_stemmer: bool = False) -> tuple[str, ...]:
    """rouge-score's default tokenizer: lowercase, keep runs of [a-z0-9], and with
    `use_stemmer` replace tokens longer than 3 characters by their Porter stem (nltk's)."""
    tokens = _ALPHANUMERIC_RUN.findall(text.lower())
    if use_stemmer:
        # A stem is never empty or non-alphanumeric for these tokens, so rouge-score's
        # post-stemming validity filter drops nothing here.
        tokens = [_stem(token) if len(token) > 3 else token for token in tokens]
    return tuple(tokens)


def _column_masks(tokens: Sequence[str]) -> dict[str, int]:
    """For each distinct token, an int whose bit j is set where tokens[j] is that token."""
    masks: dict[str, int] = {}
    bit = 1
    for token in tokens:
        masks[token] = masks.get(token, 0) | bit
        bit <<= 1
    return masks


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of `a` and `b`.

    Bit-parallel (Hyyro 2004): V starts as all ones over the columns of the longer sequence;
    for each token x of the shorter one, U = V & match(x) and V = (V + U) | (V - U). The LCS
    length is the number of zero bits left in V.
    """
    if len(a) > len(b):
        a, b = b, a
    if not a:
        return 0
    masks = _column_masks(b)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        match = masks.get(token)
        if match:
            u = v & match
            v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def _lcs_indices(ref: Sequence[str], can: Sequence[str], can_masks: dict[str, int]) -> list[int]:
    """Indices into `ref` of the one LCS that rouge-score's table backtrack picks.

    Row i of the DP table (ref[:i] against can[:j]) is recovered from the bit vector V_i as
    T[i][j] = j - popcount(V_i & (2^j - 1)); the walk from T[m][n] takes a match diagonally,
    else moves left only when T[i][j-1] > T[i-1][j], exactly as rouge-score does.
    """
    full = (1 << len(can)) - 1
    rows = [full]
    v = full
    for token in ref:
        match = can_masks.get(token)
        if match:
            u = v & match
            v = ((v + u) | (v - u)) & full
        rows.append(v)
    if v == full:
        return []
    indices = []
    i, j = len(ref), len(can)
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            indices.append(i - 1)
            i -= 1
            j -= 1
            continue
        left = j - 1 - (rows[i] & ((1 << (j - 1)) - 1)).bit_count()
        up = j - (rows[i - 1] & ((1 << j) - 1)).bit_count()
        if left > up:
            j -= 1
        else:
            i -= 1
    return indices


def _summary_level_lcs(ref_sents: list[tuple[str, ...]], can_sents: list[tuple[str, ...]]) -> RougeScore:
    """ROUGE-Lsum (Lin 2004, section 3.2): for each reference sentence, the union of its LCS
    with every candidate sentence; union tokens count as hits while both texts still have an
    unused occurrence of them. P = hits / |candidate tokens|, R = hits / |reference tokens|."""
    ref_len = sum(map(len, ref_sents))
    can_len = sum(map(len, can_sents))
    if not ref_len or not can_len:
        return RougeScore(0.0, 0.0, 0.0)
    ref_left = Counter()
    for sent in ref_sents:
        ref_left.update(sent)
    can_left = Counter()
    for sent in can_sents:
        can_left.update(sent)
    can_masks = [_column_masks(sent) for sent in can_sents]

    hits = 0
    for ref in ref_sents:
        union: set[int] = set()
        for can, masks in zip(can_sents, can_masks, strict=True):
            union.update(_lcs_indices(ref, can, masks))
        for index in sorted(union):
            token = ref[index]
            if can_left[token] > 0 and ref_left[token] > 0:
                hits += 1
                can_left[token] -= 1
                ref_left[token] -= 1
    return _score(hits, can_len, ref_len)


def _ngrams(tokens: tuple[str, ...], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n)), strict=False))


def _score_pair(
    prediction: str, reference: str, rouge_types: Sequence[str], use_stemmer: bool
) -> dict[str, RougeScore]:
    # Lines are tokenized separately for Lsum; their concatenation is the whole text's
    # tokenization because a newline is itself a token separator.
    pred_lines = [rouge_tokenize(line, use_stemmer) for line in prediction.split("\n") if line]
    ref_lines = [rouge_tokenize(line, use_stemmer) for line in reference.split("\n") if line]
    pred_tokens = tuple(token for line in pred_lines for token in line)
    ref_tokens = tuple(token for line in ref_lines for token in line)

    scores = {}
    for rouge_type in rouge_types:
        if rouge_type == "rougeL":
            if pred_tokens and ref_tokens:
                matches = lcs_length(ref_tokens, pred_tokens)
                scores[rouge_type] = _score(matches, len(pred_tokens), len(ref_tokens))
            else:
                scores[rouge_type] = RougeScore(0.0, 0.0, 0.0)
        elif rouge_type == "rougeLsum":
            scores[rouge_type] = _summary_level_lcs(ref_lines, pred_lines)
        else:
            n = int(_ROUGE_N.fullmatch(rouge_type).group(1))
            if n == 1:
                pred_grams, ref_grams = Counter(pred_tokens), Counter(ref_tokens)
            else:
                pred_grams, ref_grams = _ngrams(pred_tokens, n), _ngrams(ref_tokens, n)
            matches = sum(
                min(count, pred_grams[gram]) for gram, count in ref_grams.items() if gram in pred_grams
            )
            scores[rouge_type] = _score(
                matches, max(len(pred_tokens) - n + 1, 0), max(len(ref_tokens) - n + 1, 0)
            )
    return scores


def _check_rouge_types(rouge_types: Sequence[str]) -> None:
    for rouge_type in rouge_types:
        if rouge_type not in ("rougeL", "rougeLsum") and not _ROUGE_N.fullmatch(rouge_type):
            raise ValueError(
                f"unknown ROUGE type {rouge_type!r}; expected rouge1..rouge9, rougeL or rougeLsum"
            )


def rouge(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = False,
) -> list[dict[str, RougeScore]]:
    """Per-pair ROUGE scores, equal to `RougeScorer(rouge_types, use_stemmer).score(ref, pred)`.

    ROUGE-N: matches = sum over reference n-grams g of min(count_ref(g), count_pred(g)).
    ROUGE-L: matches = LCS(reference tokens, prediction tokens).
    ROUGE-Lsum: summary-level union LCS over newline-separated sentences.
    Each gives P = matches / |pred|, R = matches / |ref|, F = 2PR / (P + R). A reference given
    as a list of strings is scored like `RougeScorer.score_multi`: per type, the reference with
    the highest F (the first on ties).
    """
    _check_rouge_types(rouge_types)
    if len(predictions) != len(references):
        raise ValueError(
            f"rouge: {len(predictions)} predictions but {len(references)} references; expected one per prediction"
        )
    results = []
    for prediction, reference in zip(predictions, references, strict=True):
        if isinstance(reference, str):
            results.append(_score_pair(prediction, reference, rouge_types, use_stemmer))
            continue
        per_reference = [_score_pair(prediction, ref, rouge_types, use_stemmer) for ref in reference]
        results.append(
            {
                rouge_type: max((scores[rouge_type] for scores in per_reference), key=lambda s: s.fmeasure)
                for rouge_type in rouge_types
            }
        )
    return results


def rouge_summary(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = False,
) -> dict[str, float]:
    """Mean F-measure per ROUGE type over all pairs (0.0 for an empty corpus)."""
    scores = rouge(predictions, references, rouge_types, use_stemmer)
    return {
        rouge_type: sum(pair[rouge_type].fmeasure for pair in scores) / len(scores) if scores else 0.0
        for rouge_type in rouge_types
    }
