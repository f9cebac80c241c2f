"""The web UI as a person uses it: the demo's life cycle on a real instance and lake, `dagster dev -w workspace.yaml`
on 127.0.0.1, and headless Chromium opening the lineage, the training asset, a drift report, a table's columns and
a run; each page is saved as a screenshot and checked for what it shows."""

import re
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.browser_support import artifacts, browser, page  # noqa: F401 (pytest fixtures)
from tests.support.dagster_dev import running_dagster_dev

pytestmark = pytest.mark.slow

DAYS = ["2026-11-01", "2026-11-02"]
# The demo's tiny model at test size: a few training steps, 4 GSM8K items, 8 events a day, no sentence encoder.
PROFILE = {
    "training": {"hyperparameters": {"max_steps": 4, "eval_every": 0, "checkpoint_every": 0}, "dataset_limit": 8},
    "evaluation": {"benchmarks": ["gsm8k"], "limit": 4, "max_new_tokens": 8},
    "traffic": {"events_per_day": 8, "max_new_tokens": 8},
}


def prepare_demo_instance(home: Path, dagster_home: Path) -> str:
    """The demo's life cycle (crucible_assets.demo.run_lifecycle) in process on the instance and lake that dagster
    dev opens next, closed before it starts (SQLite wants one writer); returns the id of the training run."""
    from crucible_assets.definitions import build_defs, default_resources
    from crucible_assets.demo import run_lifecycle
    from resources.monitoring import DriftPolicyResource

    resources = {**default_resources(), "drift_policy": DriftPolicyResource(embedding_drift=False)}
    assert resources["lake"].root == f"{home}/lake"
    defs = build_defs(resources)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        # No planted drift: its long prompts overflow the tiny model's 512-token context at this size (HTTP 400
        # from the server), and the report's plots and detectors show either way.
        run_lifecycle(DAYS, None, instance, defs, resources, profile=PROFILE, echo=lambda _: None,
                      real_traffic=False)
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="retrain_job"), limit=1)
        assert runs and runs[0].status == dg.DagsterRunStatus.SUCCESS
        return runs[0].run_id


def open_page(page, url: str, shot: Path, ready: str) -> None:  # noqa: F811 (the fixture's name)
    """Go to ``url``, wait until ``ready`` (a text) shows and the network settles, and save a full-page
    screenshot (also when ``ready`` never shows, to see why)."""
    page.goto(url)
    try:
        page.get_by_text(ready, exact=False).first.wait_for(state="visible", timeout=60_000)
        page.wait_for_load_state("networkidle")
    finally:
        page.screenshot(path=str(shot), full_page=True)


def visible_images(page, alt_prefix: str) -> list[dict]:  # noqa: F811
    """The rendered images whose alt text starts with ``alt_prefix``: size and whether they decoded."""
    return page.eval_on_selector_all(
        "img", """(imgs, prefix) => imgs.filter(i => (i.alt || '').startsWith(prefix)).map(i => ({
            alt: i.alt, width: i.naturalWidth, height: i.naturalHeight, shown: i.getBoundingClientRect().width > 0}))""",
        alt_prefix)


def test_a_person_browses_the_demo_in_the_web_ui(tmp_path, monkeypatch, page, artifacts):  # noqa: F811
    from crucible_assets.instance import ensure_instance_config

    home = tmp_path / "crucible"
    dagster_home = home / "dagster_home"
    monkeypatch.setenv("CRUCIBLE_HOME", str(home))
    for variable in ("CRUCIBLE_LAKE_ROOT", "CRUCIBLE_ARTIFACTS_ROOT", "CRUCIBLE_DATASET_DROP"):
        monkeypatch.delenv(variable, raising=False)
    ensure_instance_config(dagster_home)
    started = time.monotonic()
    run_id = prepare_demo_instance(home, dagster_home)
    prepared = time.monotonic() - started
    # The UI greets a first visit on 127.0.0.1 with a newsletter dialog a second after load; a person who
    # dismissed it once has this key in local storage.
    page.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")

    with running_dagster_dev(dagster_home, env={"CRUCIBLE_HOME": str(home)}, log_dir=tmp_path,
                             wait_for_daemons=False) as dev:
        # The global lineage, every group expanded (the UI's ⌥E): assets inside their groups, joined by edges.
        open_page(page, f"{dev.url}/asset-groups", artifacts / "1_lineage.png", "training")
        page.keyboard.press("Alt+e")
        page.get_by_text("drift_report").first.wait_for(state="visible")
        page.screenshot(path=str(artifacts / "1_lineage.png"), full_page=True)
        graph = page.locator("body").inner_text()
        for name in ("sft_checkpoint", "inference_events", "curated_examples", "signals", "quality", "baseline",
                     "drift_report", "datasets", "evaluation", "registry", "deployment"):
            assert name in graph, f"global lineage does not show {name}"
        assert page.locator("svg path").count() >= 20, "the global lineage draws no edges"
        # The training asset's neighbours: upstream examples and curated feedback, downstream evaluation.
        open_page(page, f"{dev.url}/assets/training/sft_checkpoint?view=lineage&lineageScope=neighbors",
                  artifacts / "2_sft_lineage.png", "eval_results")
        neighbours = page.locator("body").inner_text()
        for name in ("examples", "curated_examples", "eval_results", "benchmark_results", "dpo_checkpoint"):
            assert name in neighbours, f"sft_checkpoint's lineage does not show {name}"
        assert page.locator("svg path").count() >= 5, "sft_checkpoint's lineage draws no edges"

        # The training asset's latest materialization: rounded numbers and the loss curve drawn in place.
        open_page(page, f"{dev.url}/assets/training/sft_checkpoint?view=events", artifacts / "3_sft_events.png",
                  "tokens_per_second")
        text = page.locator("body").inner_text()
        for label in ("final/loss", "final_loss", "tokens_per_second", "steps", "checkpoint", "loss_curve",
                      "time_by_phase", "runs_table_version"):
            assert label in text, f"sft_checkpoint metadata has no {label}"
        assert not re.search(r"tokens_per_second\s+\d+\.\d{3,}", text), "tokens/s is shown unrounded"
        assert "dagster/row_count" not in text and "rows_in" not in text
        curves = visible_images(page, "loss")
        assert curves and all(c["shown"] and c["width"] > 0 for c in curves), f"no loss curve visible: {curves}"

        # A drift report: the detectors and the baseline-vs-day plots.
        open_page(page, f"{dev.url}/assets/monitoring/drift_report?view=events", artifacts / "4_drift_events.png",
                  "detectors")
        report = page.locator("body").inner_text()
        for label in ("distribution_plots", "psi/prompt_length_words", "ks/prompt_length_words", "Retraining rule",
                      "dagster/column_schema"):
            assert label in report, f"the drift report shows no {label}"
        # The plots are large images (past the UI's 1,000-character inline limit): one click opens them.
        page.locator("tr", has_text="distribution_plots").get_by_text("[Show Markdown]").click()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(artifacts / "5_drift_plots.png"), full_page=True)
        plots = [img for img in visible_images(page, "") if img["width"] > 100]
        assert plots, "the drift report's plots did not render"

        # A table asset's columns, types and descriptions, from its Pandera model.
        open_page(page, f"{dev.url}/assets/datasets/examples", artifacts / "6_examples_columns.png", "example_id")
        overview = page.locator("body").inner_text()
        for column in ("dataset", "split", "example_id", "input", "target", "messages"):
            assert column in overview, f"datasets/examples shows no column {column}"
        assert "Columns" in overview and "string" in overview and "key column of datasets/exam" in overview
        assert "partition column" in overview and "str_length(1, None)" in overview

        # The training run: its steps and outcome.
        open_page(page, f"{dev.url}/runs/{run_id}", artifacts / "7_run.png", "training__sft_checkpoint")
        run_page = page.locator("body").inner_text()
        assert "retrain_job" in run_page and "Success" in run_page

    print(f"prepared the demo instance in {prepared:.0f}s; screenshots in {artifacts}")
