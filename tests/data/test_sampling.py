"""Sampling and splits: exact sizes, proportional strata, folds that cover every row once, seeded determinism."""

from collections import Counter
from fractions import Fraction

import pandas as pd
import pytest

from crucible.data.loaders import load_benchmark
from crucible.data.sampling import (
    NO_FOLD,
    SPLIT_COLUMNS,
    k_fold,
    largest_remainder_allocation,
    metadata_column,
    sample_random,
    sample_stratified,
    split_by_fractions,
    split_with_folds,
)
from schemas.datasets import SplitsSchema

# Uneven strata: 50 / 30 / 13 / 7 / 1 rows.
STRATA = {"algebra": 50, "biology": 30, "chemistry": 13, "drama": 7, "ethics": 1}


@pytest.fixture
def examples() -> pd.DataFrame:
    subjects = [subject for subject, count in STRATA.items() for _ in range(count)]
    return pd.DataFrame(
        {
            "dataset": "toy",
            "split": "train",
            "example_id": [f"train-{n:06d}" for n in range(len(subjects))],
            "subject": subjects,
        }
    )


def test_split_columns_match_the_schema():
    assert list(SPLIT_COLUMNS) == list(SplitsSchema.to_schema().columns)


@pytest.mark.parametrize("n", [0, 1, 7, 10, 33, 99, 101])
def test_largest_remainder_is_exact_and_within_one_of_each_share(n):
    counts = largest_remainder_allocation(STRATA, n, seed=0)
    total = sum(STRATA.values())
    assert sum(counts.values()) == n
    for key, count in counts.items():
        assert abs(count - Fraction(n * STRATA[key], total)) < 1


def test_largest_remainder_breaks_ties_by_seed():
    weights = {name: 1 for name in "abcdef"}
    picks = {
        tuple(k for k, v in largest_remainder_allocation(weights, 3, seed=seed).items() if v)
        for seed in range(10)
    }
    assert len(picks) > 1
    assert largest_remainder_allocation(weights, 3, seed=4) == largest_remainder_allocation(
        weights, 3, seed=4
    )


def test_random_sample_size_determinism_and_seed(examples):
    first = sample_random(examples, 20, seed=1)
    assert len(first) == 20 and first["example_id"].is_unique
    assert first.equals(sample_random(examples, 20, seed=1))
    assert not first.index.equals(sample_random(examples, 20, seed=2).index)
    with pytest.raises(ValueError, match="cannot sample 102 rows from 101"):
        sample_random(examples, 102, seed=0)


@pytest.mark.parametrize("n", [10, 25, 64, 100])
def test_stratified_sample_exact_size_and_proportions(examples, n):
    sample = sample_stratified(examples, n, "subject", seed=3)
    assert len(sample) == n and sample["example_id"].is_unique
    counts = Counter(sample["subject"])
    for subject, size in STRATA.items():
        assert abs(counts.get(subject, 0) - Fraction(n * size, len(examples))) < 1
    assert sample.equals(sample_stratified(examples, n, "subject", seed=3))


def test_stratified_sample_differs_by_seed_and_knows_its_columns(examples):
    assert not sample_stratified(examples, 20, "subject", seed=1).index.equals(
        sample_stratified(examples, 20, "subject", seed=2).index
    )
    with pytest.raises(KeyError, match="cannot stratify by \\['level'\\]"):
        sample_stratified(examples, 5, "level", seed=0)


@pytest.mark.parametrize("stratify_by", [None, "subject"])
def test_k_fold_puts_every_row_in_exactly_one_balanced_fold(examples, stratify_by):
    folds = k_fold(examples, 4, seed=5, stratify_by=stratify_by)
    assert list(folds.columns) == list(SPLIT_COLUMNS)
    SplitsSchema.validate(folds)
    assert list(folds["example_id"]) == list(examples["example_id"])
    test_sets = [set(folds.loc[folds["fold"] == i, "example_id"]) for i in range(4)]
    assert sum(len(test) for test in test_sets) == len(examples)
    assert set().union(*test_sets) == set(examples["example_id"])
    sizes = Counter(folds["fold"])
    assert set(sizes) == {0, 1, 2, 3} and max(sizes.values()) - min(sizes.values()) <= 1
    assert folds.equals(k_fold(examples, 4, seed=5, stratify_by=stratify_by))
    assert not folds["fold"].equals(k_fold(examples, 4, seed=6, stratify_by=stratify_by)["fold"])


def test_stratified_k_fold_spreads_each_stratum(examples):
    folds = k_fold(examples, 4, seed=5, stratify_by="subject")
    per_stratum = Counter(zip(examples["subject"], folds["fold"], strict=True))
    for subject in STRATA:
        counts = [per_stratum.get((subject, fold), 0) for fold in range(4)]
        assert max(counts) - min(counts) <= 1, (subject, counts)


def test_split_by_fractions_sizes_and_schema(examples):
    splits = split_by_fractions(examples, {"train": 0.8, "validation": 0.1, "test": 0.1}, seed=7)
    SplitsSchema.validate(splits)
    sizes = Counter(splits["split_name"])
    assert sizes == {"train": 81, "validation": 10, "test": 10}  # shares 80.8 / 10.1 / 10.1
    assert set(splits["fold"]) == {NO_FOLD} and set(splits["source_split"]) == {"train"}
    assert splits.equals(split_by_fractions(examples, seed=7))
    assert not splits["split_name"].equals(split_by_fractions(examples, seed=8)["split_name"])
    with pytest.raises(ValueError, match="add up to 1"):
        split_by_fractions(examples, {"train": 0.5, "test": 0.4}, seed=0)


def test_split_keeps_ids_repeated_across_source_splits_but_rejects_repeats_within_one(examples):
    doubled = pd.concat([examples, examples.assign(split="test")])
    folds = k_fold(doubled, 3, seed=0)
    SplitsSchema.validate(folds)  # unique on (dataset, split_name, example_id, source_split)
    assert Counter(folds["source_split"]) == {"train": len(examples), "test": len(examples)}
    with pytest.raises(ValueError, match="occurs more than once in split 'train'"):
        k_fold(pd.concat([examples, examples.head(1)]), 3, seed=0)


def test_split_with_folds_holds_out_each_train_example_once_whatever_the_row_order(examples):
    rows = split_with_folds(examples, k=5, seed=3)
    SplitsSchema.validate(rows)
    main = rows[rows["fold"] == NO_FOLD]
    assert sorted(main["example_id"]) == sorted(examples["example_id"])
    folds = rows[rows["fold"] != NO_FOLD]
    assert sorted(folds["example_id"]) == sorted(main.loc[main["split_name"] == "train", "example_id"])
    assert set(folds["split_name"]) == {f"fold-{i}" for i in range(5)}
    assert (folds["split_name"] == "fold-" + folds["fold"].astype(str)).all()
    shuffled = examples.sample(frac=1, random_state=1)
    assert rows.equals(split_with_folds(shuffled, k=5, seed=3))
    assert set(split_with_folds(examples.head(4), k=5, seed=3)["fold"]) == {NO_FOLD}


def test_stratified_mmlu_sample_by_subject():
    frame = load_benchmark("mmlu", splits=["val"]).to_frame()
    frame = frame.assign(subject=metadata_column(frame, "subject"))
    sample = sample_stratified(frame, 200, "subject", seed=0)
    assert len(sample) == 200
    shares = frame["subject"].value_counts()
    counts = sample["subject"].value_counts()
    for subject, size in shares.items():
        assert abs(counts.get(subject, 0) - Fraction(200 * int(size), len(frame))) < 1
    SplitsSchema.validate(k_fold(sample, 5, seed=0, stratify_by="subject"))
