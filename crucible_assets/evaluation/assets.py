"""Evaluation assets: the newest checkpoint answers held-out problems; a blocking check gates registration."""

import dagster as dg

from crucible.evaluate.generation import ChatModel
from crucible.evaluate.gsm8k import BENCHMARK, evaluate_gsm8k
from crucible.quarantine import store_validated
from crucible.train.runs import latest_run
from crucible_assets.metadata import table_metadata
from crucible_assets.training.assets import sft_checkpoint
from resources.lake import LakeResource
from schemas import EVAL_RESULTS, EVAL_SUMMARIES, EXAMPLES


class EvaluationConfig(dg.Config):
    num_examples: int = 8
    max_new_tokens: int = 32
    split: str = "test"


@dg.asset(
    key=["evaluation", "eval_results"], deps=[sft_checkpoint], group_name="evaluation",
    kinds={"deltalake", "pytorch"}, owners=["team:ml-platform"],
    description="The newest checkpoint answers held-out GSM8K problems: one row per example, plus accuracy "
                "(lm-eval-harness extraction) and ROUGE-L against the reference solutions.",
)
def eval_results(context: dg.AssetExecutionContext, config: EvaluationConfig,
                 lake: LakeResource) -> dg.MaterializeResult:
    store = lake.lake()
    run = latest_run(store)
    examples_version = store.version(EXAMPLES)
    examples = store.read(EXAMPLES, where={"dataset": BENCHMARK, "split": config.split})
    examples = examples.sort_values("example_id").head(config.num_examples)
    results, summaries = evaluate_gsm8k(ChatModel(run["checkpoint_uri"]), examples, run["run_id"],
                                        config.max_new_tokens)
    stored = store_validated(store, EVAL_RESULTS, results, source=f"eval of run {run['run_id']}",
                             replace_where={"benchmark": BENCHMARK, "model_version": run["run_id"]})
    store_validated(store, EVAL_SUMMARIES, summaries, source=f"eval of run {run['run_id']}")
    metrics = dict(zip(summaries["metric"], summaries["value"], strict=True))
    context.log.info("run %s: %s", run["run_id"], metrics)
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "model_version": run["run_id"], "examples_table_version": examples_version,
        **{f"{BENCHMARK}/{name}": float(value) for name, value in metrics.items()},
        "samples": dg.MetadataValue.md(results[["example_id", "prediction", "target", "correct"]].head(5)
                                       .to_markdown(index=False)),
    })


@dg.asset_check(asset=eval_results, blocking=True,
                description="Every requested example was scored and every metric is a finite number.")
def eval_results_complete(lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.lake()
    run = latest_run(store)
    results = store.read(EVAL_RESULTS, where={"benchmark": BENCHMARK, "model_version": run["run_id"]})
    summaries = store.read(EVAL_SUMMARIES, where={"benchmark": BENCHMARK, "model_version": run["run_id"]})
    finite = bool(summaries["value"].notna().all()) and len(summaries) > 0
    return dg.AssetCheckResult(passed=len(results) > 0 and finite,
                               metadata={"scored_examples": len(results), "metrics": len(summaries)})
