"""Synthetic tasks small enough to learn on a CPU in seconds: demos, tests and benchmarks of training loops."""

from __future__ import annotations

import json

import pandas as pd


def single_digit_sums(max_operand: int = 9, max_sum: int = 9) -> pd.DataFrame:
    """Examples-table rows (ExamplesSchema columns) asking ``"a+b="`` for digits ``a, b <= max_operand``
    with ``a + b <= max_sum``; the target and the assistant turn are the sum, e.g. ``"3+4="`` -> ``"7"``."""
    rows = []
    for a in range(max_operand + 1):
        for b in range(max_operand + 1):
            if a + b > max_sum:
                continue
            question, answer = f"{a}+{b}=", str(a + b)
            rows.append({
                "dataset": "tiny_sums", "split": "train", "example_id": f"sum-{a}-{b}", "input": question,
                "target": answer, "source": "synthetic",
                "messages": json.dumps([{"role": "user", "content": question},
                                        {"role": "assistant", "content": answer}]),
                "metadata": json.dumps({"a": a, "b": b}),
            })
    return pd.DataFrame(rows)
