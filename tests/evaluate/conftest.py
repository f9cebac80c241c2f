"""Builders of per-example evaluation rows for the comparison, gate and report tests."""

import numpy as np
import pandas as pd
import pytest


def rows_for(version: str, scores_by_benchmark: dict[str, object]) -> pd.DataFrame:
    """Rows of one version: per benchmark a 1-D array (one sample per example) or a 2-D array
    (examples x samples); example ids are ``ex<i>``."""
    frames = []
    for benchmark, scores in scores_by_benchmark.items():
        scores = np.asarray(scores, dtype=float)
        grid = scores.reshape(len(scores), -1)
        examples, samples = np.meshgrid(np.arange(grid.shape[0]), np.arange(grid.shape[1]), indexing="ij")
        frames.append(pd.DataFrame({
            "model_version": version, "benchmark": benchmark,
            "example_id": [f"ex{i}" for i in examples.ravel()], "sample": samples.ravel().astype(int),
            "score": grid.ravel(),
        }))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def make_rows():
    return rows_for


def binary_pair(both: int, baseline_only: int, candidate_only: int, neither: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """0/1 baseline and candidate scores with the given 2x2 cell counts, in a shuffled item order."""
    base = np.repeat([1.0, 1.0, 0.0, 0.0], [both, baseline_only, candidate_only, neither])
    cand = np.repeat([1.0, 0.0, 1.0, 0.0], [both, baseline_only, candidate_only, neither])
    order = np.random.default_rng(seed).permutation(len(base))
    return base[order], cand[order]


@pytest.fixture
def make_binary_pair():
    return binary_pair
