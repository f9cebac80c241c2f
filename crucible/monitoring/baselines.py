"""Reference distributions that drift is measured against, stored once per dataset version."""

from __future__ import annotations

import json

import pandas as pd

from crucible.feedback.events import prompt_length
from crucible.lake import DeltaLake
from crucible.quarantine import store_validated
from schemas import BASELINES, EXAMPLES

FEATURE = "prompt_length_words"


def prompt_length_baseline(store: DeltaLake, dataset: str) -> tuple[str, list[int]]:
    """Prompt lengths of ``dataset``'s train split at the examples table's current version."""
    version = store.version(EXAMPLES)
    baseline_id = f"{dataset}-train-v{version}-{FEATURE}"
    existing = store.read(BASELINES, where={"baseline_id": baseline_id})
    if len(existing):
        return baseline_id, json.loads(existing["values"].iloc[0])
    prompts = store.read(EXAMPLES, where={"dataset": dataset, "split": "train"}, columns=["input"])["input"]
    if prompts.empty:
        raise ValueError(f"baseline: dataset {dataset!r} has no train split in {EXAMPLES.path}")
    values = prompt_length(prompts.tolist())
    row = {"baseline_id": baseline_id, "feature": FEATURE, "source": f"{EXAMPLES.path}@v{version}:{dataset}/train",
           "values": json.dumps(values), "num_values": len(values), "created_at": pd.Timestamp.now(tz="UTC")}
    store_validated(store, BASELINES, pd.DataFrame([row]), source=row["source"])
    return baseline_id, values
