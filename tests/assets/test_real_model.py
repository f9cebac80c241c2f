"""The whole life cycle with the real SmolLM2-135M-Instruct (LoRA) instead of the tiny model."""

from pathlib import Path

import dagster as dg
import pytest

import schemas

CACHE = Path(__file__).resolve().parents[2] / ".crucible" / "cache"


@pytest.mark.slow
def test_lifecycle_with_smollm2(tmp_path, resources_for):
    pytest.importorskip("gguf")
    from crucible_assets.definitions import build_defs
    from crucible_assets.demo import run_lifecycle, smollm2_profile

    resources = resources_for(tmp_path)
    profile = smollm2_profile(CACHE)
    profile["traffic"]["events_per_day"] = 8
    days = ["2026-11-01", "2026-11-02"]
    with dg.DagsterInstance.ephemeral() as instance:
        produced = run_lifecycle(days, days[-1], instance, build_defs(resources), resources, profile=profile,
                                 echo=lambda _: None, real_traffic=False)
    lake = resources["lake"].lake()
    runs = lake.read(schemas.TRAINING_RUNS).sort_values("finished_at")
    assert produced["retraining_runs"] == 1 and len(runs) == 2
    assert runs.iloc[0]["base_model"].endswith("smollm2-135m-instruct")
    metrics = lake.read(schemas.TRAINING_METRICS, where={"run_id": runs.iloc[0]["run_id"]})
    losses = metrics[metrics["name"] == "loss"].sort_values("step")["value"].tolist()
    assert len(losses) == 4 and losses[-1] < losses[0]
    results = lake.read(schemas.EVAL_RESULTS)
    assert len(results) == 2 * 4 and results["output"].str.len().gt(0).all()
    events = lake.read(schemas.INFERENCE_EVENTS)
    assert len(events) == 2 * 8 and "@" not in " ".join(events["prompt"])
