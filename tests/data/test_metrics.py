"""crucible.data.metrics against the reference implementations (sacrebleu, rouge-score) on
generated corpora, and against hand computations for the answer-level metrics."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from crucible.data.metrics import (
    ROUGE_TYPES,
    corpus_bleu,
    exact_match,
    extract_gsm8k_answer,
    gsm8k_is_correct,
    lcs_length,
    mmlu_accuracy,
    normalize_answer,
    rouge,
    rouge_summary,
    sentence_bleu,
    token_f1,
    tokenize_13a,
    unbiased_pass_at_k,
    unbiased_pass_at_k_array,
)

TOLERANCE = 1e-6

_WORDS = (
    "the a an of and running runs ran happily happiness organization organizations generalize "
    "generalization cats cat's dogs The THE Cat U.S. e.g. state-of-the-art don't it's caresses "
    "ponies ties relational conditional rational sensibility hopping agreed"
).split()
_TOKENS_WITH_PUNCTUATION = [
    "3.14", "1,000", "-7", "$42", "10-20", "5.", ",", ".", "...", "!?", "(x)", "[y]", "&amp;",
    "&quot;", "&lt;b&gt;", "<skipped>", "a.,b", "1.,2", "x,.5", "--", "'quoted'", '"q"', "50%",
    "e-mail", "#tag", "@user", "a/b", "x_y", "{z}", "~", "é", "naïve",
]  # fmt: skip


def _random_line(rng: random.Random, max_words: int = 14) -> str:
    words = []
    for _ in range(rng.randint(0, max_words)):
        roll = rng.random()
        if roll < 0.2:
            words.append(rng.choice(_TOKENS_WITH_PUNCTUATION))
        elif roll < 0.3 and words:
            words.append(words[-1])  # repeated words exercise clipped counts
        else:
            words.append(rng.choice(_WORDS))
    separator = rng.choice([" ", " ", " ", "  ", "\t"])
    return separator.join(words) + rng.choice(["", "", ".", " ", "-"])


def _random_text(rng: random.Random) -> str:
    """Empty, one line, or several lines (some blank) for ROUGE-Lsum."""
    roll = rng.random()
    if roll < 0.05:
        return ""
    if roll < 0.5:
        return _random_line(rng)
    return "\n".join(_random_line(rng) for _ in range(rng.randint(1, 5)))


def _overlapping_reference(rng: random.Random, prediction: str) -> str:
    """Keeps an in-order random subset of each line's words and inserts a few new ones, so
    n-grams, LCS and line structure partly match the prediction."""
    lines = []
    for line in prediction.split("\n"):
        kept = [word for word in line.split() if rng.random() < 0.7]
        if rng.random() < 0.5:
            kept.insert(rng.randint(0, len(kept)), rng.choice(_WORDS))
        lines.append(" ".join(kept))
    return "\n".join(lines)


def _corpus(seed: int, size: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    predictions = [_random_text(rng) for _ in range(size)]
    references = [
        _overlapping_reference(rng, prediction) if rng.random() < 0.6 else _random_text(rng)
        for prediction in predictions
    ]
    return predictions, references


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    return _corpus(seed=13, size=300)


def _assert_bleu_equal(ours, theirs) -> None:
    assert ours.score == pytest.approx(theirs.score, abs=TOLERANCE)
    assert ours.precisions == pytest.approx(theirs.precisions, abs=TOLERANCE)
    assert ours.bp == pytest.approx(theirs.bp, abs=TOLERANCE)
    assert ours.ratio == pytest.approx(theirs.ratio, abs=TOLERANCE)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    assert ours.counts == list(theirs.counts)
    assert ours.totals == list(theirs.totals)


def test_tokenize_13a_matches_sacrebleu_on_punctuation_heavy_strings():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    reference = Tokenizer13a()
    rng = random.Random(5)
    alphabet = "ab9.,-&;'\"()$<>?!/ \n\té"
    lines = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20_000)]
    lines += ["a..,b", "1.,2", "x.,.5", "3-4-5", "&quot;hi&quot; &amp; &lt;", "end -\nline", "<skipped>x"]
    for line in lines:
        assert list(tokenize_13a(line)) == reference(line.rstrip()).split(), repr(line)


def test_corpus_bleu_matches_sacrebleu_with_one_reference(corpus):
    predictions, references = corpus
    _assert_bleu_equal(
        corpus_bleu(predictions, [references]), sacrebleu.corpus_bleu(predictions, [references])
    )


def test_corpus_bleu_matches_sacrebleu_with_several_and_missing_references(corpus):
    predictions, references = corpus
    rng = random.Random(7)
    second = [_random_text(rng) for _ in predictions]
    third = [None if i % 3 == 0 else _random_line(rng) for i in range(len(predictions))]
    streams = [references, second, third]
    _assert_bleu_equal(corpus_bleu(predictions, streams), sacrebleu.corpus_bleu(predictions, streams))


def test_corpus_bleu_of_short_segments_matches_sacrebleu():
    # Hypotheses shorter than 4 tokens leave higher orders empty; a perfect match scores 100.
    hypotheses = ["a b", "c", "", "d e f"]
    references = [["a b", "c", "x", "d e g"]]
    _assert_bleu_equal(corpus_bleu(hypotheses, references), sacrebleu.corpus_bleu(hypotheses, references))
    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]).score == pytest.approx(100.0)


def test_sentence_bleu_matches_sacrebleu_for_every_pair(corpus):
    predictions, references = corpus
    rng = random.Random(11)
    for prediction, reference in zip(predictions, references, strict=True):
        refs = [reference] if rng.random() < 0.7 else [reference, _random_line(rng)]
        _assert_bleu_equal(sentence_bleu(prediction, refs), sacrebleu.sentence_bleu(prediction, refs))


def test_bleu_rejects_misaligned_references():
    with pytest.raises(ValueError, match="reference stream 0 has 1 segments, expected 2"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(TypeError, match="single str"):
        sentence_bleu("a", "a")


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_matches_rouge_score(corpus, use_stemmer):
    predictions, references = corpus
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    ours = rouge(predictions, references, use_stemmer=use_stemmer)
    for prediction, reference, our_scores in zip(predictions, references, ours, strict=True):
        expected = scorer.score(reference, prediction)
        for rouge_type in ROUGE_TYPES:
            got = our_scores[rouge_type]
            assert (got.precision, got.recall, got.fmeasure) == pytest.approx(
                tuple(expected[rouge_type]), abs=TOLERANCE
            ), (rouge_type, prediction, reference)


def test_rouge_lsum_union_lcs_matches_rouge_score_on_long_multiline_texts():
    # Long sentences over a tiny vocabulary give many tied LCS paths: the union depends on
    # which LCS the backtrack picks, so this checks that choice, not just LCS lengths.
    rng = random.Random(3)
    vocabulary = ["a", "b", "c", "d"]
    scorer = rouge_scorer.RougeScorer(["rougeLsum"])
    for _ in range(60):
        texts = [
            "\n".join(
                " ".join(rng.choices(vocabulary, k=rng.randint(1, 25))) for _ in range(rng.randint(1, 4))
            )
            for _ in range(2)
        ]
        expected = scorer.score(texts[1], texts[0])["rougeLsum"]
        got = rouge([texts[0]], [texts[1]], rouge_types=["rougeLsum"])[0]["rougeLsum"]
        assert (got.precision, got.recall, got.fmeasure) == pytest.approx(tuple(expected), abs=TOLERANCE)


def test_rouge_with_several_references_matches_score_multi(corpus):
    predictions, references = corpus
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    for i in range(0, 60, 3):
        targets = references[i : i + 3]
        expected = scorer.score_multi(targets, predictions[i])
        got = rouge([predictions[i]], [targets], use_stemmer=True)[0]
        for rouge_type in ROUGE_TYPES:
            assert got[rouge_type].fmeasure == pytest.approx(expected[rouge_type].fmeasure, abs=TOLERANCE)
            assert got[rouge_type].recall == pytest.approx(expected[rouge_type].recall, abs=TOLERANCE)


def test_rouge_summary_is_the_mean_fmeasure():
    predictions = ["the cat sat", "a dog ran"]
    references = ["the cat sat", "completely different words"]
    summary = rouge_summary(predictions, references, rouge_types=["rouge1", "rougeL"])
    # Pair 1 matches exactly (F = 1); pair 2 shares no token (F = 0).
    assert summary == {"rouge1": pytest.approx(0.5), "rougeL": pytest.approx(0.5)}


def test_rouge_rejects_unknown_types_and_misaligned_inputs():
    with pytest.raises(ValueError, match="unknown ROUGE type 'rougeX'"):
        rouge(["a"], ["a"], rouge_types=["rougeX"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge(["a", "b"], ["a"])


def _lcs_by_table(a: list[int], b: list[int]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def test_bit_parallel_lcs_length_equals_the_dynamic_programming_table():
    rng = random.Random(1)
    for _ in range(500):
        a = [rng.randrange(4) for _ in range(rng.randint(0, 40))]
        b = [rng.randrange(4) for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == _lcs_by_table(a, b)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat!", "cat"),
        ("  a  quick,   brown fox. ", "quick brown fox"),
        ("An apple; the end", "apple end"),
        ("theatre anthem", "theatre anthem"),  # articles only as whole words
        ("Don't-stop", "dontstop"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_takes_any_reference():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel", ["eiffel tower", "the Eiffel"]) == 1.0
    assert exact_match("Paris", ["London", "Rome"]) == 0.0


def test_token_f1_by_hand():
    # pred tokens {cat, sat, mat}, ref {cat, sat, on, mat, today}: 3 common.
    # P = 3/3, R = 3/5, F1 = 2 * 1 * 0.6 / 1.6 = 0.75.
    assert token_f1("the cat sat mat", "cat sat on the mat today") == pytest.approx(0.75)
    # Multisets: "go go go" against "go go" shares 2 tokens, P = 2/3, R = 1.
    assert token_f1("go go go", "go go") == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    # Max over references.
    assert token_f1("red car", ["blue bike", "red car"]) == 1.0
    # Empty after normalization: only an empty reference agrees.
    assert token_f1("the", "a") == 1.0
    assert token_f1("the", "car") == 0.0
    assert token_f1("car", "bike") == 0.0


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("Step 1... so she pays $18 a day.\n#### 18", "strict", "18"),
        ("#### 1,234.", "strict", "1234"),
        ("#### -5 and later #### 7", "strict", "-5"),
        ("The answer is 18.", "strict", None),
        ("She has 3 apples and buys 15, so 18 in total.", "flexible", "18"),
        ("Total cost: $1,250.00", "flexible", "1250.00"),
        ("It went from 5 to -12", "flexible", "-12"),
        ("#### 42 then she adds 8", "flexible", "8"),
        ("no digits at all", "flexible", None),
    ],
)
def test_extract_gsm8k_answer(text, mode, expected):
    assert extract_gsm8k_answer(text, mode) == expected


def test_gsm8k_is_correct_against_full_solution_or_bare_answer():
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert gsm8k_is_correct("so the total is 72\n#### 72", solution, "strict")
    assert gsm8k_is_correct("48 + 24 = 72.", solution, "flexible")
    assert not gsm8k_is_correct("48 + 24 = 72.", solution, "strict")
    assert gsm8k_is_correct("#### 1,000", "1000", "strict")
    assert not gsm8k_is_correct("#### 71", solution, "strict")
    with pytest.raises(ValueError, match="mode 'loose'"):
        extract_gsm8k_answer("#### 1", "loose")


def test_mmlu_accuracy():
    assert mmlu_accuracy([0, 1, 2, 3], [0, 1, 3, 3]) == 0.75
    with pytest.raises(ValueError, match="3 predictions but 2 gold"):
        mmlu_accuracy([0, 1, 2], [0, 1])


def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    draws = list(itertools.combinations(samples, k))
    return sum(any(draw) for draw in draws) / len(draws)


def test_unbiased_pass_at_k_equals_enumeration_over_all_draws():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert unbiased_pass_at_k(n, c, k) == pytest.approx(
                    _pass_at_k_by_enumeration(n, c, k), abs=1e-12
                )


def test_unbiased_pass_at_k_is_stable_for_large_n_and_vectorized():
    # C(1000, 100) overflows a float; the product form does not.
    expected = 1 - math.comb(900, 100) / math.comb(1000, 100)
    assert unbiased_pass_at_k(1000, 100, 100) == pytest.approx(expected, rel=1e-9)
    values = unbiased_pass_at_k_array(10, [0, 1, 10], k=1)
    assert values.tolist() == pytest.approx([0.0, 0.1, 1.0])
    with pytest.raises(ValueError, match="k=11 with 10 samples"):
        unbiased_pass_at_k(10, 1, 11)
