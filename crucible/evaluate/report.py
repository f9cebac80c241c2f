"""Reports of a model comparison: a table, markdown, JSON and a plot of differences with CIs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from crucible.evaluate.compare import TEST_LABELS, BenchmarkComparison, ComparisonResult


def comparison_table(result: ComparisonResult) -> pd.DataFrame:
    """One row per benchmark with the numbers the markdown report shows (unformatted)."""
    return pd.DataFrame([{
        "benchmark": c.benchmark, "kind": c.kind, "n_paired": c.n_paired,
        "n_unpaired": c.n_unpaired_baseline + c.n_unpaired_candidate,
        "baseline": c.baseline_mean, "candidate": c.candidate_mean, "difference": c.difference,
        "ci_low": c.ci_low, "ci_high": c.ci_high, "test": c.test.name, "p_value": c.test.p_value,
        "adjusted_p": c.adjusted_p, "cohens_dz": c.cohens_dz, "odds_ratio": c.odds_ratio,
        "verdict": c.verdict,
    } for c in result.benchmarks])


def comparison_markdown(result: ComparisonResult) -> str:
    """A markdown table, one row per benchmark, with a header naming the versions and the method."""
    level = f"{result.ci_level:.0%}"
    lines = [
        f"**{result.candidate_version}** (candidate) vs **{result.baseline_version}** (baseline): paired "
        f"bootstrap {level} CI ({result.n_resamples} resamples, seed {result.seed}), "
        f"{result.correction.title()}-adjusted p at alpha {result.alpha:g}",
        "",
        f"| benchmark | baseline | candidate | diff | {level} CI | test | p | adjusted p | effect size | verdict |",
        "|---|---:|---:|---:|---|---|---:|---:|---|---|",
    ]
    for c in result.benchmarks:
        lines.append(
            f"| {c.benchmark} | {c.baseline_mean:.4f} | {c.candidate_mean:.4f} | {c.difference:+.4f} "
            f"| [{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {TEST_LABELS[c.test.name]} | {c.test.p_value:.4g} "
            f"| {c.adjusted_p:.4g} | {_effect_size(c)} | {c.verdict} |")
    notes = [f"- {c.benchmark}: {note}" for c in result.benchmarks
             for note in (*c.notes, c.test.note) if note]
    if any(c.odds_ratio is not None for c in result.benchmarks):
        notes.insert(0, "- OR (a:b): odds ratio of discordant pairs, a items right only for the candidate "
                        "over b items right only for the baseline")
    unpaired = [f"- {c.benchmark}: {c.n_unpaired_baseline} items only in baseline, "
                f"{c.n_unpaired_candidate} only in candidate (left out)"
                for c in result.benchmarks if c.n_unpaired_baseline or c.n_unpaired_candidate]
    if notes or unpaired:
        lines += ["", "Notes:", *notes, *unpaired]
    return "\n".join(lines) + "\n"


def comparison_json(result: ComparisonResult) -> dict:
    """The whole comparison as plain JSON data (NaN and infinities become null), verdicts included."""
    data = json_safe(dataclasses.asdict(result))
    for entry, comparison in zip(data["benchmarks"], result.benchmarks, strict=True):
        entry["verdict"] = comparison.verdict
    return data


def comparison_plot(result: ComparisonResult, path: str | Path) -> Path:
    """Save a PNG of each benchmark's difference (candidate - baseline) with its CI and a zero line."""
    from matplotlib.figure import Figure  # a bare Figure renders through Agg without touching pyplot state

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = {"better": "tab:green", "worse": "tab:red", "no significant difference": "tab:gray"}
    fig = Figure(figsize=(max(4.0, 1.2 * len(result.benchmarks) + 2), 4), dpi=100)
    ax = fig.add_subplot()
    for x, c in enumerate(result.benchmarks):
        ax.errorbar([x], [c.difference], yerr=[[c.difference - c.ci_low], [c.ci_high - c.difference]],
                    fmt="o", capsize=6, color=colours[c.verdict], label=c.verdict)
    ax.axhline(0.0, color="black", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(result.benchmarks)), [c.benchmark for c in result.benchmarks])
    ax.set_xlim(-0.5, len(result.benchmarks) - 0.5)
    ax.set_ylabel(f"candidate - baseline ({result.ci_level:.0%} CI)")
    ax.set_title(f"{result.candidate_version} vs {result.baseline_version}")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _effect_size(c: BenchmarkComparison) -> str:
    text = f"dz {_number(c.cohens_dz)}"
    if c.odds_ratio is not None:
        text += f", OR {_number(c.odds_ratio)} ({c.n_candidate_only}:{c.n_baseline_only})"
    return text


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def json_safe(value: object) -> object:
    """``value`` with NaN and infinities as None and keys as strings, so ``json.dumps(allow_nan=False)`` works."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
