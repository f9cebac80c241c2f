"""Signal aggregation per event, checked by hand, and the simulated users' signals."""

import datetime as dt

import pandas as pd
import pytest

from crucible.feedback.events import answer_is_right, event_records, simulated_requests, simulated_signals
from crucible.feedback.signals import aggregate_signals
from crucible.inference import Generation
from schemas.feedback import SIGNAL_WEIGHTS


def signals(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    """(event_id, signal, timestamp, edited_text) -> SIGNALS-like rows."""
    return pd.DataFrame([{"event_id": e, "signal": s, "timestamp": pd.Timestamp(t), "signal_id": f"s{i}",
                          "edited_text": x} for i, (e, s, t, x) in enumerate(rows)])


def test_weights_are_the_issue_s():
    assert SIGNAL_WEIGHTS == {"thumbs_up": 3.0, "thumbs_down": -2.0, "regenerate": -1.0, "edit": 5.0, "copy": 2.0,
                              "share": 2.0, "report": -3.0}


def test_aggregate_matches_a_hand_computation():
    frame = signals([
        ("a", "thumbs_up", "2026-11-02T10:00Z", None),
        ("a", "edit", "2026-11-02T12:00Z", "late edit"),
        ("a", "edit", "2026-11-02T11:00Z", "early edit"),
        ("a", "regenerate", "2026-11-02T10:01Z", None),
        ("b", "thumbs_down", "2026-11-02T10:00Z", None),
        ("b", "report", "2026-11-02T10:00Z", None),
        ("c", "copy", "2026-11-02T10:00Z", None),
        ("c", "share", "2026-11-02T10:00Z", None),
    ])
    out = aggregate_signals(frame).set_index("event_id")
    assert out.loc["a", "score"] == 3 + 5 + 5 - 1 and out.loc["b", "score"] == -2 - 3 and out.loc["c", "score"] == 4
    assert out["n_signals"].to_dict() == {"a": 4, "b": 2, "c": 2}
    assert (out.loc["a", "edit"], out.loc["a", "thumbs_up"], out.loc["a", "regenerate"]) == (2, 1, 1)
    assert (out.loc["b", "report"], out.loc["c", "share"], out.loc["c", "thumbs_down"]) == (1, 1, 0)
    assert out.loc["a", "edited_text"] == "late edit"  # the latest edit wins, whatever the row order
    assert out.loc["b", "edited_text"] is None
    assert list(out.columns) == ["score", "n_signals", *SIGNAL_WEIGHTS, "edited_text"]


def test_aggregate_of_no_signals_is_empty_with_the_columns():
    out = aggregate_signals(signals([]).reindex(columns=["event_id", "signal", "timestamp", "edited_text"]))
    assert out.empty and list(out.columns) == ["event_id", "score", "n_signals", *SIGNAL_WEIGHTS, "edited_text"]


def test_aggregate_refuses_unknown_signal_types():
    with pytest.raises(ValueError, match=r"unknown signal types \['love'\]"):
        aggregate_signals(signals([("a", "love", "2026-11-02T10:00Z", None)]))


def test_simulated_signals_are_deterministic_and_follow_answer_quality():
    day = dt.date(2026, 11, 2)
    pool = [f"Sam has {n} apples and buys {n} more. How many now?" for n in range(50)]
    references = [f"#### {2 * n}" for n in range(50)]
    requests = simulated_requests(pool, day, 400, pii_share=0.0)
    right = [Generation(f"The answer is {2 * r.pool_index}.", 10, 5, "stop", 1.0) for r in requests[:200]]
    wrong = [Generation("I think it is 7 or so, hard to say really.", 10, 9, "stop", 1.0) for _ in requests[200:]]
    records = event_records(day, [r.prompt for r in requests], right + wrong, "m", 1)
    refs = [references[r.pool_index] for r in requests]
    first, again = simulated_signals(records, refs), simulated_signals(records, refs)
    assert first == again
    kinds = [{s["signal"] for batch in half for s in batch} for half in (first[:200], first[200:])]
    assert kinds == [{"thumbs_up", "copy", "share"}, {"thumbs_down", "regenerate", "report", "edit"}]
    edits = [s for batch in first[200:] for s in batch if s["signal"] == "edit"]
    # edits carry the reference answer, so curation's user-edit strategy learns the right one
    assert edits and all(s["edited_text"] == f"The answer is {2 * requests[200 + i].pool_index}."
                         for i, batch in enumerate(first[200:]) for s in batch if s["signal"] == "edit")
    up = sum(s["signal"] == "thumbs_up" for batch in first[:200] for s in batch)
    down = sum(s["signal"] == "thumbs_down" for batch in first[200:] for s in batch)
    assert 70 < up < 130 and 35 < down < 85  # about 50% and 30% of 200


@pytest.mark.parametrize("response,reference,expected", [
    ("so the total is 1,234 apples", "#### 1234", True),
    ("the total is 12", "#### 1234", False),
    ("short answer", None, True),
    ("", None, False),
])
def test_answer_is_right(response, reference, expected):
    assert answer_is_right(response, reference) is expected
