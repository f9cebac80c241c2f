"""Comparison reports: the markdown table, JSON that round-trips, and a real PNG plot."""

import json

import numpy as np
import pytest
from PIL import Image

from crucible.evaluate.compare import compare_versions
from crucible.evaluate.report import comparison_json, comparison_markdown, comparison_plot, comparison_table

KINDS = {"mmlu": "binary", "gsm8k": "binary", "norobots": "continuous"}


@pytest.fixture
def result(make_rows, make_binary_pair):
    mmlu = make_binary_pair(both=100, baseline_only=30, candidate_only=5, neither=40)
    gsm8k = make_binary_pair(both=30, baseline_only=0, candidate_only=4, neither=20)  # odds ratio 4/0 = inf
    base_nr = np.random.default_rng(0).uniform(0, 1, 40)
    cand_nr = base_nr + np.random.default_rng(1).normal(0, 0.05, 40)
    base = make_rows("prod-3", {"mmlu": mmlu[0], "gsm8k": gsm8k[0], "norobots": base_nr})
    cand = make_rows("cand-4", {"mmlu": mmlu[1], "gsm8k": gsm8k[1], "norobots": cand_nr})
    return compare_versions(base.iloc[1:], cand, KINDS, n_resamples=500)


def test_markdown_has_a_row_per_benchmark_with_its_numbers(result):
    text = comparison_markdown(result)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| benchmark"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "benchmark", "baseline", "candidate", "diff", "95% CI", "test", "p", "adjusted p", "effect size", "verdict"]
    for c in result.benchmarks:
        row = next(line for line in lines if line.startswith(f"| {c.benchmark} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[3] == f"{c.difference:+.4f}"
        assert cells[4] == f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        assert cells[6:8] == [f"{c.test.p_value:.4g}", f"{c.adjusted_p:.4g}"]
        assert cells[9] == c.verdict
    assert result.get("mmlu").verdict == "worse"
    assert "OR inf (4:0)" in text and "**cand-4** (candidate) vs **prod-3** (baseline)" in text
    assert "mmlu: 0 items only in baseline, 1 only in candidate" in text


def test_json_round_trips_and_keeps_the_numbers(result):
    data = comparison_json(result)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert (data["baseline_version"], data["candidate_version"]) == ("prod-3", "cand-4")
    by_name = {entry["benchmark"]: entry for entry in data["benchmarks"]}
    assert set(by_name) == set(KINDS)
    mmlu = result.get("mmlu")
    assert by_name["mmlu"]["test"] == {"name": mmlu.test.name, "statistic": mmlu.test.statistic,
                                       "p_value": mmlu.test.p_value, "note": mmlu.test.note}
    assert by_name["mmlu"]["verdict"] == "worse" and by_name["mmlu"]["adjusted_p"] == mmlu.adjusted_p
    assert by_name["gsm8k"]["odds_ratio"] is None  # infinite: strict JSON has no Infinity
    assert by_name["norobots"]["secondary_test"]["name"] == "wilcoxon"


def test_table_has_one_row_per_benchmark(result):
    table = comparison_table(result)
    assert table["benchmark"].tolist() == list(KINDS)
    assert table.loc[table["benchmark"] == "mmlu", "n_unpaired"].item() == 1


def test_plot_writes_a_valid_png(result, tmp_path):
    path = comparison_plot(result, tmp_path / "plots" / "comparison.png")
    assert path == tmp_path / "plots" / "comparison.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 300
        # Not a blank canvas: the error bars and text put several distinct colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10
