"""BLEU with sacrebleu's default settings (13a tokenizer, exp smoothing, 4-grams, cased).

Scores match `sacrebleu.corpus_bleu` and `sacrebleu.sentence_bleu` to floating-point precision;
the speed comes from a translate-table tokenizer, C-level n-gram counting and a tokenizer cache.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat

MAX_NGRAM_ORDER = 4

# mteval-v13a separates every ASCII symbol except apostrophe, hyphen, period and comma.
_SYMBOLS = '!"#$%&()*+/:;<=>?@[\\]^_`{|}~'
# 13a's period/comma rules match left to right without overlap, so inside a run such as
# "..," or ".,5" the result depends on that order: such lines go through the original regexes.
_PERIOD_COMMA_AFTER_NON_DIGIT = re.compile(r"([^0-9])([.,])")
_PERIOD_COMMA_BEFORE_NON_DIGIT = re.compile(r"([.,])([^0-9])")
_PERIOD_COMMA_RUNS = ("..", ".,", ",.", ",,")
# Without such runs the two rules reduce to: split a period or comma unless it has a digit on
# both sides. Constant replacements keep `re.sub` in C (Python 3.11 expands "\\1" per match),
# and leading with the literal lets the regex engine skip ahead to candidate characters.
_LONE_PERIOD = re.compile(r"\.(?:(?<![0-9]\.)|(?![0-9]))")
_LONE_COMMA = re.compile(r",(?:(?<![0-9],)|(?![0-9]))")
_DASH_AFTER_DIGIT = re.compile(r"-(?<=[0-9]-)")

# sacrebleu floors log(0) at this value instead of raising.
_LOG_ZERO = -9999999999


@dataclass(frozen=True)
class BleuScore:
    """A BLEU score in percent with the statistics it was computed from.

    `precisions` are the (smoothed) modified n-gram precisions in percent, `bp` the brevity
    penalty, `ratio` = sys_len / ref_len, `counts`/`totals` the matched and proposed n-grams
    per order.
    """

    score: float
    precisions: list[float]
    bp: float
    ratio: float
    sys_len: int
    ref_len: int
    counts: list[int]
    totals: list[int]


@lru_cache(maxsize=2**16)
def tokenize_13a(line: str) -> tuple[str, ...]:
    """Split a detokenized segment into tokens as mteval-v13a (sacrebleu's default) does.

    Trailing whitespace is dropped first, as sacrebleu does before tokenizing.
    """
    line = line.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for symbol in _SYMBOLS:
        if symbol in line:
            line = line.replace(symbol, f" {symbol} ")
    if "." in line or "," in line:
        if any(run in line for run in _PERIOD_COMMA_RUNS):
            line = _PERIOD_COMMA_AFTER_NON_DIGIT.sub(r"\1 \2 ", line)
            line = _PERIOD_COMMA_BEFORE_NON_DIGIT.sub(r" \1 \2", line)
        else:
            line = _LONE_COMMA.sub(" , ", _LONE_PERIOD.sub(" . ", line))
    if "-" in line:
        line = _DASH_AFTER_DIGIT.sub(" - ", line)
    return tuple(line.split())


def _ngram_counts(tokens: tuple[str, ...]) -> list[Counter]:
    """Counts of the 1..4-grams of `tokens`, one Counter per order (unigrams keyed by the token)."""
    counts = [Counter(tokens)]
    for n in range(2, MAX_NGRAM_ORDER + 1):
        counts.append(Counter(zip(*(tokens[i:] for i in range(n)), strict=False)))
    return counts


def _closest_ref_len(hyp_len: int, ref_lens: list[int]) -> int:
    """The reference length closest to the hypothesis length; the shorter one on a tie."""
    return min(ref_lens, key=lambda ref_len: (abs(hyp_len - ref_len), ref_len))


def _segment_stats(hypothesis: str, references: Sequence[str]) -> tuple[int, int, list[int], list[int]]:
    """(hyp_len, closest ref_len, matched n-grams per order, hypothesis n-grams per order).

    A hypothesis n-gram is matched at most as often as it occurs in any single reference
    (clipped counts, maximised over references).
    """
    hyp_tokens = tokenize_13a(hypothesis)
    ref_token_lists = [tokenize_13a(ref) for ref in references]
    hyp_len = len(hyp_tokens)
    ref_len = _closest_ref_len(hyp_len, [len(tokens) for tokens in ref_token_lists])

    ref_counts = _ngram_counts(ref_token_lists[0])
    for tokens in ref_token_lists[1:]:
        for merged, counts in zip(ref_counts, _ngram_counts(tokens), strict=True):
            for gram, count in counts.items():
                if count > merged[gram]:
                    merged[gram] = count

    # map/min/dict.get keep the clipped-count sum in C.
    correct = [
        sum(map(min, hyp_order.values(), map(ref_order.get, hyp_order, repeat(0))))
        for hyp_order, ref_order in zip(_ngram_counts(hyp_tokens), ref_counts, strict=True)
    ]
    total = [max(hyp_len - n, 0) for n in range(MAX_NGRAM_ORDER)]
    return hyp_len, ref_len, correct, total


def _bleu_from_stats(
    sys_len: int, ref_len: int, correct: list[int], total: list[int], effective_order: bool
) -> BleuScore:
    """BLEU = BP * exp(mean_n log p_n), with p_n in percent and BP = exp(1 - ref_len / sys_len).

    An order with no match gets p_n = 100 / (2^k * total_n), k counting the zero orders so far
    (mteval "exp" smoothing). With `effective_order`, orders the hypothesis is too short to
    have are left out of the mean instead of zeroing the score.
    """
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    ratio = sys_len / ref_len if ref_len else 0.0
    precisions = [0.0] * MAX_NGRAM_ORDER
    if not any(correct):
        return BleuScore(0.0, precisions, bp, ratio, sys_len, ref_len, correct, total)

    smooth = 1.0
    eff_order = MAX_NGRAM_ORDER
    for n in range(MAX_NGRAM_ORDER):
        if total[n] == 0:
            break
        if effective_order:
            eff_order = n + 1
        if correct[n] == 0:
            smooth *= 2
            precisions[n] = 100.0 / (smooth * total[n])
        else:
            precisions[n] = 100.0 * correct[n] / total[n]

    log_sum = sum([math.log(p) if p else _LOG_ZERO for p in precisions[:eff_order]])
    score = bp * math.exp(log_sum / eff_order)
    return BleuScore(score, precisions, bp, ratio, sys_len, ref_len, correct, total)


def _present_references(references: Sequence[str | None], where: str) -> list[str]:
    refs = [ref for ref in references if ref is not None]
    if not refs:
        raise ValueError(f"{where}: every reference is None; expected at least one reference string")
    return refs


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]]) -> BleuScore:
    """Corpus BLEU over all segments, equal to `sacrebleu.corpus_bleu(hypotheses, references)`.

    `references` is a list of reference streams, each parallel to `hypotheses` (sacrebleu's
    layout); a None entry means that segment has fewer references. Matched and total n-gram
    counts and lengths are summed over segments before the BLEU formula is applied once.
    """
    if isinstance(hypotheses, str) or not references or isinstance(references[0], str):
        raise TypeError("corpus_bleu: expected hypotheses: list[str] and references: list[list[str]]")
    for stream_index, stream in enumerate(references):
        if len(stream) != len(hypotheses):
            raise ValueError(
                f"corpus_bleu: reference stream {stream_index} has {len(stream)} segments, "
                f"expected {len(hypotheses)} (one per hypothesis)"
            )
    sys_len = ref_len = 0
    correct = [0] * MAX_NGRAM_ORDER
    total = [0] * MAX_NGRAM_ORDER
    for index, (hypothesis, *segment_refs) in enumerate(zip(hypotheses, *references, strict=True)):
        refs = _present_references(segment_refs, f"corpus_bleu segment {index}")
        hyp_len, seg_ref_len, seg_correct, seg_total = _segment_stats(hypothesis, refs)
        sys_len += hyp_len
        ref_len += seg_ref_len
        for n in range(MAX_NGRAM_ORDER):
            correct[n] += seg_correct[n]
            total[n] += seg_total[n]
    return _bleu_from_stats(sys_len, ref_len, correct, total, effective_order=False)


def sentence_bleu(hypothesis: str, references: Sequence[str | None]) -> BleuScore:
    """Sentence BLEU, equal to `sacrebleu.sentence_bleu(hypothesis, references)`.

    Uses the effective order (sacrebleu's sentence-level default): n-gram orders longer than
    the hypothesis are left out of the geometric mean.
    """
    if isinstance(references, str):
        raise TypeError("sentence_bleu: references must be a list of strings, got a single str")
    refs = _present_references(references, "sentence_bleu")
    hyp_len, ref_len, correct, total = _segment_stats(hypothesis, refs)
    return _bleu_from_stats(hyp_len, ref_len, correct, total, effective_order=True)
