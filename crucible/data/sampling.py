"""Seeded, deterministic sampling and splitting of examples-table DataFrames: random and stratified
samples, k-fold assignment and train/validation/test splits as rows of the splits table."""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# The columns of schemas.datasets.SplitsSchema, in order.
SPLIT_COLUMNS = ("dataset", "split_name", "example_id", "source_split", "fold")
NO_FOLD = -1
DEFAULT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def largest_remainder_allocation(weights: Mapping[Hashable, float], n: int, *, seed: int) -> dict[Hashable, int]:
    """Share ``n`` items among groups in proportion to ``weights`` (Hamilton's largest-remainder method).

    Each group gets ``floor(n * w / sum(w))`` and the items left over go one each to the groups
    with the largest remainders, so every group's count is within one of its exact share and the
    counts add up to ``n``. Equal remainders are ordered by a draw seeded with ``seed``.
    """
    if n < 0:
        raise ValueError(f"cannot allocate a negative number of items ({n})")
    exact = {key: Fraction(str(weight)) if isinstance(weight, float) else Fraction(weight)
             for key, weight in weights.items()}
    if not exact or any(weight < 0 for weight in exact.values()) or sum(exact.values()) == 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {dict(weights)}")
    total = sum(exact.values())
    shares = {key: n * weight / total for key, weight in exact.items()}
    counts = {key: share.numerator // share.denominator for key, share in shares.items()}
    tiebreak = dict(zip(shares, np.random.default_rng(seed).permutation(len(shares)), strict=True))
    by_remainder = sorted(shares, key=lambda key: (-(shares[key] - counts[key]), tiebreak[key]))
    for key in by_remainder[: n - sum(counts.values())]:
        counts[key] += 1
    return counts


def metadata_column(frame: pd.DataFrame, key: str) -> pd.Series:
    """One field of the JSON ``metadata`` column (e.g. MMLU's ``subject``), to stratify on."""
    return frame["metadata"].map(lambda text: json.loads(text).get(key))


def _check_size(frame: pd.DataFrame, n: int) -> None:
    if not 0 <= n <= len(frame):
        raise ValueError(f"cannot sample {n} rows from {len(frame)}")


def sample_random(frame: pd.DataFrame, n: int, *, seed: int) -> pd.DataFrame:
    """``n`` rows drawn without replacement, kept in their original order."""
    _check_size(frame, n)
    picked = np.random.default_rng(seed).choice(len(frame), size=n, replace=False)
    return frame.iloc[np.sort(picked)]


def _strata(frame: pd.DataFrame, by: str | Sequence[str]) -> dict[Hashable, np.ndarray]:
    """Row positions of each stratum, strata in sorted order."""
    columns = [by] if isinstance(by, str) else list(by)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise KeyError(f"cannot stratify by {missing}: not columns of the frame ({', '.join(frame.columns)})")
    return frame.groupby(columns if len(columns) > 1 else columns[0], sort=True, dropna=False).indices


def sample_stratified(frame: pd.DataFrame, n: int, by: str | Sequence[str], *, seed: int) -> pd.DataFrame:
    """Exactly ``n`` rows, each stratum of ``by`` within one row of its proportional share
    (largest-remainder allocation), drawn without replacement and kept in their original order."""
    _check_size(frame, n)
    strata = _strata(frame, by)
    if n == 0:
        return frame.iloc[:0]
    rng = np.random.default_rng(seed)
    quotas = largest_remainder_allocation({key: len(rows) for key, rows in strata.items()}, n,
                                          seed=int(rng.integers(2**32)))
    picked = [rng.choice(rows, size=quotas[key], replace=False) for key, rows in strata.items()]
    return frame.iloc[np.sort(np.concatenate(picked))]


def _shuffled_positions(frame: pd.DataFrame, rng: np.random.Generator, stratify_by: str | Sequence[str] | None):
    """All row positions shuffled; stratified, each stratum's rows stay together (strata in sorted order)."""
    if stratify_by is None:
        return rng.permutation(len(frame))
    return np.concatenate([rng.permutation(rows) for rows in _strata(frame, stratify_by).values()])


def _split_rows(frame: pd.DataFrame, split_names: np.ndarray, folds: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    missing = [column for column in ("dataset", "split", "example_id") if column not in frame.columns]
    if missing:
        raise KeyError(f"the frame needs the examples-table columns {missing}")
    repeated = frame.duplicated(["dataset", "split", "example_id"], keep=False)
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise ValueError(f"example_id {first['example_id']!r} occurs more than once in split {first['split']!r} "
                         f"of {first['dataset']!r}; the splits table keys rows by (dataset, split_name, "
                         "example_id, source_split), so each example may appear once per source split")
    return pd.DataFrame({
        "dataset": frame["dataset"].to_numpy(),
        "split_name": split_names,
        "example_id": frame["example_id"].to_numpy(),
        "source_split": frame["split"].to_numpy(),
        "fold": folds.astype("int64"),
    }, columns=list(SPLIT_COLUMNS))


def k_fold(frame: pd.DataFrame, k: int, *, seed: int, stratify_by: str | Sequence[str] | None = None,
           split_name: str = "train") -> pd.DataFrame:
    """Assign every example to one of ``k`` folds: rows in SplitsSchema columns, aligned with ``frame``.

    Fold sizes differ by at most one; with ``stratify_by`` each stratum's rows are also spread so
    that its count in any two folds differs by at most one. Fold ``i``'s test set is
    ``frame[result["fold"].to_numpy() == i]``.
    """
    if not 2 <= k <= len(frame):
        raise ValueError(f"k must be between 2 and the number of rows ({len(frame)}), got {k}")
    order = _shuffled_positions(frame, np.random.default_rng(seed), stratify_by)
    folds = np.empty(len(frame), dtype="int64")
    folds[order] = np.arange(len(frame)) % k
    return _split_rows(frame, np.full(len(frame), split_name, dtype=object), folds)


def split_by_fractions(frame: pd.DataFrame, fractions: Mapping[str, float] | None = None, *,
                       seed: int) -> pd.DataFrame:
    """Split examples into named parts (train/validation/test by default) of sizes proportional to
    ``fractions`` (largest remainder: each within one row of its exact share, together all rows).

    Returns rows in SplitsSchema columns, aligned with ``frame``, with ``fold`` -1.
    """
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    if any(share <= 0 for share in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise ValueError(f"fractions must be positive and add up to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    sizes = largest_remainder_allocation(fractions, len(frame), seed=int(rng.integers(2**32)))
    names = np.empty(len(frame), dtype=object)
    names[rng.permutation(len(frame))] = np.repeat(list(sizes), list(sizes.values()))
    return _split_rows(frame, names, np.full(len(frame), NO_FOLD))


def fold_split_name(fold: int) -> str:
    """The ``split_name`` of the training examples held out in ``fold``: ``fold-0``, ``fold-1``, ..."""
    return f"fold-{fold}"


def split_with_folds(frame: pd.DataFrame, fractions: Mapping[str, float] | None = None, *, k: int = 5,
                     seed: int) -> pd.DataFrame:
    """Rows of the splits table for one dataset: every example in one of train/validation/test
    (``split_by_fractions``, fold -1), and every train example once more in ``fold-<i>`` with fold ``i``
    (``k_fold`` of the train part). Fold ``i`` validates on ``fold-<i>`` and trains on the other train rows.

    Examples are ordered by (split, example_id) first, so the result does not depend on the order
    the rows were read in. Folds are left out when the train part has fewer than ``k`` rows.
    """
    import pandas as pd

    ordered = frame.sort_values(["split", "example_id"], kind="stable").reset_index(drop=True)
    splits = split_by_fractions(ordered, fractions, seed=seed)
    train = ordered[(splits["split_name"] == "train").to_numpy()]
    if len(train) < max(k, 2):
        return splits
    folds = k_fold(train, k, seed=seed + 1)
    folds["split_name"] = folds["fold"].map(fold_split_name)
    return pd.concat([splits, folds], ignore_index=True)
