"""The review page in headless Chromium against the real server on 127.0.0.1: approve, reject and edit by
clicking, then read REVIEWS and CURATED back from Delta."""

from __future__ import annotations

import pytest

from crucible.feedback.review import ReviewServer
from schemas import CURATED, REVIEWS
from tests.browser_support import artifacts, browser, page  # noqa: F401 (pytest fixtures)
from tests.feedback.review_rows import XSS_PROMPT, curated_rows, write_curated

EDITED = "Run logrotate daily:\n  logrotate -f /etc/logrotate.conf"


@pytest.fixture
def server(lake):
    rows = curated_rows(4)
    rows.loc[3, "prompt"] = XSS_PROMPT
    write_curated(lake, rows)
    with ReviewServer(lake) as running:
        yield running


def test_a_reviewer_approves_rejects_and_edits_in_a_real_browser(lake, server, page, artifacts):  # noqa: F811
    page.goto(server.url)
    assert page.locator("tr.example").count() == 4
    # markup in a prompt is shown as text and never runs
    assert page.locator('tr[data-example-id="ex-03"] td.prompt').inner_text() == XSS_PROMPT
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.screenshot(path=artifacts / "01-list.png", full_page=True)

    # the page's Reviewer field (copied into each form by the page's script) names the reviewer
    page.fill("#reviewer-name", "rita")
    row = page.locator('tr[data-example-id="ex-00"]')
    with page.expect_navigation():
        row.get_by_role("button", name="Approve").click()
    assert page.locator(".flash").inner_text() == "Saved: ex-00 approved"
    assert page.locator('tr[data-example-id="ex-00"] .status').inner_text() == "approved"
    assert page.input_value("#reviewer-name") == "rita"

    with page.expect_navigation():
        page.locator('tr[data-example-id="ex-01"]').get_by_role("button", name="Reject").click()
    assert page.locator('tr[data-example-id="ex-01"] .status').inner_text() == "rejected"
    page.screenshot(path=artifacts / "02-approved-and-rejected.png", full_page=True)

    row = page.locator('tr[data-example-id="ex-02"]')
    row.locator("summary", has_text="Edit").click()
    editor = row.locator('textarea[name="edited_response"]')
    assert editor.is_visible()
    assert editor.input_value() == "Answer 2: use logrotate."
    editor.fill(EDITED)
    page.screenshot(path=artifacts / "03-editing.png", full_page=True)
    with page.expect_navigation():
        row.get_by_role("button", name="Save edit").click()
    assert page.locator(".flash").inner_text() == "Saved: ex-02 edited"

    with page.expect_navigation():
        page.locator('nav.filters a[data-filter="edited"]').click()
    assert page.locator("tr.example").count() == 1
    assert page.locator('tr[data-example-id="ex-02"] td.response').inner_text() == EDITED
    page.screenshot(path=artifacts / "04-edited-filter.png", full_page=True)
    assert page.errors == []

    reviews = {r["example_id"]: r for r in lake.read(REVIEWS).to_dict("records")}
    assert {k: (r["reviewer"], r["decision"]) for k, r in reviews.items()} == {
        "ex-00": ("rita", "approve"), "ex-01": ("rita", "reject"), "ex-02": ("rita", "edit")}
    assert reviews["ex-02"]["edited_response"] == EDITED
    curated = {r["example_id"]: r for r in lake.read(CURATED).to_dict("records")}
    assert {k: r["status"] for k, r in curated.items()} == {
        "ex-00": "approved", "ex-01": "rejected", "ex-02": "edited", "ex-03": "pending"}
    assert curated["ex-02"]["response"] == EDITED
    assert (artifacts / "04-edited-filter.png").stat().st_size > 0


def test_a_missing_chromium_is_a_skip_reason_naming_the_path(monkeypatch, tmp_path):
    import tests.browser_support as support

    monkeypatch.setattr(support, "CHROMIUM", str(tmp_path / "no-chromium"))
    assert support.chromium_missing().startswith(f"no Chromium at {tmp_path / 'no-chromium'}")
    monkeypatch.setattr(support, "CHROMIUM", "/usr/bin/env")  # any executable file
    assert support.chromium_missing() is None
