"""Phase timers account for a run's time, and the profile option leaves a Chrome trace of its steps."""

from __future__ import annotations

import json
import time

import pytest

from crucible.train.config import TrainingHyperparameters
from crucible.train.profiling import PHASES, PhaseTimer
from crucible.train.sft import run_sft
from tests.train.test_distributed import chat_rows, tiny_recipe
from tests.train.test_sft import pattern_datums, tiny_backend


def test_the_timer_adds_up_phases_and_calls_the_rest_other():
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("forward"):
            time.sleep(0.02)
    time.sleep(0.02)
    summary = timer.summary()
    assert summary["forward"] == pytest.approx(0.04, abs=0.015)
    assert summary["other"] == pytest.approx(0.02, abs=0.015)
    assert summary["total"] == pytest.approx(sum(v for k, v in summary.items() if k != "total"), abs=1e-5)
    assert set(PHASES) <= set(summary) and summary["backward"] == 0.0


def test_a_failing_phase_is_still_charged_and_synchronize_runs_at_both_ends():
    calls = []
    timer = PhaseTimer(synchronize=lambda: calls.append("sync"))
    with pytest.raises(KeyError), timer.phase("data"):
        raise KeyError("x")
    assert "data" in timer.seconds and calls == ["sync", "sync"]


def test_run_sft_reports_where_its_time_went(tmp_path):
    hp = TrainingHyperparameters(learning_rate=1e-2, max_steps=3, batch_size=4, eval_every=3, checkpoint_every=2,
                                 max_length=16, device="cpu")
    result = run_sft(tiny_backend(), pattern_datums(12, seed=0), hp, eval_data=pattern_datums(4, seed=1),
                     output_dir=tmp_path)
    phases = result.phase_seconds
    for phase in ["data", "forward", "backward", "optimizer", "evaluation", "checkpointing"]:
        assert phases[phase] > 0, f"{phase} was not timed: {phases}"
    assert phases["communication"] == 0.0  # one process talks to nobody
    assert phases["total"] >= sum(phases[p] for p in PHASES)
    assert result.profile_trace is None and not (tmp_path / "profile").exists()


def test_profile_writes_a_chrome_trace_with_the_phases_labelled(tmp_path):
    from crucible.train.backends import TrainerSettings
    from crucible.train.pipeline import run_sft_recipe

    recipe = tiny_recipe(max_steps=4, eval_every=0, checkpoint_every=0)
    outcome = run_sft_recipe(recipe, chat_rows(12), tmp_path, trainer=TrainerSettings(profile=True))
    assert outcome.profile_trace == str(tmp_path / "profile" / "trace.json")
    trace = json.loads((tmp_path / "profile" / "trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"crucible/forward", "crucible/backward", "crucible/optimizer"} <= names
    assert any(name and name.startswith("aten::") for name in names)  # torch's own operators are in it
    assert outcome.phase_seconds["forward"] > 0
