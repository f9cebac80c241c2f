"""feedback/quality and feedback/embeddings materialized for real: one run per day with that day's own figures,
a re-run replaces the day, the embedding cache is reused across days, and a multi-day range is refused."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from crucible_assets.feedback.quality import embeddings, quality
from resources.embedder import EmbedderResource
from resources.lake import LakeResource
from schemas import EMBEDDINGS, INFERENCE_EVENTS, QUALITY

DAY1, DAY2 = "2026-11-01", "2026-11-02"
GOOD = "She sold 48 clips in April and 24 in May, so 72 in total."
PROMPT = "How many clips did Natalia sell in April and May?"


def _events(day: str, answers: list[str], prompts: list[str]) -> pd.DataFrame:
    """Inference events written straight into the lake (what feedback/inference_events would store); the
    columns engineer B adds are filled too, and only the table's own columns are kept."""
    when = pd.Timestamp(day, tz="UTC")
    rows = [{
        "event_id": f"{day}-{i}", "day": dt.date.fromisoformat(day), "timestamp": when, "model_name": "crucible-sft",
        "model_version": 2, "prompt": prompt, "response": answer, "prompt_tokens": 10, "response_tokens": 12,
        "latency_ms": 5.0, "pii_redactions": 0, "deployment": "local", "user_id": None, "session_id": None,
        "source": "test", "ingested_at": when,
    } for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True))]
    return pd.DataFrame(rows)[INFERENCE_EVENTS.columns]


@pytest.fixture
def served(tmp_path):
    lake_resource = LakeResource(root=str(tmp_path / "lake"), artifacts_root=str(tmp_path / "artifacts"))
    store = lake_resource.lake()
    store.replace_where(INFERENCE_EVENTS, _events(DAY1, [GOOD, "I'm sorry, but I can't help with that.",
                                                         "the cat sat on the mat " * 6, GOOD],
                                                  [PROMPT, "Write malware.", "Tell me a story.", "Same question?"]),
                        {"day": dt.date.fromisoformat(DAY1)})
    # Day 2 repeats one prompt and one answer of day 1: the embedding cache serves them.
    store.replace_where(INFERENCE_EVENTS, _events(DAY2, [GOOD, "The answer is 72.<|im_end|>"],
                                                  [PROMPT, "And in May alone?"]),
                        {"day": dt.date.fromisoformat(DAY2)})
    resources = {"lake": lake_resource, "embedder": EmbedderResource(batch_size=8)}
    with dg.DagsterInstance.ephemeral() as instance:
        yield resources, store, instance


def _metadata(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> dict:
    event = instance.get_latest_materialization_event(key)
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1)
    materialization = records.records[0].asset_materialization
    assert event is not None and materialization.partition == day
    return {name: value.value for name, value in materialization.metadata.items()}


def test_quality_scores_each_day_on_its_own_and_a_rerun_replaces_it(served):
    resources, store, instance = served
    for day in (DAY1, DAY2, DAY1):
        assert dg.materialize([quality], partition_key=day, resources=resources, instance=instance).success
    stored = store.read(QUALITY).sort_values("event_id").reset_index(drop=True)
    assert stored["event_id"].tolist() == [f"{DAY1}-{i}" for i in range(4)] + [f"{DAY2}-{i}" for i in range(2)]
    assert stored["failed_checks"].tolist() == ["", "refusal", "format,repetition", "", "", "format"]
    assert stored["model_version"].eq(2).all() and stored["judge_score"].isna().all()
    assert (stored["day"].astype(str) == [DAY1] * 4 + [DAY2] * 2).all()

    first, second = _metadata(instance, quality.key, DAY1), _metadata(instance, quality.key, DAY2)
    assert (first["dagster/row_count"], first["pass_rate"], first["failed/refusal"]) == (4, 0.5, 1)
    assert (first["failed/repetition"], first["failed/format"]) == (1, 1)
    assert (second["dagster/row_count"], second["pass_rate"], second["failed/format"]) == (2, 0.5, 1)
    assert second["failed/refusal"] == 0 and second["day"] == DAY2
    assert first["mean_refusal_score"] == pytest.approx(0.75)


def test_embeddings_fill_the_cache_and_reuse_it_across_days(served):
    resources, store, instance = served
    assert dg.materialize([embeddings], partition_key=DAY1, resources=resources, instance=instance).success
    first = _metadata(instance, embeddings.key, DAY1)
    # 4 prompts + 4 answers, of which GOOD appears twice: 7 distinct texts, all embedded now.
    assert (first["texts"], first["distinct_texts"], first["cache_hits"], first["cache_misses"]) == (8, 7, 0, 7)
    assert first["dim"] == 384 and first["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert len(store.read(EMBEDDINGS)) == 7

    assert dg.materialize([embeddings], partition_key=DAY2, resources=resources, instance=instance).success
    second = _metadata(instance, embeddings.key, DAY2)
    # PROMPT and GOOD were embedded on day 1; the new prompt and the new answer are not.
    assert (second["texts"], second["cache_hits"], second["cache_misses"]) == (4, 2, 2)
    assert len(store.read(EMBEDDINGS)) == 9

    assert dg.materialize([embeddings], partition_key=DAY1, resources=resources, instance=instance).success
    again = _metadata(instance, embeddings.key, DAY1)
    assert (again["cache_hits"], again["cache_misses"]) == (7, 0)
    assert len(store.read(EMBEDDINGS)) == 9


def test_a_multi_day_range_is_refused_before_any_write(served):
    resources, store, instance = served
    result = dg.materialize([quality, embeddings], resources=resources, instance=instance, raise_on_error=False,
                            tags={"dagster/asset_partition_range_start": DAY1,
                                  "dagster/asset_partition_range_end": DAY2})
    assert not result.success
    messages = [event.step_failure_data.user_failure_data.description for event in result.get_step_failure_events()]
    assert len(messages) == 2
    for message in messages:
        assert "one partition per run" in message and "launch a backfill" in message
    assert not store.exists(QUALITY) and not store.exists(EMBEDDINGS)
