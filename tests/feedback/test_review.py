"""The review page over real HTTP on 127.0.0.1: listing, filters, paging, escaping, decisions written to Delta."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from crucible.feedback.curation import is_training_target
from crucible.feedback.review import ReviewServer, list_curated, record_review
from schemas import CURATED, REVIEWS
from tests.feedback.review_rows import XSS_PROMPT, curated_rows, write_curated


@pytest.fixture
def curated_lake(lake):
    write_curated(lake, curated_rows(5))
    return lake


@pytest.fixture
def server(curated_lake):
    with ReviewServer(curated_lake) as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=30) as http:
        yield http


def _row_html(page: str, example_id: str) -> str:
    match = re.search(rf'<tr class="example" data-example-id="{re.escape(example_id)}">(.*?)</tr>', page, re.S)
    assert match, f"{example_id} is not listed"
    return match.group(1)


def _listed(page: str) -> list[str]:
    return re.findall(r'<tr class="example" data-example-id="([^"]+)"', page)


def _curated(lake) -> dict[str, dict]:
    return {r["example_id"]: r for r in lake.read(CURATED).to_dict("records")}


def _reviews(lake) -> dict[tuple[str, str], dict]:
    return {(r["example_id"], r["reviewer"]): r for r in lake.read(REVIEWS).to_dict("records")}


def _decide(client: httpx.Client, example_id: str, decision: str, reviewer: str = "alice", **extra: str):
    return client.post("/review", data={"example_id": example_id, "decision": decision, "reviewer": reviewer,
                                        **extra})


def test_the_page_lists_every_curated_field_strongest_first(client):
    page = client.get("/")
    assert page.status_code == 200
    assert _listed(page.text) == ["ex-00", "ex-01", "ex-02", "ex-03", "ex-04"]  # scores 5..1
    row = _row_html(page.text, "ex-02")
    for text in ("Question 2: how do I rotate a log file?", "Answer 2: use logrotate.", "hard_example", "3.00",
                 "picked by hard_example", "status-pending"):
        assert text in row
    # the edit form's textarea is prefilled with the response
    assert re.search(r'<textarea name="edited_response"[^>]*>\nAnswer 2: use logrotate\.</textarea>', row)
    assert client.get("/healthz").json() == {"status": "ok"}


def test_status_filter_and_paging(curated_lake, client):
    record_review(curated_lake, "ex-01", "approve", "alice")
    approved = client.get("/", params={"status": "approved"}).text
    assert _listed(approved) == ["ex-01"]
    assert "approved by alice at" in _row_html(approved, "ex-01")
    assert 'data-filter="pending">pending (4)</a>' in approved
    assert 'data-filter="approved" class="current">approved (1)</a>' in approved

    second = client.get("/", params={"status": "pending", "per_page": 2, "page": 2}).text
    assert _listed(second) == ["ex-03", "ex-04"]
    assert "Page 2 of 2" in second and 'rel="prev"' in second and 'rel="next"' not in second
    first = client.get("/", params={"status": "pending", "per_page": 2}).text
    assert _listed(first) == ["ex-00", "ex-02"] and 'rel="next"' in first
    # past the end: the last page, not an empty one
    assert _listed(client.get("/", params={"status": "pending", "per_page": 2, "page": 9}).text) == ["ex-03", "ex-04"]

    api = client.get("/api/examples", params={"status": "pending", "per_page": 3}).json()
    assert [r["example_id"] for r in api["rows"]] == ["ex-00", "ex-02", "ex-03"]
    assert (api["total"], api["pages"], api["counts"]["approved"]) == (4, 2, 1)


@pytest.mark.parametrize("query, message", [
    ({"status": "bogus"}, "unknown status 'bogus'"),
    ({"page": "abc"}, "page='abc' is not a whole number"),
    ({"per_page": "0"}, "per_page 0: expected 1..200"),
])
def test_bad_listing_parameters_are_400(client, query, message):
    for path in ("/", "/api/examples"):
        answer = client.get(path, params=query)
        assert answer.status_code == 400
        assert message.replace("'", "&#x27;" if path == "/" else "'") in answer.text


def test_markup_in_a_prompt_or_response_renders_as_text(lake, client):
    evil = curated_rows(1)
    evil["example_id"], evil["prompt"] = "ex-evil", XSS_PROMPT
    evil["response"] = "</textarea><script>window.__pwned = 3</script>"
    write_curated(lake, evil)
    page = client.get("/")
    row = _row_html(page.text, "ex-evil")
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x onerror=&quot;" in row
    assert "&lt;/textarea&gt;&lt;script&gt;window.__pwned = 3" in row
    # the only script element is the page's own, and the policy forbids inline ones anyway
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/review.js" defer>']
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_approve_reject_and_edit_write_reviews_and_the_curated_status(curated_lake, client):
    answer = _decide(client, "ex-00", "approve", status="pending", page="1", per_page="20")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/?status=pending&page=1&per_page=20&reviewer=alice&saved=ex-00&decision=approve"
    assert _decide(client, "ex-01", "reject", note="off topic").status_code == 303
    # a browser sends CRLF line ends from a textarea; the stored text has the lines as typed
    assert _decide(client, "ex-02", "edit", edited_response="Run logrotate\r\nwith a daily rule.").status_code == 303

    reviews = _reviews(curated_lake)
    assert {k: r["decision"] for k, r in reviews.items()} == {
        ("ex-00", "alice"): "approve", ("ex-01", "alice"): "reject", ("ex-02", "alice"): "edit"}
    assert reviews[("ex-01", "alice")]["note"] == "off topic"
    assert reviews[("ex-02", "alice")]["edited_response"] == "Run logrotate\nwith a daily rule."
    curated = _curated(curated_lake)
    assert {k: r["status"] for k, r in curated.items()} == {
        "ex-00": "approved", "ex-01": "rejected", "ex-02": "edited", "ex-03": "pending", "ex-04": "pending"}
    assert curated["ex-02"]["response"] == "Run logrotate\nwith a daily rule."
    assert curated["ex-00"]["response"] == "Answer 0: use logrotate."
    assert curated["ex-00"]["reason"] == "picked by user_edit; approved by alice"
    assert curated["ex-03"]["reason"] == "picked by diverse"

    back = client.get(answer.headers["location"]).text
    assert "Saved: ex-00 approved" in back and 'id="reviewer-name" value="alice"' in back


def test_latest_decision_wins_per_reviewer_and_across_reviewers(curated_lake, client):
    _decide(client, "ex-00", "approve")
    _decide(client, "ex-00", "reject")
    assert [(k, r["decision"]) for k, r in _reviews(curated_lake).items()] == [(("ex-00", "alice"), "reject")]
    assert _curated(curated_lake)["ex-00"]["status"] == "rejected"

    _decide(client, "ex-00", "edit", reviewer="bob", edited_response="Use logrotate -f.")
    assert {k: r["decision"] for k, r in _reviews(curated_lake).items()} == {
        ("ex-00", "alice"): "reject", ("ex-00", "bob"): "edit"}
    assert (_curated(curated_lake)["ex-00"]["status"], _curated(curated_lake)["ex-00"]["response"]) == (
        "edited", "Use logrotate -f.")

    _decide(client, "ex-00", "approve")
    final = _curated(curated_lake)["ex-00"]
    # one review suffix on the reason, the latest, however many decisions came before
    assert (final["status"], final["reason"]) == ("approved", "picked by user_edit; approved by alice")
    assert len(_reviews(curated_lake)) == 2


BAD_DECISIONS = [
    ({"example_id": "nope", "decision": "approve", "reviewer": "alice"}, 404, "unknown example id 'nope'"),
    ({"example_id": "ex-00", "decision": "edit", "reviewer": "alice", "edited_response": "  \n "}, 400,
     "example ex-00: the edited response is empty"),
    ({"example_id": "ex-00", "decision": "delete", "reviewer": "alice"}, 400,
     "example ex-00: unknown decision 'delete': expected approve, reject or edit"),
    ({"example_id": "ex-00", "decision": "approve", "reviewer": " "}, 400, "reviewer name is required"),
    ({"example_id": "ex-00", "decision": "approve", "reviewer": "alice", "edited_response": "x"}, 400,
     "an edited response is only taken with decision 'edit'"),
    ({"decision": "approve", "reviewer": "alice"}, 400, "example_id is required"),
]


@pytest.mark.parametrize("fields, code, message", BAD_DECISIONS)
@pytest.mark.parametrize("route", ["form", "json"])
def test_bad_decisions_are_4xx_with_the_reason_and_write_nothing(curated_lake, client, fields, code, message, route):
    before = curated_lake.version(CURATED)
    if route == "form":
        answer = client.post("/review", data=fields)
        assert message.replace("'", "&#x27;") in answer.text
    else:
        answer = client.post("/api/reviews", json=fields)
        assert message in answer.json()["error"]
    assert answer.status_code == code
    assert not curated_lake.exists(REVIEWS)
    assert curated_lake.version(CURATED) == before


def test_a_cross_site_post_is_refused(curated_lake, client):
    answer = client.post("/review", data={"example_id": "ex-00", "decision": "reject", "reviewer": "mallory"},
                         headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403 and "cross-site request from origin" in answer.text
    answer = client.post("/api/reviews", json={"example_id": "ex-00", "decision": "reject", "reviewer": "m"},
                         headers={"Origin": "null"})
    assert answer.status_code == 403
    assert not curated_lake.exists(REVIEWS)
    same_site = client.post("/review", data={"example_id": "ex-00", "decision": "approve", "reviewer": "alice"},
                            headers={"Origin": client.base_url.scheme + "://" + client.base_url.netloc.decode()})
    assert same_site.status_code == 303


def test_non_form_and_non_object_bodies_are_refused(curated_lake, client):
    assert client.post("/review", content=b'{"example_id": "ex-00"}',
                       headers={"Content-Type": "application/json"}).status_code == 415
    assert "must be a JSON object" in client.post("/api/reviews", json=["ex-00"]).json()["error"]
    assert "must be strings" in client.post("/api/reviews", json={"example_id": "ex-00", "decision": "approve",
                                                                  "reviewer": 7}).json()["error"]
    assert not curated_lake.exists(REVIEWS)


def test_the_server_reviewer_is_used_when_the_field_is_empty(curated_lake):
    with ReviewServer(curated_lake, reviewer="carol") as server, httpx.Client(base_url=server.url) as http:
        assert 'id="reviewer-name" value="carol"' in http.get("/").text
        http.post("/review", data={"example_id": "ex-03", "decision": "approve", "reviewer": ""})
        http.post("/review", data={"example_id": "ex-04", "decision": "reject", "reviewer": "dave"})
    assert set(_reviews(curated_lake)) == {("ex-03", "carol"), ("ex-04", "dave")}


def test_pii_typed_into_an_edit_or_note_is_scrubbed(curated_lake, client):
    answer = client.post("/api/reviews", json={
        "example_id": "ex-00", "decision": "edit", "reviewer": "alice",
        "edited_response": "Mail jane.doe@example.com the rotated logs.", "note": "asked by 10.20.30.40"})
    assert answer.status_code == 200 and answer.json()["redactions"] == 2
    review = _reviews(curated_lake)[("ex-00", "alice")]
    assert (review["edited_response"], review["note"]) == ("Mail [EMAIL] the rotated logs.", "asked by [IP]")
    assert _curated(curated_lake)["ex-00"]["response"] == "Mail [EMAIL] the rotated logs."


def test_decisions_decide_which_rows_are_training_targets(curated_lake):
    def targets() -> set[str]:
        curated = curated_lake.read(CURATED)
        return set(curated.loc[is_training_target(curated), "example_id"])

    assert "ex-02" not in targets()  # a pending hard example waits for a reviewer
    record_review(curated_lake, "ex-02", "approve", "alice")
    record_review(curated_lake, "ex-00", "reject", "alice")
    assert targets() == {"ex-01", "ex-02", "ex-03", "ex-04"}
    assert list_curated(curated_lake, status="rejected").total == 1


def test_crucible_review_serve_runs_until_sigterm(curated_lake, tmp_path: Path):
    command = [str(Path(sys.executable).parent / "crucible"), "review", "serve", "--port", "0", "--lake",
               str(curated_lake.root), "--reviewer", "erin"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        line = process.stdout.readline()
        assert line.startswith("crucible review: listening on http://127.0.0.1:"), (line, process.stderr.read())
        url = line.rsplit(" ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=30, follow_redirects=True) as http:
            assert http.get("/healthz").status_code == 200
            assert _listed(http.get("/").text)[0] == "ex-00"
            assert http.post("/review", data={"example_id": "ex-04", "decision": "approve"}).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "crucible review: stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert _reviews(curated_lake)[("ex-04", "erin")]["decision"] == "approve"
    assert _curated(curated_lake)["ex-04"]["status"] == "approved"


def test_a_missing_lake_folder_is_a_clear_cli_error(tmp_path: Path):
    from click.testing import CliRunner

    from crucible.cli import main

    result = CliRunner().invoke(main, ["review", "serve", "--lake", str(tmp_path / "absent"), "--port", "0"])
    assert result.exit_code == 1 and "no lake at" in result.output


def test_reviewers_deciding_at_the_same_time_all_land(lake):
    write_curated(lake, curated_rows(6))
    decisions = {f"ex-{i:02d}": ("approve", "reject")[i % 2] for i in range(6)}
    with ReviewServer(lake) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda item: http.post("/api/reviews", json={
                "example_id": item[0], "decision": item[1], "reviewer": f"r{item[0]}"}), decisions.items()))
    assert [a.status_code for a in answers] == [200] * 6
    assert {k[0]: r["decision"] for k, r in _reviews(lake).items()} == decisions
    assert {k: r["status"] for k, r in _curated(lake).items()} == {
        k: {"approve": "approved", "reject": "rejected"}[d] for k, d in decisions.items()}
