"""Property tests: planted PII is removed whatever surrounds it; look-alikes never change; scrubbing settles."""

import random
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from crucible.feedback.pii import Scrubber, sanitize_pii
from tests.feedback.pii_corpus import HARD_NEGATIVES, KINDS, planted_value

# Words that are labels for some detector ("version 1.2.3.4" is a version, "bearer <hex>" a token).
_LABEL_WORDS = {"v", "ver", "version", "release", "build", "firmware", "fw", "rev", "revision", "bearer", "basic",
                "token", "authorization", "ssn", "ss", "is", "secret", "digest", "negotiate", "apikey"}
_word = st.text(string.ascii_letters, min_size=1, max_size=10).filter(lambda w: w.lower() not in _LABEL_WORDS)
# Anything at all far from the value, then a plain word and a boundary next to it.
_far = st.text(max_size=40)
_left = st.sampled_from([" ", "\n", "\t", "(", "[", "\"", "'", ": ", "<", " - ", "; ", "=", "|"])
_right = st.sampled_from([" ", "\n", "\t", ")", "]", "\"", "'", ", ", ". ", "! ", "? ", ";", ">", ": ", "|"])
_seed = st.integers(0, 2**32 - 1)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=_seed, far_left=_far, word_left=_word, left=_left, right=_right,
       word_right=_word, far_right=_far)
def test_a_valid_value_is_always_removed(kind, seed, far_left, word_left, left, right, word_right, far_right):
    label, value, _ = planted_value(random.Random(seed), kind)
    text = f"{far_left} {word_left}{left}{label}{value}{right}{word_right} {far_right}"
    scrubbed = sanitize_pii(text)
    assert value not in scrubbed.text
    assert f"[{kind}]" in scrubbed.text


@settings(max_examples=300, deadline=None)
@given(seed=_seed, words=st.lists(st.tuples(_word, _left, _right), min_size=1, max_size=6))
def test_pure_hard_negative_text_is_unchanged(seed, words):
    rng = random.Random(seed)
    names = sorted(HARD_NEGATIVES)
    text = "".join(f"{word}{left}{HARD_NEGATIVES[rng.choice(names)](rng)}{right}" for word, left, right in words)
    assert sanitize_pii(text).text == text


@settings(max_examples=300, deadline=None)
@given(seed=_seed, parts=st.lists(st.one_of(st.text(max_size=30), st.sampled_from(KINDS), st.sampled_from(sorted(HARD_NEGATIVES))),
                                  max_size=8))
def test_scrubbing_is_idempotent(seed, parts):
    rng = random.Random(seed)
    pieces = []
    for part in parts:
        if part in KINDS:
            label, value, _ = planted_value(rng, part)
            pieces.append(label + value)
        elif part in HARD_NEGATIVES:
            pieces.append(HARD_NEGATIVES[part](rng))
        else:
            pieces.append(part)
    once = sanitize_pii(rng.choice((" ", "", ", ", "\n")).join(pieces))
    twice = sanitize_pii(once.text)
    assert twice.text == once.text and twice.redactions == 0


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=60), max_size=20))
def test_bulk_path_agrees_with_single_texts(texts):
    scrubber = Scrubber()
    expected = [scrubber.scrub(t) for t in texts]
    assert scrubber.scrub_many(texts) == expected
    column = scrubber.scrub_column(texts)
    assert column.texts.to_pylist() == [e.text for e in expected]
    assert column.redactions.tolist() == [e.redactions for e in expected]
