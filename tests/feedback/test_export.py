"""Export: preference pairs from edits and thumbs, SFT records through JSONL, Parquet and a Hugging Face
datasets folder that read back identical, and the `crucible feedback export` command on a real lake."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from click.testing import CliRunner

from crucible.feedback.curation import curate, curated_example_id
from crucible.feedback.export import build_preference_pairs, read_records, sft_records, write_records
from crucible.lake import DeltaLake
from schemas import CURATED, FEEDBACK_PAIRS

DAY = dt.date(2026, 11, 3)


def events(rows: list[tuple[str, str, str]], day: dt.date = DAY) -> pd.DataFrame:
    return pd.DataFrame([{
        "event_id": e, "day": day, "timestamp": pd.Timestamp(day, tz="UTC"), "model_name": "tiny-gpt",
        "model_version": 1, "prompt": p, "response": r, "prompt_tokens": 2, "response_tokens": 2, "latency_ms": 1.0,
        "pii_redactions": 0} for e, p, r in rows])


def aggregated(rows: dict[str, dict]) -> pd.DataFrame:
    """aggregate_signals' shape: score, n_signals, a count per signal type, the latest edit."""
    base = {"score": 0.0, "n_signals": 1, "thumbs_up": 0, "thumbs_down": 0, "edit": 0, "edited_text": None}
    return pd.DataFrame([{"event_id": e, **base, **values} for e, values in rows.items()])


@pytest.fixture()
def window():
    frame = events([
        ("e1", "Capital of France?", "Lyon"),
        ("e2", "capital of  france?", "Paris"),
        ("e3", "Capital of France?", "Marseille"),
        ("e4", "Tell me a joke", "No."),
        ("e5", "Square root of 9?", "3"),
    ])
    signals = aggregated({
        "e1": {"thumbs_down": 1, "score": -2.0},
        "e2": {"thumbs_up": 1, "score": 3.0},
        "e3": {"thumbs_down": 1, "thumbs_up": 1, "score": 1.0},  # mixed: may be rejected, never chosen
        "e4": {"edit": 1, "score": 5.0, "edited_text": "Why did the chicken cross the road?"},
        "e5": {"thumbs_up": 1, "score": 3.0},
    })
    return frame, signals


def test_edit_and_thumbs_pairs(window):
    frame, signals = window
    pairs = build_preference_pairs(frame, signals)
    FEEDBACK_PAIRS.model.validate(pairs)
    got = {(p.source, p.chosen_event_id, p.rejected_event_id): (p.chosen, p.rejected) for p in pairs.itertuples()}
    assert got == {
        ("edit", "e4", "e4"): ("Why did the chicken cross the road?", "No."),
        ("thumbs", "e2", "e1"): ("Paris", "Lyon"),
        ("thumbs", "e2", "e3"): ("Paris", "Marseille"),
    }
    assert pairs["pair_id"].is_unique
    again = build_preference_pairs(frame, signals)
    assert sorted(again["pair_id"]) == sorted(pairs["pair_id"])  # stable ids: rebuilding replaces, never adds


def test_a_reviewers_edit_is_a_pair_and_identical_texts_are_not(window):
    frame, signals = window
    curated = curate(frame, signals, None, None, None)
    reviews = pd.DataFrame([{"example_id": curated_example_id("e1"), "reviewer": "ana", "decision": "edit",
                             "edited_response": "Paris is the capital.", "note": None,
                             "decided_at": pd.Timestamp("2026-11-04", tz="UTC")}])
    pairs = build_preference_pairs(frame, signals, curated=curated, reviews=reviews)
    reviewed = pairs[(pairs["source"] == "edit") & (pairs["chosen_event_id"] == "e1")]
    assert reviewed[["chosen", "rejected"]].values.tolist() == [["Paris is the capital.", "Lyon"]]
    same = aggregated({"e5": {"edit": 1, "score": 5.0, "edited_text": " 3 "}})
    assert build_preference_pairs(frame, same).empty


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_sft_records_round_trip_in_every_format(tmp_path, window, fmt):
    frame, signals = window
    curated = curate(frame, signals, None, None, None)
    records = sft_records(curated)
    assert len(records) > 0
    result = write_records(records, tmp_path / f"out.{fmt}", fmt)
    back = read_records(result.path, fmt)
    pd.testing.assert_frame_equal(back[records.columns].reset_index(drop=True), records, check_dtype=False)
    first = json.loads(back["messages"].iloc[0])
    assert [m["role"] for m in first] == ["user", "assistant"]


def test_hf_export_is_a_datasets_folder_and_refuses_a_used_folder(tmp_path, window):
    import datasets

    frame, signals = window
    records = sft_records(curate(frame, signals, None, None, None))
    write_records(records, tmp_path / "hf", "hf")
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    assert loaded.num_rows == len(records) and "messages" in loaded.column_names
    with pytest.raises(FileExistsError, match="is not empty"):
        write_records(records, tmp_path / "hf", "hf")


def test_cli_exports_targets_and_pairs_from_the_lake(tmp_path, window):
    from crucible.cli import main

    frame, signals = window
    lake = DeltaLake(tmp_path / "lake")
    curated = curate(frame, signals, None, None, None)
    lake.upsert(CURATED, curated)
    lake.upsert(FEEDBACK_PAIRS, build_preference_pairs(frame, signals))
    runner = CliRunner()
    out = tmp_path / "sft.jsonl"
    result = runner.invoke(main, ["feedback", "export", "curated", str(out), "--root", str(lake.root), "--json"])
    assert result.exit_code == 0, result.output
    targets = int(((curated["strategy"] != "hard_example")).sum())
    assert json.loads(result.output)["rows"] == targets == len(out.read_text().splitlines())
    every = runner.invoke(main, ["feedback", "export", "curated", str(tmp_path / "all.jsonl"), "--all-statuses",
                                 "--root", str(lake.root)])
    assert f"exported {len(curated)} curated rows" in every.output
    pairs = runner.invoke(main, ["feedback", "export", "pairs", str(tmp_path / "pairs.parquet"), "--format",
                                 "parquet", "--start", "2026-11-04", "--root", str(lake.root)])
    assert "exported 0 pairs rows" in pairs.output  # the window starts after the only day
    missing = runner.invoke(main, ["feedback", "export", "pairs", str(tmp_path / "p.jsonl"), "--root",
                                   str(tmp_path / "lake2")])
    assert missing.exit_code != 0 and "no lake at" in missing.output
    empty = DeltaLake(tmp_path / "lake3")
    none = runner.invoke(main, ["feedback", "export", "pairs", str(tmp_path / "p.jsonl"), "--root", str(empty.root)])
    assert "materialize feedback/preference_pairs first" in none.output
