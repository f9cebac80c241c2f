"""Feedback assets: automatic quality checks of each day's answers, and embeddings of its prompts and responses."""

import datetime as dt

import dagster as dg
from pydantic import Field

from crucible.feedback.embeddings import cached_embeddings
from crucible.feedback.quality import (
    QUALITY_INPUT_COLUMNS,
    LoglikelihoodJudge,
    QualitySettings,
    quality_frame,
    quality_summary,
)
from crucible.quarantine import store_validated
from crucible_assets.automation import after_new_feedback
from crucible_assets.feedback.assets import inference_events
from crucible_assets.metadata import column_schema_metadata, metric, table_definition_metadata, table_metadata
from crucible_assets.partitions import checked_partition_key, daily_partitions
from resources.embedder import EmbedderResource
from resources.lake import LakeResource
from schemas import EMBEDDINGS, INFERENCE_EVENTS, QUALITY


class QualityConfig(dg.Config):
    """Bounds and thresholds of the checks (see crucible.feedback.quality.QualitySettings)."""

    min_words: int = Field(2, ge=1, description="Answers with fewer words lose length score.")
    max_words: int = Field(400, ge=1, description="Answers with more words lose length score.")
    pass_threshold: float = Field(0.7, ge=0, le=1, description="Every check must score at least this to pass.")
    judge_checkpoint: str = Field("", description="Checkpoint folder of a judge model asked yes/no per answer; "
                                                  "empty: no judge.")
    judge_threshold: float = Field(0.5, ge=0, le=1, description="The judge's P(Yes) needed to pass.")

    def settings(self) -> QualitySettings:
        return QualitySettings(min_words=self.min_words, max_words=self.max_words,
                               pass_threshold=self.pass_threshold, judge_threshold=self.judge_threshold)


def _day(context: dg.AssetExecutionContext) -> dt.date:
    # One run per day (BackfillPolicy.multi_run(1)) so each day's materialization carries its own figures;
    # checked_partition_key refuses a multi-day range with a message saying to launch a backfill.
    return dt.date.fromisoformat(checked_partition_key(context))


@dg.asset(
    metadata=table_definition_metadata(QUALITY),
    key=["feedback", "quality"], deps=[inference_events], partitions_def=daily_partitions,
    automation_condition=after_new_feedback(),
    backfill_policy=dg.BackfillPolicy.multi_run(1), group_name="feedback", kinds={"deltalake"},
    owners=["team:ml-platform"],
    description="Format, length, refusal and repetition scores (0..1) of each answered request of the day, an "
                "optional judge model's score, and a pass flag with the failed checks. A re-run replaces the day.",
)
def quality(context: dg.AssetExecutionContext, config: QualityConfig, lake: LakeResource) -> dg.MaterializeResult:
    day = _day(context)
    store = lake.lake()
    events = store.read(INFERENCE_EVENTS, where={"day": day}, columns=list(QUALITY_INPUT_COLUMNS))
    judge = None
    if config.judge_checkpoint:
        from crucible.inference import InferenceEngine

        judge = LoglikelihoodJudge(InferenceEngine.from_checkpoint(config.judge_checkpoint))
    frame = quality_frame(events, judge=judge, settings=config.settings())
    stored = store_validated(store, QUALITY, frame, source=f"quality {day}", replace_where={"day": day}, day=day)
    summary = quality_summary(frame)
    failures = summary.pop("failures_by_check")
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "day": day.isoformat(),
        **{name: metric(value) if isinstance(value, float) else value
           for name, value in summary.items()},
        **{f"failed/{name}": count for name, count in failures.items()},
    })


@dg.asset(
    metadata=table_definition_metadata(EMBEDDINGS),
    key=["feedback", "embeddings"], deps=[inference_events], partitions_def=daily_partitions,
    automation_condition=after_new_feedback(),
    backfill_policy=dg.BackfillPolicy.multi_run(1), group_name="feedback", kinds={"deltalake", "pytorch"},
    owners=["team:ml-platform"],
    description="Sentence embeddings of the day's prompts and responses, cached in feedback/embeddings by the "
                "hash of (model, text): a text already embedded by the same model is not embedded again.",
)
def embeddings(context: dg.AssetExecutionContext, lake: LakeResource,
               embedder: EmbedderResource) -> dg.MaterializeResult:
    day = _day(context)
    store = lake.lake()
    events = store.read(INFERENCE_EVENTS, where={"day": day}, columns=["prompt", "response"])
    texts = [t for t in [*events["prompt"], *events["response"]] if isinstance(t, str) and t.strip()]
    model = embedder.embedder()
    cached = cached_embeddings(store, model, texts)
    return dg.MaterializeResult(metadata={
        "day": day.isoformat(), "table": EMBEDDINGS.path, **column_schema_metadata(EMBEDDINGS), "model": model.model_id, "texts": len(texts),
        "distinct_texts": cached.hits + cached.misses, "cache_hits": cached.hits, "cache_misses": cached.misses,
        "dim": int(cached.vectors.shape[1]), "delta_version": store.version(EMBEDDINGS),
    })
