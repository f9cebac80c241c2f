"""Baseline snapshots: the reference features drift is measured against, pinned to the Delta versions read.

A snapshot takes the prompt features (length, embedding texts) from the training prompts of the recipe's
dataset, and every served-traffic feature (response length, latency, deployment, quality, signals) from
the last days of served events, e.g. of the production version a promotion just replaced. Its id is a
hash of what it was built from, so taking it again on unchanged tables stores nothing new.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crucible.lake import DeltaLake
from crucible.monitoring.drift import Feature
from crucible.monitoring.features import PROMPT_EMBEDDING, PROMPT_FEATURES, prompt_features, traffic_features
from crucible.quarantine import StoredTable, store_validated
from schemas import BASELINES, EXAMPLES, INFERENCE_EVENTS, QUALITY, SIGNALS


@dataclass(frozen=True)
class BaselineSnapshot:
    """The reference features of one snapshot and the Delta versions of the tables they came from."""

    snapshot_id: str
    features: dict[str, Feature]
    table_versions: dict[str, int]
    trigger: str
    created_at: pd.Timestamp

    def baseline_id(self, feature: str) -> str:
        return f"{self.snapshot_id}/{feature}"

    def describe(self) -> str:
        pinned = ", ".join(f"{table}@v{version}" for table, version in sorted(self.table_versions.items()))
        return f"{self.snapshot_id} ({self.trigger}; {pinned})"


def _encode(feature: Feature) -> str:
    if feature.kind == "numeric":
        return json.dumps(np.asarray(feature.values).tolist())
    if feature.kind == "rate":
        successes, trials = feature.values
        return json.dumps({"successes": int(successes), "trials": int(trials)})
    if feature.kind == "categorical":
        return json.dumps({str(k): int(v) for k, v in feature.values.items()}, sort_keys=True)
    return json.dumps(list(feature.values))


def _decode(kind: str, values: str, source: str) -> Feature:
    loaded = json.loads(values)
    if kind == "numeric":
        return Feature(kind, np.asarray(loaded), source)
    if kind == "rate":
        return Feature(kind, (int(loaded["successes"]), int(loaded["trials"])), source)
    return Feature(kind, loaded, source)


def _served_traffic(lake: DeltaLake, versions: dict[str, int], days: int, reference_version: int | None,
                    before: dt.date | None) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None, str]:
    """The last ``days`` days of served events (of ``reference_version`` when given, before ``before`` when
    given), with their quality rows and signals, each read at the pinned version."""
    if versions.get(INFERENCE_EVENTS.path, -1) < 0:
        return pd.DataFrame(), None, None, ""
    where = {"model_version": reference_version} if reference_version is not None else None
    events = lake.read(INFERENCE_EVENTS, where=where, version=versions[INFERENCE_EVENTS.path])
    if before is not None:
        events = events.loc[events["day"] < before]
    kept_days = sorted(events["day"].unique())[-days:]
    events = events.loc[events["day"].isin(kept_days)]
    if events.empty:
        return events, None, None, ""

    def related(spec) -> pd.DataFrame | None:
        if versions.get(spec.path, -1) < 0:
            return None
        rows = lake.read(spec, where={"day": list(kept_days)}, version=versions[spec.path])
        return rows.loc[rows["event_id"].isin(events["event_id"])]

    which = f"v{reference_version} " if reference_version is not None else ""
    source = f"{INFERENCE_EVENTS.path}@v{versions[INFERENCE_EVENTS.path]}: {which}{kept_days[0]}..{kept_days[-1]}"
    return events, related(QUALITY), related(SIGNALS), source


def take_snapshot(lake: DeltaLake, dataset: str, *, trigger: str = "manual", traffic_days: int = 7,
                  reference_version: int | None = None, before: dt.date | None = None, split: str = "train",
                  embedding_sample: int = 256, seed: int = 0) -> tuple[BaselineSnapshot, StoredTable]:
    """Build a snapshot from ``dataset``'s ``split`` prompts and the served traffic, store it in BASELINES.

    ``reference_version`` limits the traffic to one model version (the previous production version on a
    promotion); ``before`` keeps only days before it (a report never compares a day with itself). The
    embedding feature keeps a seeded subsample of ``embedding_sample`` texts.
    """
    versions = {spec.path: lake.version(spec) for spec in (EXAMPLES, INFERENCE_EVENTS, QUALITY, SIGNALS)}
    features: dict[str, Feature] = {}
    if versions[EXAMPLES.path] >= 0:
        prompts = lake.read(EXAMPLES, where={"dataset": dataset, "split": split}, version=versions[EXAMPLES.path],
                            columns=["input"])["input"]
        features = prompt_features(prompts, f"{EXAMPLES.path}@v{versions[EXAMPLES.path]}: {dataset}/{split}")
    events, quality, signals, traffic_source = _served_traffic(lake, versions, traffic_days, reference_version,
                                                               before)
    served = traffic_features(events, quality, signals, traffic_source)
    features.update({name: f for name, f in served.items() if name not in PROMPT_FEATURES or name not in features})
    if not features:
        raise ValueError(f"baseline: dataset {dataset!r} has no {split!r} split in {EXAMPLES.path} and there is no "
                         f"served traffic in {INFERENCE_EVENTS.path}; run dataset_ingest_job for {dataset!r} "
                         f"(or set baseline_dataset) or ingest traffic first")
    if PROMPT_EMBEDDING in features:
        texts = list(features[PROMPT_EMBEDDING].values)
        if len(texts) > embedding_sample:
            picked = np.sort(np.random.default_rng(seed).choice(len(texts), embedding_sample, replace=False))
            texts = [texts[i] for i in picked]
        features[PROMPT_EMBEDDING] = Feature("embedding", texts, features[PROMPT_EMBEDDING].source)
    pinned = {table: version for table, version in versions.items() if version >= 0}
    recipe = json.dumps({"dataset": dataset, "split": split, "versions": pinned, "reference": reference_version,
                         "before": str(before), "days": traffic_days, "sample": embedding_sample, "seed": seed},
                        sort_keys=True)
    snapshot = BaselineSnapshot(f"baseline-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}", features, pinned,
                                trigger, pd.Timestamp.now(tz="UTC"))
    rows = pd.DataFrame([{
        "baseline_id": snapshot.baseline_id(name), "feature": name, "source": feature.source,
        "values": _encode(feature), "num_values": feature.size, "created_at": snapshot.created_at,
        "snapshot_id": snapshot.snapshot_id, "kind": feature.kind, "table_versions": json.dumps(pinned),
        "trigger": trigger,
    } for name, feature in sorted(features.items()) if feature.size > 0])
    stored = store_validated(lake, BASELINES, rows, source=f"baseline {snapshot.snapshot_id}")
    return snapshot, stored


def latest_snapshot(lake: DeltaLake) -> BaselineSnapshot | None:
    """The most recently taken (or re-taken) snapshot; None when there is none (rows of schema v1, one
    feature without a snapshot, do not count)."""
    rows = lake.read(BASELINES)
    if "snapshot_id" not in rows:
        return None
    rows = rows.loc[rows["snapshot_id"].notna()]
    if rows.empty:
        return None
    newest = rows.loc[rows["created_at"].idxmax()]
    rows = rows.loc[rows["snapshot_id"] == newest["snapshot_id"]]
    features = {row.feature: _decode(row.kind, row.values, row.source) for row in rows.itertuples()}
    return BaselineSnapshot(str(newest["snapshot_id"]), features, json.loads(newest["table_versions"]),
                            str(newest["trigger"]), newest["created_at"])
