"""Row selection pinned to a table version, run ids, run rows and quarantined rejects on a real lake."""

import json
import re

import pandas as pd
import pytest

from crucible.lake import DeltaLake
from crucible.quarantine import store_validated
from crucible.train.data import (
    RejectedExample,
    RowsNotLoadedError,
    build_run_row,
    data_source,
    new_run_id,
    quarantine_rejected,
    select_rows,
)
from crucible.train.recipes import load_recipe, recipe_hash
from crucible.train.runs import record_run
from schemas import EXAMPLES, QUARANTINE, TRAINING_RUNS


def examples(dataset: str, ids: list[str], split: str = "train") -> pd.DataFrame:
    chat = json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    return pd.DataFrame([{"dataset": dataset, "split": split, "example_id": i, "input": "q", "target": "a",
                          "messages": chat, "metadata": "{}", "source": "test"} for i in ids])


@pytest.fixture
def lake(tmp_path) -> DeltaLake:
    return DeltaLake(str(tmp_path / "lake"))


def test_rows_are_read_at_the_version_they_report(lake):
    store_validated(lake, EXAMPLES, examples("tiny", ["b", "a", "c"]), source="t", replace_where={"dataset": "tiny"})
    first = lake.version(EXAMPLES)
    store_validated(lake, EXAMPLES, examples("tiny", ["d", "e"]), source="t", replace_where={"dataset": "tiny"})
    rows, version = select_rows(lake, "tiny", "train", table_version=first)
    assert version == first and sorted(rows["example_id"]) == ["a", "b", "c"]
    rows, version = select_rows(lake, "tiny", "train")
    assert version == lake.version(EXAMPLES) > first and sorted(rows["example_id"]) == ["d", "e"]


def test_a_limit_keeps_the_first_examples_by_id(lake):
    store_validated(lake, EXAMPLES, pd.concat([examples("tiny", ["c", "a", "b"]), examples("tiny", ["z"], "test")]),
                    source="t", replace_where={"dataset": "tiny"})
    assert select_rows(lake, "tiny", "train", limit=2)[0]["example_id"].tolist() == ["a", "b"]
    assert sorted(select_rows(lake, "tiny")[0]["split"]) == ["test", "train", "train", "train"]  # every split


def test_missing_rows_say_what_the_table_holds_and_what_to_run(lake):
    with pytest.raises(RowsNotLoadedError, match="recipe r trains on gsm8k/train, but no dataset has been loaded "
                                                 "yet .* run dataset_ingest_job for partition 'gsm8k' first"):
        select_rows(lake, "gsm8k", "train", recipe="r")
    store_validated(lake, EXAMPLES, examples("tiny", ["a"]), source="t", replace_where={"dataset": "tiny"})
    with pytest.raises(RowsNotLoadedError, match=r"it holds tiny/train\. Run dataset_ingest_job for 'nosuch', or "
                                                 "pick a loaded one") as error:
        select_rows(lake, "nosuch", "train", recipe="r")
    assert (error.value.dataset, error.value.split, error.value.version) == ("nosuch", "train", lake.version(EXAMPLES))
    with pytest.raises(RowsNotLoadedError, match=r"^rows of nosuch were asked for, .*'nosuch'$"):
        select_rows(lake, "nosuch")


def test_new_run_ids_sort_by_time_and_never_repeat():
    ids = {new_run_id("dpo") for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(r"dpo-\d{8}-\d{6}-[0-9a-f]{6}", i) for i in ids)


def test_rejected_examples_are_quarantined_once(lake):
    rejected = [RejectedExample("e1", "example e1: no assistant turn"), RejectedExample("e2", "example e2: too long")]
    source = data_source("tiny", "train", 3)
    assert source == "tiny/train@v3"
    quarantine_rejected(lake, "sft", rejected, source)
    quarantine_rejected(lake, "sft", rejected, source)  # a re-run adds nothing
    quarantine_rejected(lake, "dpo", rejected[:1], source, key="pair_id")
    rows = lake.read(QUARANTINE).sort_values(["table", "reason"])
    assert rows["table"].tolist() == ["training/dpo_input", "training/sft_input", "training/sft_input"]
    assert json.loads(rows["record"].iloc[0]) == {"pair_id": "e1"} and set(rows["source"]) == {source}
    assert quarantine_rejected(lake, "sft", [], source) is None


def test_the_run_row_fits_the_runs_table(lake):
    recipe = load_recipe("sft_tiny_gsm8k")
    started = pd.Timestamp.now(tz="UTC")
    run = build_run_row("sft-1", recipe, dataset="gsm8k", dataset_version=2, steps=3, final_loss=None,
                        tokens_per_second=10.0, checkpoint_uri="/ckpt", started_at=started)
    assert run["method"] == "sft" and run["recipe_hash"] == recipe_hash(recipe)
    assert run["base_model"] == f"tiny-{recipe.base_model.tiny.family}" and run["finished_at"] >= started
    stored, _ = record_run(lake, run, [{"step": 1, "loss": 2.0}])
    assert stored.accepted == 1 and stored.quarantined == 0
    other = build_run_row("dpo-1", recipe, method="dpo", base_model="run:sft-1", dataset="prefs", dataset_version=0,
                          steps=1, final_loss=0.5, tokens_per_second=0.0, checkpoint_uri="/c", started_at=started)
    assert (other["method"], other["base_model"]) == ("dpo", "run:sft-1")
    assert record_run(lake, other, [])[0].accepted == 1
    assert sorted(lake.read(TRAINING_RUNS)["run_id"]) == ["dpo-1", "sft-1"]


def test_evaluation_reads_benchmark_rows_through_the_same_selection(lake):
    from crucible.evaluate.runner import DatasetNotLoadedError, benchmark_examples

    with pytest.raises(DatasetNotLoadedError, match="^benchmark gsm8k needs dataset 'gsm8k' in datasets/examples"):
        benchmark_examples(lake, "gsm8k")
    store_validated(lake, EXAMPLES, pd.concat([examples("gsm8k", ["a", "b"]), examples("gsm8k", ["c"], "test")]),
                    source="t", replace_where={"dataset": "gsm8k"})
    rows, version = benchmark_examples(lake, "gsm8k")
    assert version == lake.version(EXAMPLES) and sorted(rows["example_id"]) == ["a", "b", "c"]  # every split
