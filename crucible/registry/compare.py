"""Registered versions side by side: what differs in their training config, metrics and lineage, and, where
they were scored on the same benchmark items, the evaluation layer's paired statistical comparison."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crucible.evaluate.compare import ComparisonResult
from crucible.evaluate.report import json_safe
from crucible.lake import DeltaLake
from crucible.registry import lineage
from crucible.registry.registry import ModelVersion, lineage_edges

SELF = "<self>"  # a version's own node in its lineage edges, so that edges of different versions compare


@dataclass(frozen=True)
class VersionComparison:
    """Two or more versions compared; the first is the baseline of the metric deltas and the statistics.

    ``config_diff`` maps each dotted training-config key whose value differs to its value per version
    (None where a version lacks it); ``metrics`` holds every metric per version, ``metric_deltas`` each
    version's difference from the baseline; ``lineage_only`` the ancestor nodes and edges (the version's
    own node written as ``<self>``) that a version has and no other compared version has.
    """

    labels: tuple[str, ...]
    versions: tuple[ModelVersion, ...]
    config_diff: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, float | None]]
    metric_deltas: dict[str, dict[str, float | None]]
    lineage_shared: tuple[str, ...]
    lineage_only: dict[str, dict[str, list[str]]]
    statistics: tuple[ComparisonResult, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (NaN and infinities as null)."""
        from crucible.evaluate.report import comparison_json

        return json_safe({
            "versions": [_overview(label, v) for label, v in zip(self.labels, self.versions, strict=True)],
            "config_diff": self.config_diff, "metrics": self.metrics, "metric_deltas": self.metric_deltas,
            "lineage": {"shared": list(self.lineage_shared), "only_in": self.lineage_only},
            "statistics": [comparison_json(result) for result in self.statistics], "notes": list(self.notes),
        })

    def markdown(self) -> str:
        from crucible.evaluate.report import comparison_markdown

        labels = list(self.labels)
        overview = [_overview(label, v) for label, v in zip(labels, self.versions, strict=True)]
        rows = [[key, *(_cell(entry[key]) for entry in overview)] for key in overview[0] if key != "label"]
        sections = ["## Versions", _md_table(["", *labels], rows), "", "## Training config differences"]
        sections.append(_md_table(["key", *labels], [[key, *(_cell(values.get(label)) for label in labels)]
                                                      for key, values in self.config_diff.items()])
                        if self.config_diff else "No differences.")
        sections += ["", "## Metrics"]
        metric_rows = [[name, *(_cell(values.get(label)) for label in labels),
                        *(_cell(self.metric_deltas[name].get(label), signed=True) for label in labels[1:])]
                       for name, values in self.metrics.items()]
        sections.append(_md_table(["metric", *labels, *(f"{label} - {labels[0]}" for label in labels[1:])],
                                  metric_rows) if metric_rows else "No metrics recorded.")
        sections += ["", "## Lineage differences"]
        only = [[label, kind, item] for label, kinds in self.lineage_only.items()
                for kind, items in kinds.items() for item in items]
        sections.append(_md_table(["only in", "kind", "node or edge"], only) if only else "Same ancestors.")
        if self.lineage_shared:
            sections.append(f"\nShared ancestors: {', '.join(self.lineage_shared)}")
        sections += ["", "## Evaluation (paired statistics)"]
        sections += [comparison_markdown(result) for result in self.statistics] or ["No shared evaluation results."]
        if self.notes:
            sections += ["", "Notes:", *(f"- {note}" for note in self.notes)]
        return "\n".join(sections).rstrip() + "\n"


def compare_registered(lake: DeltaLake, versions: Sequence[ModelVersion], *, benchmarks: Sequence[str] | None = None,
                       alpha: float = 0.05, n_resamples: int = 2000, seed: int = 0) -> VersionComparison:
    """Compare ``versions`` (two or more, the first being the baseline).

    Statistics: each later version against the baseline with :func:`crucible.evaluate.compare.compare_versions`
    over ``results_of`` their training runs, on every benchmark (or those of ``benchmarks``) that both were
    scored on with at least one item in common; the others are named in ``notes``.
    """
    if len(versions) < 2:
        raise ValueError(f"compare: give at least two versions, got {len(versions)}")
    labels = _labels(versions)
    if len(set(labels)) < len(labels):
        raise ValueError(f"compare: the same version is given twice ({', '.join(labels)})")
    configs = {label: _flatten(v.training_config) for label, v in zip(labels, versions, strict=True)}
    config_diff = {key: {label: configs[label].get(key) for label in labels}
                   for key in sorted(set().union(*configs.values()))
                   if len({json.dumps([key in configs[label], configs[label].get(key)], sort_keys=True, default=str)
                           for label in labels}) > 1}
    names = sorted(set().union(*(v.metrics for v in versions)))
    metrics = {name: {label: v.metrics.get(name) for label, v in zip(labels, versions, strict=True)} for name in names}
    deltas = {name: {label: _delta(values[label], values[labels[0]]) for label in labels[1:]}
              for name, values in metrics.items()}
    shared, only = _lineage_diff(lake, labels, versions)
    statistics, notes = _statistics(lake, labels, versions, benchmarks, alpha=alpha, n_resamples=n_resamples,
                                    seed=seed)
    return VersionComparison(tuple(labels), tuple(versions), config_diff, metrics, deltas, shared, only,
                             tuple(statistics), tuple(notes))


def _labels(versions: Sequence[ModelVersion]) -> list[str]:
    one_model = len({v.model_name for v in versions}) == 1
    return [f"v{v.version}" if one_model else f"{v.model_name}/v{v.version}" for v in versions]


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _delta(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or baseline is None else float(value) - float(baseline)


def _lineage_diff(lake: DeltaLake, labels: list[str],
                  versions: Sequence[ModelVersion]) -> tuple[tuple[str, ...], dict[str, dict[str, list[str]]]]:
    edges = lineage_edges(lake)
    nodes: dict[str, set[str]] = {}
    links: dict[str, set[str]] = {}
    for label, version in zip(labels, versions, strict=True):
        hops = lineage.walk(edges, version.node, "ancestors")
        nodes[label] = {hop.source for hop in hops} - {version.node}
        links[label] = {f"{hop.source} -[{hop.relation}]-> {SELF if hop.target == version.node else hop.target}"
                        for hop in hops}
    shared = tuple(sorted(set.intersection(*nodes.values())))
    only: dict[str, dict[str, list[str]]] = {}
    for label in labels:
        others_nodes = set().union(*(nodes[o] for o in labels if o != label))
        others_links = set().union(*(links[o] for o in labels if o != label))
        mine = {"ancestors": sorted(nodes[label] - others_nodes), "edges": sorted(links[label] - others_links)}
        if mine["ancestors"] or mine["edges"]:
            only[label] = mine
    return shared, only


def _statistics(lake: DeltaLake, labels: list[str], versions: Sequence[ModelVersion],
                benchmarks: Sequence[str] | None, **options: Any) -> tuple[list[ComparisonResult], list[str]]:
    from crucible.evaluate.benchmarks import BENCHMARKS
    from crucible.evaluate.compare import compare_versions
    from crucible.evaluate.runner import results_of

    wanted = list(benchmarks) if benchmarks is not None else list(BENCHMARKS)
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"compare: unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
    baseline = versions[0]
    base_rows = results_of(lake, baseline.training_run_id, wanted)
    results, notes = [], []
    for label, version in zip(labels[1:], versions[1:], strict=True):
        rows = results_of(lake, version.training_run_id, wanted)
        kinds = {}
        for name in wanted:
            base_items = set(base_rows.loc[base_rows["benchmark"] == name, "example_id"])
            items = set(rows.loc[rows["benchmark"] == name, "example_id"])
            if base_items and items and base_items & items:
                kinds[name] = BENCHMARKS[name].score_kind
            elif base_items and items:
                notes.append(f"{name}: {labels[0]} and {label} were scored on different items; not compared")
        if not kinds:
            notes.append(f"{label} vs {labels[0]}: no benchmark with results for both on the same items "
                         f"(runs {version.training_run_id} and {baseline.training_run_id})")
            continue
        results.append(compare_versions(base_rows.loc[base_rows["benchmark"].isin(kinds)],
                                        rows.loc[rows["benchmark"].isin(kinds)], kinds, **options))
    return results, notes


def _overview(label: str, version: ModelVersion) -> dict[str, Any]:
    return {"label": label, "model": version.model_name, "version": version.version, "stage": version.stage,
            "aliases": ", ".join(version.aliases), "created_at": version.created_at.isoformat(),
            "created_by": version.created_by, "sha256": version.sha256[:12],
            "training_run_id": version.training_run_id, "dataset": f"{version.dataset}@v{version.dataset_version}",
            "recipe": version.recipe_name, "recipe_hash": version.recipe_hash, "base_model": version.base_model,
            "tags": ", ".join(version.tags)}


def _cell(value: Any, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:+.4g}" if signed else f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])
