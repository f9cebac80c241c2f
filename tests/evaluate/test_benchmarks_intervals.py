"""Summary intervals: Wilson equals statsmodels, the bootstrap is seeded and sane, corpus BLEU resamples right."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from crucible.data.metrics import corpus_bleu
from crucible.evaluate.benchmarks import BenchmarkConfig, bootstrap_interval, wilson_interval
from crucible.evaluate.benchmarks.common import mean_metric, proportion_metric
from crucible.evaluate.benchmarks.norobots import corpus_bleu_interval


@pytest.mark.parametrize(("successes", "n", "level"), [(0, 5, 0.95), (5, 5, 0.95), (3, 10, 0.95), (57, 100, 0.9),
                                                       (1, 1, 0.99), (412, 1319, 0.95)])
def test_wilson_interval_equals_statsmodels(successes, n, level):
    expected = proportion_confint(successes, n, alpha=1 - level, method="wilson")
    assert wilson_interval(successes, n, level) == pytest.approx(expected, abs=1e-12)


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="6 successes out of 5"):
        wilson_interval(6, 5)
    with pytest.raises(ValueError, match="n=0"):
        wilson_interval(0, 0)


def test_bootstrap_mean_interval_is_seeded_covers_the_mean_and_shrinks_with_more_items():
    rng = np.random.default_rng(1)
    small, large = rng.uniform(size=20), rng.uniform(size=2000)
    first = bootstrap_interval(20, values=small, seed=7)
    assert first == bootstrap_interval(20, values=small, seed=7)
    assert first != bootstrap_interval(20, values=small, seed=8)
    assert first[0] < small.mean() < first[1]
    wide, narrow = first[1] - first[0], np.subtract(*bootstrap_interval(2000, values=large, seed=7)[::-1])
    # The standard error falls as 1/sqrt(n): 10x narrower for 100x the items, within bootstrap noise.
    assert 6 < wide / narrow < 15
    # For a mean the percentile interval is close to the normal one, mean +- 1.96 s / sqrt(n).
    half = 1.96 * large.std(ddof=1) / np.sqrt(len(large))
    assert narrow == pytest.approx(2 * half, rel=0.1)
    assert bootstrap_interval(5, values=[0.25] * 5) == (0.25, 0.25)


def test_bootstrap_statistic_path_agrees_with_the_mean_path():
    values = np.random.default_rng(2).normal(size=200)
    by_values = bootstrap_interval(200, values=values, resamples=2000, seed=0)
    by_statistic = bootstrap_interval(200, lambda idx: float(values[idx].mean()), resamples=2000, seed=1)
    assert by_statistic == pytest.approx(by_values, abs=0.03)


def test_metric_rows_name_their_interval_method_and_reject_non_binary_proportions():
    config = BenchmarkConfig(ci_level=0.9)
    row = proportion_metric("accuracy", [1.0, 0.0, 1.0, 1.0], config)
    assert (row["value"], row["ci_method"], row["n"], row["ci_level"]) == (0.75, "wilson", 4, 0.9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(3, 4, 0.9))
    assert mean_metric("rougeL", [0.2, 0.4], config)["ci_method"] == "bootstrap"
    with pytest.raises(ValueError, match="0/1 outcomes"):
        proportion_metric("accuracy", [0.5, 1.0], config)


def test_corpus_bleu_bootstrap_sums_segment_statistics_like_corpus_bleu():
    predictions = ["the cat sat on the mat today", "a dog barked loudly at night", "hello there general kenobi"]
    references = ["the cat sat on the mat", "the dog barked at night", "hello there"]
    config = BenchmarkConfig(bootstrap_resamples=200)
    # One item: every resample is that item, so both bounds are its corpus BLEU.
    single = corpus_bleu(predictions[:1], [references[:1]]).score
    assert corpus_bleu_interval(predictions[:1], references[:1], config) == pytest.approx((single, single))
    # Three copies of each item: a resample's score is corpus BLEU of the drawn items.
    low, high = corpus_bleu_interval(predictions * 3, references * 3, config)
    whole = corpus_bleu(predictions * 3, [references * 3]).score
    assert 0 < low < whole < high < 100
