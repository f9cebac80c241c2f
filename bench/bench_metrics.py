"""Times crucible's BLEU and ROUGE against sacrebleu and rouge-score on the same 10,000
generated (prediction, reference) pairs, after checking that the numbers agree.

Run: python bench/bench_metrics.py [--pairs N]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable

import sacrebleu
from rouge_score import rouge_scorer

from crucible.data.metrics import bleu as our_bleu
from crucible.data.metrics import rouge_scores as our_rouge

_VOCABULARY = (
    "the a of to and in is was for on that with as by at from model models training trained "
    "data dataset evaluation results result accuracy loss improves improved improving shows "
    "showed study studies running runs ran network networks learning learned language "
    "summary summaries report reported researchers found finds significant significantly "
    "increase increased decrease decreased performance baseline baselines larger smaller "
    "Paris London GPU CPU U.S. state-of-the-art e.g. don't it's year years percent"
).split()
_PUNCTUATION = ["", "", "", "", ",", ".", ";", ":", "!", "?", ")", "'s", '"']


def _sentence(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(4, 22)):
        roll = rng.random()
        if roll < 0.08:
            word = str(
                rng.choice([rng.randint(0, 100), rng.randint(1000, 99999), round(rng.random() * 100, 2)])
            )
        elif roll < 0.12:
            word = f"${rng.randint(1, 999)}"
        else:
            word = rng.choice(_VOCABULARY)
            if rng.random() < 0.1:
                word = word.capitalize()
        words.append(word + rng.choice(_PUNCTUATION))
    return " ".join(words)


def _perturb(rng: random.Random, text: str) -> str:
    """A reference that overlaps the prediction: words dropped, replaced and inserted."""
    out = []
    for word in text.split(" "):
        roll = rng.random()
        if roll < 0.15:
            continue
        if roll < 0.3:
            out.append(rng.choice(_VOCABULARY))
        else:
            out.append(word)
        if rng.random() < 0.1:
            out.append(rng.choice(_VOCABULARY))
    return " ".join(out)


def generate_pairs(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Multi-sentence (newline-separated) predictions with overlapping references."""
    rng = random.Random(seed)
    predictions, references = [], []
    for _ in range(count):
        sentences = [_sentence(rng) for _ in range(rng.randint(1, 4))]
        predictions.append("\n".join(sentences))
        references.append("\n".join(_perturb(rng, sentence) for sentence in sentences))
    return predictions, references


def _timed(function: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def _clear_caches() -> None:
    our_bleu.tokenize_13a.cache_clear()
    our_rouge.rouge_tokenize.cache_clear()
    our_rouge._stem.cache_clear()


def _report(name: str, ours: float, theirs: float, reference_name: str) -> None:
    print(
        f"{name:<34} ours {ours:8.3f} s   {reference_name} {theirs:8.3f} s   speed-up x{theirs / ours:6.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    args = parser.parse_args()
    predictions, references = generate_pairs(args.pairs)
    print(f"{args.pairs} pairs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    _clear_caches()
    ours, ours_s = _timed(lambda: our_bleu.corpus_bleu(predictions, [references]))
    theirs, theirs_s = _timed(lambda: sacrebleu.corpus_bleu(predictions, [references]))
    assert abs(ours.score - theirs.score) < 1e-6, (ours.score, theirs.score)
    _report(f"corpus BLEU ({ours.score:.4f})", ours_s, theirs_s, "sacrebleu")

    _clear_caches()
    ours, ours_s = _timed(
        lambda: [our_bleu.sentence_bleu(p, [r]).score for p, r in zip(predictions, references, strict=True)]
    )
    metric = sacrebleu.BLEU(effective_order=True)
    theirs, theirs_s = _timed(
        lambda: [metric.sentence_score(p, [r]).score for p, r in zip(predictions, references, strict=True)]
    )
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-6
    _report("sentence BLEU, all pairs", ours_s, theirs_s, "sacrebleu")

    rouge_types = list(our_rouge.ROUGE_TYPES)
    _clear_caches()
    ours, ours_s = _timed(lambda: our_rouge.rouge(predictions, references, rouge_types, use_stemmer=True))
    scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=True)
    theirs, theirs_s = _timed(
        lambda: [scorer.score(r, p) for p, r in zip(predictions, references, strict=True)]
    )
    worst = max(
        abs(getattr(o[t], field) - getattr(e[t], field))
        for o, e in zip(ours, theirs, strict=True)
        for t in rouge_types
        for field in ("precision", "recall", "fmeasure")
    )
    assert worst < 1e-6, worst
    mean_f = {t: sum(o[t].fmeasure for o in ours) / len(ours) for t in rouge_types}
    print("mean ROUGE F: " + ", ".join(f"{t} {f:.4f}" for t, f in mean_f.items()))
    _report("ROUGE 1/2/L/Lsum, stemmed", ours_s, theirs_s, "rouge-score")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
