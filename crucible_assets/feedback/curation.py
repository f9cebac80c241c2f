"""Curation assets: the curated examples of a feedback window (what a retraining adds) and preference pairs."""

import dagster as dg
from pydantic import Field

from crucible.feedback.curation import (
    CURATION_STRATEGIES,
    CurationLimits,
    curate_from_lake,
    days_of,
    store_curation,
)
from crucible.feedback.export import build_preference_pairs
from crucible.quarantine import store_validated
from crucible.registry.store import serving_version
from crucible_assets.feedback.assets import inference_events
from crucible_assets.metadata import table_definition_metadata, table_metadata
from crucible_assets.registry import MODEL_NAME
from crucible_assets.training.config import window_of
from resources.embedder import EmbedderResource
from resources.lake import LakeResource
from schemas import CURATED, FEEDBACK_PAIRS, INFERENCE_EVENTS, REVIEWS, SIGNALS

SIGNALS_KEY = dg.AssetKey(["feedback", "signals"])
QUALITY_KEY = dg.AssetKey(["feedback", "quality"])
EMBEDDINGS_KEY = dg.AssetKey(["feedback", "embeddings"])


class CurationConfig(dg.Config):
    """The feedback window to curate (a retraining's run config sets it) and the strategies' limits."""

    window_start: str = Field("", description="First day (YYYY-MM-DD) of the window; empty = curate nothing "
                                              "(a manual retrain on the recipe's data only).")
    window_end: str = Field("", description="Last day (YYYY-MM-DD) of the window, included.")
    strategies: list[str] = Field(list(CURATION_STRATEGIES), description=f"Some of {', '.join(CURATION_STRATEGIES)}.")
    max_per_strategy: int = Field(200, ge=0, description="Most examples one strategy may pick.")
    max_total: int = Field(1000, ge=0, description="Most curated examples in the window.")
    active_count: int = Field(16, ge=0, description="Most uncertain answers to keep (active learning).")
    diverse_count: int = Field(16, ge=0, description="Prompts farthest from the window's centroid to keep.")
    near_duplicate_cosine: float = Field(0.95, ge=0.0, le=1.0,
                                         description="Cosine similarity above which two prompts are duplicates.")
    use_embeddings: bool = Field(True, description="Embed prompts (diverse picks, cosine near duplicates); "
                                                   "off = MinHash near duplicates and no diverse picks.")

    def limits(self) -> CurationLimits:
        return CurationLimits(max_per_strategy=self.max_per_strategy, max_total=self.max_total,
                              active_count=self.active_count, diverse_count=self.diverse_count,
                              near_duplicate_cosine=self.near_duplicate_cosine)


def _window(config, asset: str):
    try:
        return window_of(config.window_start, config.window_end, "window")
    except ValueError as error:
        raise dg.Failure(f"{asset}: {error}") from None


@dg.asset(
    metadata=table_definition_metadata(CURATED),
    key=["feedback", "curated_examples"], deps=[inference_events, SIGNALS_KEY, QUALITY_KEY, EMBEDDINGS_KEY],
    group_name="feedback", kinds={"deltalake", "pytorch"}, owners=["team:ml-platform"],
    description="Curates a feedback window (user edits, high quality, hard, uncertain and diverse examples, "
                "without duplicates, after human review) into feedback/curated, and writes the window's SFT "
                "targets as the feedback/train slice of datasets/examples (a new table version) for retraining.",
)
def curated_examples(context: dg.AssetExecutionContext, config: CurationConfig, lake: LakeResource,
                     embedder: EmbedderResource) -> dg.MaterializeResult:
    window = _window(config, "feedback/curated_examples")
    if window is None:
        return dg.MaterializeResult(metadata={"window": "", "curated": 0, "note": "no window: nothing curated"})
    store = lake.lake()
    embed = None
    if config.use_embeddings:
        from crucible.feedback.embeddings import embed_cached

        model = embedder.embedder()
        embed = lambda texts: embed_cached(store, model, texts)  # noqa: E731 - bound to this run's lake and model
    try:
        curation = curate_from_lake(store, *window, embed=embed, score_responses=_uncertainty_scorer(context, store),
                                    strategies=config.strategies, limits=config.limits())
    except ValueError as error:
        raise dg.Failure(f"feedback/curated_examples: {error}") from None
    stored = store_curation(store, curation, *window, created_by="feedback/curated_examples")
    return dg.MaterializeResult(metadata={
        **table_metadata(stored.curated), "window": f"{window[0]}..{window[1]}", "candidates": curation.candidates,
        "exact_duplicates": curation.exact_duplicates, "near_duplicates": curation.near_duplicates,
        "near_duplicate_method": curation.near_duplicate_method, "rejected_by_review": curation.rejected_by_review,
        "by_strategy": dg.MetadataValue.json(curation.by_strategy),
        "by_status": dg.MetadataValue.json(curation.by_status),
        "training_examples": stored.examples.accepted, "examples_table_version": stored.examples.version,
        "lineage": f"feedback:{window[0]}..{window[1]} -[curated_from]-> {stored.lineage_node}",
    })


def _uncertainty_scorer(context: dg.AssetExecutionContext, store):
    """Mean token log-probs under the serving model (active learning), None when no version is registered."""
    version = serving_version(store, MODEL_NAME)
    if version is None:
        context.log.info("no registered %s: active learning picks nothing", MODEL_NAME)
        return None

    def score(prompts: list[str], responses: list[str]):
        from crucible.feedback.curation import mean_token_logprobs
        from crucible.inference import InferenceEngine

        return mean_token_logprobs(InferenceEngine.from_checkpoint(version["artifact_uri"]), prompts, responses)

    return score


class PreferencePairsConfig(dg.Config):
    window_start: str = Field("", description="First day (YYYY-MM-DD); empty with window_end empty = every day.")
    window_end: str = Field("", description="Last day (YYYY-MM-DD), included.")


@dg.asset(
    metadata=table_definition_metadata(FEEDBACK_PAIRS),
    key=["feedback", "preference_pairs"], deps=[curated_examples, SIGNALS_KEY], group_name="feedback",
    kinds={"deltalake"}, owners=["team:ml-platform"],
    description="Preference pairs from feedback (an edit chosen over the original answer; a thumbs-up answer "
                "over a thumbs-down one to the same prompt) in feedback/preference_pairs, which "
                "training/dpo_checkpoint reads with dpo.pairs_table=feedback/preference_pairs.",
)
def preference_pairs(context: dg.AssetExecutionContext, config: PreferencePairsConfig,
                     lake: LakeResource) -> dg.MaterializeResult:
    from crucible.feedback.signals import aggregate_signals

    window = _window(config, "feedback/preference_pairs")
    store = lake.lake()
    where = {"day": days_of(*window)} if window else None
    if not store.exists(INFERENCE_EVENTS):
        raise dg.Failure("feedback/preference_pairs: feedback/inference_events does not exist yet; ingest feedback "
                         "first")
    events = store.read(INFERENCE_EVENTS, where=where)
    signals = store.read(SIGNALS, where=where) if store.exists(SIGNALS) else None
    pairs = build_preference_pairs(
        events, aggregate_signals(signals) if signals is not None and len(signals) else None,
        curated=store.read(CURATED) if store.exists(CURATED) else None,
        reviews=store.read(REVIEWS) if store.exists(REVIEWS) else None)
    stored = store_validated(store, FEEDBACK_PAIRS, pairs, source="feedback/preference_pairs",
                             replace_where=where)
    return dg.MaterializeResult(metadata={
        **table_metadata(stored), "window": f"{window[0]}..{window[1]}" if window else "all days",
        "by_source": dg.MetadataValue.json(pairs["source"].value_counts().to_dict()),
    })
