"""Distribution plots of a drift report, baseline against the day: one small PNG per feature."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from crucible.monitoring.drift import DriftResult, NumericSample, PreparedFeature

BASELINE_COLOR, CURRENT_COLOR = "#4c72b0", "#dd8452"


def _numeric(ax, baseline: NumericSample, current: NumericSample) -> None:
    # Shared bins over the central 99% of both samples, so one outlier does not flatten the histogram.
    lo = min(baseline.quantiles(np.array([0.005]))[0], current.quantiles(np.array([0.005]))[0])
    hi = max(baseline.quantiles(np.array([0.995]))[0], current.quantiles(np.array([0.995]))[0])
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 31)
    edges[-1] = np.nextafter(edges[-1], np.inf)
    for sample, color, label in ((baseline, BASELINE_COLOR, "baseline"), (current, CURRENT_COLOR, "day")):
        counts = np.diff(sample.count_below(edges))
        ax.stairs(counts / sample.n, edges, fill=True, alpha=0.45, color=color, label=f"{label} (n={sample.n})")
    ax.set_ylabel("share")


def _categorical(ax, baseline: Mapping[str, int], current: Mapping[str, int]) -> None:
    categories = sorted(set(baseline) | set(current), key=lambda c: -(baseline.get(c, 0) + current.get(c, 0)))[:12]
    x = np.arange(len(categories))
    for offset, counts, color, label in ((-0.2, baseline, BASELINE_COLOR, "baseline"),
                                         (0.2, current, CURRENT_COLOR, "day")):
        total = sum(counts.values()) or 1
        ax.bar(x + offset, [counts.get(c, 0) / total for c in categories], 0.4, color=color, label=label)
    ax.set_xticks(x, categories, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share")


def _rate(ax, baseline: tuple[int, int], current: tuple[int, int]) -> None:
    rates = [baseline[0] / baseline[1], current[0] / current[1]]
    ax.bar(["baseline", "day"], rates, color=[BASELINE_COLOR, CURRENT_COLOR])
    for i, (successes, trials) in enumerate((baseline, current)):
        ax.annotate(f"{successes}/{trials}", (i, rates[i]), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("rate")


def _embedding(ax, baseline: np.ndarray, current: np.ndarray) -> None:
    # The two leading principal axes of both samples together.
    pooled = np.vstack([baseline, current]).astype(np.float64)
    centered = pooled - pooled.mean(axis=0)
    _, _, axes = np.linalg.svd(centered, full_matrices=False)
    projected = centered @ axes[:2].T
    n = len(baseline)
    ax.scatter(projected[:n, 0], projected[:n, 1], s=6, alpha=0.5, color=BASELINE_COLOR, label=f"baseline (n={n})")
    ax.scatter(projected[n:, 0], projected[n:, 1], s=6, alpha=0.7, color=CURRENT_COLOR,
               label=f"day (n={len(current)})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")


def feature_plot(name: str, baseline: PreparedFeature, current: PreparedFeature,
                 results: Sequence[DriftResult] = ()) -> bytes:
    """A PNG of the feature's baseline and day distributions, titled with the detectors' verdicts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 2.8), dpi=80)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    draw = {"numeric": _numeric, "categorical": _categorical, "rate": _rate, "embedding": _embedding}[baseline.kind]
    draw(ax, baseline.data, current.data)
    verdicts = ", ".join(f"{r.detector} {'DRIFT' if r.drifted else 'ok'}" for r in results)
    ax.set_title(f"{name}: {verdicts}" if verdicts else name, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plots_markdown(images: Mapping[str, bytes]) -> str:
    """The PNGs inline as data URLs in one markdown text (what the Dagster UI renders)."""
    return "\n\n".join(f"**{name}**\n\n![{name}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
                       for name, png in images.items())


def save_plots(images: Mapping[str, bytes], folder: Path) -> list[Path]:
    """Write each PNG as ``<folder>/<feature>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in images.items():
        path = folder / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths
