"""Evaluation assets: the candidate on every benchmark with a blocking promotion gate, and a
model-version x benchmark grid that a newly registered version is backfilled across from the UI."""

import base64
import json
from typing import Any

import dagster as dg
from pydantic import Field

from crucible.evaluate.benchmarks import BENCHMARKS, benchmark_spec
from crucible.evaluate.runner import (
    BenchmarkRun,
    DatasetNotLoadedError,
    checkpoint_of,
    evaluate_version,
    gate_candidate,
    has_results,
)
from crucible.registry.store import serving_version
from crucible.train.runs import latest_run
from crucible_assets.automation import evaluate_new_versions
from crucible_assets.metadata import frame_markdown, metric, table_definition_metadata, table_metadata
from crucible_assets.partitions import checked_partition_key, evaluation_partitions, model_versions_partitions
from crucible_assets.registry import MODEL_NAME
from crucible_assets.training.assets import sft_checkpoint
from resources.evaluation import PromotionPolicyResource
from resources.lake import LakeResource
from schemas import EVAL_RESULTS


class EvaluationConfig(dg.Config):
    """Which benchmarks to score and how many items of each (the benchmarks' own demo-sized defaults
    unless ``limit`` or ``settings`` say otherwise; ``limit: null`` with per-benchmark ``settings``
    ``{"limit": null}`` scores the full test sets)."""

    benchmarks: list[str] = Field(default_factory=lambda: ["mmlu", "gsm8k", "humaneval", "norobots"],
                                  description=f"Benchmarks to score; known: {', '.join(BENCHMARKS)}.")
    limit: int | None = Field(default=None, ge=1, description="Items per benchmark for all of them (overrides "
                                                               "each benchmark's default limit).")
    max_new_tokens: int | None = Field(default=None, ge=1, description="Generation length for the generative "
                                                                        "benchmarks.")
    settings: dict[str, Any] = Field(default_factory=dict, description=(
        "Per-benchmark settings, e.g. {\"humaneval\": {\"n_samples\": 5, \"temperature\": 0.8}, "
        "\"mmlu\": {\"limit\": null}}."))

    def for_benchmark(self, name: str) -> dict[str, Any]:
        spec = benchmark_spec(name)
        fields = spec.config_class.model_fields
        chosen: dict[str, Any] = {}
        if self.limit is not None:
            chosen["limit"] = self.limit
        if self.max_new_tokens is not None and "max_new_tokens" in fields:
            chosen["max_new_tokens"] = self.max_new_tokens
        extra = self.settings.get(name) or {}
        unknown = sorted(set(extra) - set(fields))
        if unknown:
            raise dg.Failure(f"evaluation settings for {name}: unknown fields {unknown}; "
                             f"{spec.config_class.__name__} has {', '.join(fields)}")
        return {**chosen, **extra}


def _check_benchmarks(names: list[str]) -> None:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise dg.Failure(f"unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")


def production_version(store) -> str | None:
    """The training run id of the version that serves (see ``serving_version``), None before any."""
    version = serving_version(store, MODEL_NAME)
    return str(version["training_run_id"]) if version else None


def _headlines(runs: list[BenchmarkRun]) -> dict[str, dg.MetadataValue]:
    return {f"{run.benchmark}/{run.headline[0]}": metric(run.headline[1]) for run in runs}


@dg.asset(
    metadata=table_definition_metadata(EVAL_RESULTS),
    key=["evaluation", "eval_results"], deps=[sft_checkpoint], group_name="evaluation",
    kinds={"deltalake", "pytorch"}, owners=["team:ml-platform"],
    description="The newest checkpoint (the candidate) scored on MMLU, GSM8K, HumanEval and NoRobots; the "
                "production version is scored on the same items when it has not been. The promotion_gate "
                "check blocks registration of a candidate significantly worse than production.",
)
def eval_results(context: dg.AssetExecutionContext, config: EvaluationConfig,
                 lake: LakeResource) -> dg.MaterializeResult:
    from crucible.inference import InferenceEngine

    _check_benchmarks(config.benchmarks)
    store = lake.lake()
    candidate = str(latest_run(store)["run_id"])
    production = production_version(store)
    context.instance.add_dynamic_partitions(model_versions_partitions.name, [candidate])
    runs: list[BenchmarkRun] = []
    skipped: dict[str, str] = {}
    for version in [candidate] + ([production] if production and production != candidate else []):
        todo = [name for name in config.benchmarks if name not in skipped
                and (version == candidate or not has_results(store, version, name))]
        if not todo:
            continue
        engine = InferenceEngine.from_checkpoint(checkpoint_of(store, version))
        for name in todo:
            try:
                run = evaluate_version(store, version, name, config.for_benchmark(name), engine=engine)
            except DatasetNotLoadedError as error:
                skipped[name] = str(error)
                context.log.warning("not evaluated: %s", error)
                continue
            if version == candidate:
                runs.append(run)
            context.log.info("%s on %s: %s = %.4f", version, name, *run.headline)
    if not runs:
        raise dg.Failure(f"candidate {candidate} was evaluated on no benchmark: {json.dumps(skipped)}")
    return dg.MaterializeResult(metadata={
        **table_metadata(runs[-1].results), "model_version": candidate, "production_version": production or "none",
        "benchmarks": dg.MetadataValue.json([run.benchmark for run in runs]),
        "not_evaluated": dg.MetadataValue.json(skipped),
        "scored_samples": sum(run.results.accepted for run in runs),
        **_headlines(runs),
    })


def _report_metadata(decision, lake: LakeResource, candidate: str) -> dict:
    from crucible.evaluate.report import comparison_json, comparison_markdown, comparison_plot

    if decision.comparison is None:
        return {}
    folder = lake.artifact_dir("evaluation", "comparisons", candidate)
    plot = comparison_plot(decision.comparison, folder / "comparison.png")
    report = comparison_json(decision.comparison)
    (folder / "comparison.json").write_text(json.dumps({"passed": decision.passed, "reasons": decision.reasons,
                                                        **report}, indent=2, allow_nan=False))
    image = base64.b64encode(plot.read_bytes()).decode()
    return {
        "comparison": dg.MetadataValue.md(comparison_markdown(decision.comparison)
                                          + f"\n\n![differences with confidence intervals](data:image/png;base64,{image})"),
        "comparison_plot": dg.MetadataValue.path(str(plot)),
        "comparison_json": dg.MetadataValue.json(report),
    }


@dg.asset_check(asset=eval_results, blocking=True,
                description="Promotion gate: the candidate may be registered unless it is significantly worse than "
                            "the production version on a gated benchmark (paired test, Holm-corrected).")
def promotion_gate(lake: LakeResource, promotion_policy: PromotionPolicyResource) -> dg.AssetCheckResult:
    store = lake.lake()
    candidate = str(latest_run(store)["run_id"])
    production = production_version(store)
    gated = [name for name in promotion_policy.gated_benchmarks if has_results(store, candidate, name)]
    if not gated:
        return dg.AssetCheckResult(passed=False, metadata={"reason": (
            f"candidate {candidate} has results on none of the gated benchmarks "
            f"{promotion_policy.gated_benchmarks}: evaluate it on them (evaluation/eval_results) first")})
    decision = gate_candidate(store, candidate, production, gated, alpha=promotion_policy.alpha,
                              min_effect=promotion_policy.min_effect)
    blocked = [{"benchmark": b.benchmark, "difference": round(b.difference, 6), "ci": [round(x, 6) for x in b.ci],
                "p_value": b.p_value, "adjusted_p": b.adjusted_p, "test": b.test} for b in decision.blocked]
    return dg.AssetCheckResult(passed=decision.passed, metadata={
        "candidate": candidate, "production": production or "none", "gated_benchmarks": dg.MetadataValue.json(gated),
        "reasons": decision.reasons, "blocked": dg.MetadataValue.json(blocked),
        **_report_metadata(decision, lake, candidate),
    })


class BenchmarkRunConfig(dg.Config):
    limit: int | None = Field(default=None, ge=1, description="Items (default: the benchmark's demo-sized limit).")
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="Fields of the benchmark's config, e.g. {\"limit\": null}.")


@dg.asset(
    metadata=table_definition_metadata(EVAL_RESULTS),
    key=["evaluation", "benchmark_results"], partitions_def=evaluation_partitions, deps=[sft_checkpoint],
    group_name="evaluation", kinds={"deltalake", "pytorch"}, owners=["team:ml-platform"],
    automation_condition=evaluate_new_versions(),
    description="One model version on one benchmark (a partition of model version x benchmark): backfill a "
                "newly registered version across every benchmark from the UI, or let automation score each new "
                "version once its training run is over. Re-running a partition replaces exactly its slice of "
                "evaluation/results and evaluation/summaries.",
)
def benchmark_results(context: dg.AssetExecutionContext, config: BenchmarkRunConfig,
                      lake: LakeResource) -> dg.MaterializeResult:
    key = checked_partition_key(context)
    dims = dg.MultiPartitionKey.from_str(key).keys_by_dimension if not isinstance(key, dg.MultiPartitionKey) \
        else key.keys_by_dimension
    version, benchmark = dims["model_version"], dims["benchmark"]
    settings = {**({"limit": config.limit} if config.limit is not None else {}), **config.settings}
    try:
        run = evaluate_version(lake.lake(), version, benchmark, settings)
    except (DatasetNotLoadedError, LookupError, FileNotFoundError) as error:
        raise dg.Failure(f"evaluation/benchmark_results {version} x {benchmark}: {error}") from None
    summary = run.summaries[["metric", "value", "ci_low", "ci_high", "n"]]
    return dg.MaterializeResult(metadata={
        **table_metadata(run.results), "model_version": version, "benchmark": benchmark,
        "examples_table_version": run.examples_version, f"{benchmark}/{run.headline[0]}": metric(run.headline[1]),
        "summaries": dg.MetadataValue.md(frame_markdown(summary)),
    })
