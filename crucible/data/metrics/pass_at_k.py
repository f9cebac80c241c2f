"""Unbiased pass@k for code generation (Chen et al. 2021, "Evaluating Large Language Models
Trained on Code")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n samples,
    c of them correct, is correct: 1 - C(n-c, k) / C(n, k).

    Computed in the product form 1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms the
    huge binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass@k: {c} correct samples out of {n}; expected 0 <= c <= n")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k: k={k} with {n} samples; expected 1 <= k <= n")
    if n - c < k:
        return 1.0
    all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong


def unbiased_pass_at_k_array(n: int | Sequence[int], c: Sequence[int], k: int) -> np.ndarray:
    """unbiased_pass_at_k per problem; `n` is one sample count for every problem or one each."""
    import numpy as np

    correct = np.asarray(c, dtype=np.int64)
    samples = np.broadcast_to(np.asarray(n, dtype=np.int64), correct.shape)
    return np.array(
        [unbiased_pass_at_k(int(n_i), int(c_i), k) for n_i, c_i in zip(samples, correct, strict=True)],
        dtype=float,
    )
