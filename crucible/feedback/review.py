"""The human review page: a reviewer approves, rejects or edits curated examples; each decision goes to REVIEWS
(latest wins per example and reviewer) and to the CURATED row's status, so curation and export see it."""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pandas as pd

from crucible.asgi import ThreadedServer, serve_until_signal
from crucible.lake import DeltaLake
from schemas import CURATED, REVIEWS

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

from crucible.feedback.pii import Scrubber

# decision -> the CURATED status it leaves
DECISIONS = {"approve": "approved", "reject": "rejected", "edit": "edited"}
STATUSES = ("pending", "approved", "rejected", "edited")
MAX_PER_PAGE = 200
MAX_REVIEWER_CHARS = 64
MAX_NOTE_CHARS = 2_000
MAX_BODY_BYTES = 1_000_000
_REVIEW_SUFFIX = re.compile(r"; (?:approved|edited|rejected) by .*\Z", re.S)
_LIST_COLUMNS = ["example_id", "event_id", "day", "strategy", "prompt", "response", "score", "reason",
                 "model_version", "status", "curated_at"]


class ReviewError(ValueError):
    """A review request that cannot be applied; ``status_code`` is the HTTP status it answers with."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ReviewPage:
    """One page of curated examples, newest day first, with the latest review of each."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    per_page: int
    status: str | None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReviewRecord:
    """A decision as it was stored in REVIEWS, and the CURATED status it left."""

    example_id: str
    reviewer: str
    decision: str
    status: str
    edited_response: str | None
    note: str | None
    decided_at: str
    redactions: int = 0


# -- the core: list and record ------------------------------------------------------------------


def list_curated(lake: DeltaLake, *, status: str | None = None, page: int = 1, per_page: int = 20) -> ReviewPage:
    """CURATED rows with ``status`` (all when None), page ``page`` of ``per_page``; a page past the end
    gives the last page. Each row carries ``last_review`` (reviewer, decision, decided_at) or None."""
    if status is not None and status not in STATUSES:
        raise ReviewError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")
    if page < 1:
        raise ReviewError(f"page {page}: pages start at 1")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ReviewError(f"per_page {per_page}: expected 1..{MAX_PER_PAGE}")
    statuses = lake.read(CURATED, columns=["status"])["status"].value_counts()
    counts = {s: int(statuses.get(s, 0)) for s in STATUSES}
    total = counts[status] if status else sum(counts.values())
    pages = max(1, math.ceil(total / per_page))
    page = min(page, pages)
    rows: list[dict[str, Any]] = []
    if total:
        frame = lake.read(CURATED, where={"status": status} if status else None, columns=_LIST_COLUMNS)
        # Newest day first, then the strongest candidates: the order a reviewer works through a backlog.
        frame = frame.sort_values(["day", "score", "example_id"], ascending=[False, False, True], kind="stable")
        chosen = frame.iloc[(page - 1) * per_page: page * per_page]
        latest = _latest_reviews(lake, chosen["example_id"].tolist())
        rows = [{**row, "last_review": latest.get(row["example_id"])} for row in chosen.to_dict("records")]
    return ReviewPage(rows, total, page, pages, per_page, status, counts)


def _latest_reviews(lake: DeltaLake, example_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not example_ids or not lake.exists(REVIEWS):
        return {}
    reviews = lake.read(REVIEWS, where={"example_id": example_ids},
                        columns=["example_id", "reviewer", "decision", "decided_at"])
    latest = reviews.sort_values("decided_at", kind="stable").groupby("example_id").tail(1)
    return {r["example_id"]: r for r in latest.to_dict("records")}


def _clean_reviewer(reviewer: str | None) -> str:
    name = (reviewer or "").strip()
    if not name:
        raise ReviewError("reviewer name is required: fill in the Reviewer field (or start the page with "
                          "--reviewer NAME)")
    if len(name) > MAX_REVIEWER_CHARS or any(not ch.isprintable() for ch in name):
        raise ReviewError(f"reviewer name {name[:MAX_REVIEWER_CHARS]!r}: use one line of at most "
                          f"{MAX_REVIEWER_CHARS} printable characters")
    return name


def record_review(lake: DeltaLake, example_id: str, decision: str, reviewer: str, *,
                  edited_response: str | None = None, note: str | None = None, scrubber: Scrubber | None = None,
                  now: pd.Timestamp | None = None) -> ReviewRecord:
    """Store ``reviewer``'s ``decision`` (approve, reject, edit) on curated example ``example_id``.

    The REVIEWS row of (example, reviewer) is replaced, then the CURATED row takes the status the decision
    leaves (an edit also replaces its response). Texts a person typed (the edit, the note) are PII-scrubbed
    first, like everything else written to the feedback tables. Bad input raises :class:`ReviewError`
    (404 for an unknown example) before anything is written.
    """
    example_id = (example_id or "").strip()
    if not example_id:
        raise ReviewError("example_id is required: which curated example is this decision about?")
    if decision not in DECISIONS:
        raise ReviewError(f"example {example_id}: unknown decision {decision!r}: expected approve, reject or edit")
    reviewer = _clean_reviewer(reviewer)
    if decision == "edit":
        if edited_response is None or not edited_response.strip():
            raise ReviewError(f"example {example_id}: the edited response is empty; type the corrected answer, "
                              f"or reject the example instead")
    elif edited_response is not None and edited_response.strip():
        raise ReviewError(f"example {example_id}: an edited response is only taken with decision 'edit', "
                          f"not {decision!r}")
    else:
        edited_response = None
    note = (note or "").strip() or None
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"example {example_id}: the note has {len(note)} characters; keep it under "
                          f"{MAX_NOTE_CHARS}")
    if not len(lake.read(CURATED, where={"example_id": example_id}, columns=["example_id"])):
        raise ReviewError(f"unknown example id {example_id!r}: no such row in {CURATED.path}; reload the page "
                          f"(a re-curation may have replaced it)", status_code=404)

    scrub = scrubber.scrub if scrubber is not None else _default_scrub()
    redactions = 0
    if edited_response is not None:
        scrubbed = scrub(edited_response)
        edited_response, redactions = scrubbed.text, scrubbed.redactions
    if note is not None:
        scrubbed = scrub(note)
        note, redactions = scrubbed.text, redactions + scrubbed.redactions
    decided_at = now if now is not None else pd.Timestamp.now(tz="UTC")
    # REVIEWS first: it is the record curation re-applies, so a CURATED update lost to a concurrent
    # re-curation is restored by the next curation run.
    lake.upsert(REVIEWS, pd.DataFrame([{
        "example_id": example_id, "reviewer": reviewer, "decision": decision, "edited_response": edited_response,
        "note": note, "decided_at": decided_at}], columns=REVIEWS.columns))
    status = DECISIONS[decision]

    def reviewed(rows: pd.DataFrame) -> pd.DataFrame:
        if rows.empty:
            raise ReviewError(f"example {example_id} left {CURATED.path} while the review was saved (a "
                              f"re-curation replaced it); the review is kept and applies when it returns",
                              status_code=409)
        rows = rows.copy()
        rows["status"] = status
        if edited_response is not None:
            rows["response"] = edited_response
        base = rows["reason"].astype(str).str.replace(_REVIEW_SUFFIX, "", regex=True)
        rows["reason"] = base + f"; {status} by {reviewer}"
        return rows

    lake.read_modify_write(CURATED, {"example_id": example_id}, reviewed)
    return ReviewRecord(example_id, reviewer, decision, status, edited_response, note,
                        pd.Timestamp(decided_at).isoformat(), redactions)


def _default_scrub() -> Callable[[str], Any]:
    from crucible.feedback.pii import sanitize_pii

    return sanitize_pii


# -- the page ----------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; }
header { display: flex; gap: 2rem; align-items: baseline; flex-wrap: wrap; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
nav.filters a { margin-right: .8rem; } nav.filters a.current { font-weight: bold; text-decoration: none; }
.flash { background: #e8f5e9; border: 1px solid #a5d6a7; padding: .4rem .8rem; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
th, td { border-bottom: 1px solid #dde1e8; padding: .4rem; vertical-align: top; text-align: left; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; max-height: 14rem; overflow: auto; font: inherit; }
td.prompt, td.response { width: 28%; } td.actions { width: 22rem; }
.status { font-weight: bold; } .status-approved { color: #2e7d32; } .status-rejected { color: #c62828; }
.status-edited { color: #1565c0; } .status-pending { color: #6d6d6d; }
.muted { color: #6d6d6d; font-size: .9em; }
textarea { width: 100%; min-height: 8rem; font: inherit; }
form { margin: .2rem 0; } details summary { cursor: pointer; }
.pager { margin-top: 1rem; } .pager a { margin: 0 .5rem; }
"""

# Copies the page's Reviewer field into each form on submit and remembers it in this browser.
_JS = """
(function () {
  var field = document.getElementById("reviewer-name");
  if (!field) { return; }
  if (!field.value && window.localStorage) { field.value = localStorage.getItem("crucible-reviewer") || ""; }
  document.querySelectorAll("form.review-form").forEach(function (form) {
    form.addEventListener("submit", function () {
      var name = field.value.trim();
      if (name) {
        form.elements["reviewer"].value = name;
        if (window.localStorage) { localStorage.setItem("crucible-reviewer", name); }
      }
    });
  });
})();
"""

_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    # not no-referrer: with it Chromium sends ``Origin: null`` on the page's own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _link(status: str | None, page: int, per_page: int, reviewer: str) -> str:
    query = {k: v for k, v in (("status", status), ("page", page), ("per_page", per_page),
                               ("reviewer", reviewer)) if v}
    return "/?" + urlencode(query)


def _hidden(name: str, value: object) -> str:
    return f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">'


def render_page(listing: ReviewPage, *, reviewer: str = "", message: str | None = None) -> str:
    """The review page for ``listing`` (all text escaped); ``reviewer`` prefills the Reviewer field."""
    state = (_hidden("status", listing.status or "") + _hidden("page", listing.page)
             + _hidden("per_page", listing.per_page))
    filters = [("all", None, sum(listing.counts.values()))] + [(s, s, listing.counts.get(s, 0)) for s in STATUSES]
    current = ' class="current"'
    nav = " ".join(
        f'<a href="{_e(_link(value, 1, listing.per_page, reviewer))}" data-filter="{_e(label)}"'
        f'{current if value == listing.status else ""}>{_e(label)} ({count})</a>'
        for label, value, count in filters)
    body = []
    for row in listing.rows:
        example_id = row["example_id"]
        last = row.get("last_review")
        reviewed = (f'<div class="muted last-review">{_e(DECISIONS.get(last["decision"], last["decision"]))} by '
                    f'{_e(last["reviewer"])} at '
                    f'{_e(pd.Timestamp(last["decided_at"]).strftime("%Y-%m-%d %H:%M:%S UTC"))}</div>' if last else "")
        common = _hidden("example_id", example_id) + _hidden("reviewer", reviewer) + state
        body.append(
            f'<tr class="example" data-example-id="{_e(example_id)}">'
            f'<td class="prompt"><pre>{_e(row["prompt"])}</pre></td>'
            f'<td class="response"><pre>{_e(row["response"])}</pre></td>'
            f'<td class="strategy">{_e(row["strategy"])}<div class="muted">{_e(row["day"])}</div></td>'
            f'<td class="score">{float(row["score"]):.2f}</td>'
            f'<td class="reason">{_e(row["reason"])}</td>'
            f'<td><span class="status status-{_e(row["status"])}">{_e(row["status"])}</span>{reviewed}</td>'
            f'<td class="actions">'
            f'<form class="review-form decide" method="post" action="/review">{common}'
            f'<input name="note" placeholder="note (optional)" aria-label="note">'
            f'<button type="submit" name="decision" value="approve">Approve</button> '
            f'<button type="submit" name="decision" value="reject">Reject</button></form>'
            f'<details class="edit"><summary>Edit</summary>'
            f'<form class="review-form edit-form" method="post" action="/review">{common}'
            # The parser drops one newline right after <textarea>: this one, so a response's own leading
            # newline survives the round trip.
            f'<textarea name="edited_response" aria-label="edited response">\n{_e(row["response"])}</textarea>'
            f'<input name="note" placeholder="note (optional)" aria-label="note">'
            f'<button type="submit" name="decision" value="edit">Save edit</button></form></details>'
            f'</td></tr>')
    if not body:
        body.append('<tr><td colspan="7" class="muted empty">No curated examples'
                    f'{" with status " + _e(listing.status) if listing.status else ""}.</td></tr>')
    pager = [f'<span class="page-of">Page {listing.page} of {listing.pages}</span>']
    if listing.page > 1:
        pager.insert(0, f'<a rel="prev" href="{_e(_link(listing.status, listing.page - 1, listing.per_page, reviewer))}">'
                        f'&larr; previous</a>')
    if listing.page < listing.pages:
        pager.append(f'<a rel="next" href="{_e(_link(listing.status, listing.page + 1, listing.per_page, reviewer))}">'
                     f'next &rarr;</a>')
    flash = f'<p class="flash" role="status">{_e(message)}</p>' if message else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Crucible · review curated examples'
        '</title><link rel="stylesheet" href="/static/review.css"><script src="/static/review.js" defer></script>'
        '</head><body><header><h1>Curated examples</h1>'
        f'<label>Reviewer <input id="reviewer-name" value="{_e(reviewer)}" autocomplete="name"></label></header>'
        f'<nav class="filters">{nav}</nav>{flash}'
        '<table id="examples"><thead><tr><th>Prompt</th><th>Response</th><th>Strategy</th><th>Score</th>'
        '<th>Reason</th><th>Status</th><th>Review</th></tr></thead><tbody>'
        + "".join(body)
        + f'</tbody></table><div class="pager">{" ".join(pager)}</div></body></html>')


def _error_page(message: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Review not saved</title>'
            '<link rel="stylesheet" href="/static/review.css"></head><body><h1>Review not saved</h1>'
            f'<p class="error" role="alert">{_e(message)}</p><p><a href="/">Back to the list</a></p></body></html>')


# -- the server --------------------------------------------------------------------------------


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    value = params.get(name) or ""
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ReviewError(f"{name}={value!r} is not a whole number") from None


def _listing_params(params: Mapping[str, str]) -> tuple[str | None, int, int]:
    return (params.get("status") or None, _int_param(params, "page", 1), _int_param(params, "per_page", 20))


class ReviewServer:
    """The review page for the curated examples of ``lake``: ``.start()`` serves on ``.url`` (uvicorn in a
    thread) until ``.stop()``; ``serve_forever()`` does the same until SIGTERM/SIGINT (the CLI).

    ``reviewer`` is the name used when the page's Reviewer field is empty. Routes: ``GET /`` (the page:
    ``status``, ``page``, ``per_page``), ``POST /review`` (a form: example_id, decision, reviewer,
    edited_response, note; answers 303 back to the list), ``GET /api/examples`` and ``POST /api/reviews``
    (the same as JSON), ``GET /healthz``. There is no login: keep it on 127.0.0.1 (the default).
    """

    def __init__(self, lake: DeltaLake, host: str = "127.0.0.1", port: int = 0, *, reviewer: str | None = None,
                 scrubber: Scrubber | None = None, per_page: int = 20) -> None:
        self.lake, self.host, self._port = lake, host, port
        self.reviewer = reviewer.strip() if reviewer else None
        self.scrubber, self.per_page = scrubber, per_page
        self.app = self._build_app()
        self._http = ThreadedServer(self.app, host, port, name="review server")

    @property
    def url(self) -> str:
        return self._http.url

    def start(self, timeout_s: float = 30.0) -> ReviewServer:
        """Listen on ``host:port`` (0 picks a free port, see ``url``)."""
        self._http.start(timeout_s)
        return self

    def stop(self) -> None:
        """Stop listening; requests in flight finish first."""
        self._http.stop()

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, on_listening: Callable[[str], None] | None = None) -> None:
        """Serve until SIGTERM or SIGINT (main thread only)."""
        serve_until_signal(self.start, self.stop, lambda: self.url, on_listening)

    # -- the app ------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(routes=[
            Route("/", self._page, methods=["GET"]),
            Route("/review", self._review_form, methods=["POST"]),
            Route("/api/examples", self._api_examples, methods=["GET"]),
            Route("/api/reviews", self._api_review, methods=["POST"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/static/review.css", self._css, methods=["GET"]),
            Route("/static/review.js", self._js, methods=["GET"]),
            Route("/favicon.ico", self._no_icon, methods=["GET"]),
        ])

    def _record(self, fields: Mapping[str, Any]) -> ReviewRecord:
        return record_review(self.lake, fields.get("example_id") or "", fields.get("decision") or "",
                             fields.get("reviewer") or self.reviewer or "",
                             edited_response=fields.get("edited_response"), note=fields.get("note"),
                             scrubber=self.scrubber)

    async def _page(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import HTMLResponse

        params = request.query_params
        reviewer = params.get("reviewer") or self.reviewer or ""
        try:
            status, page, per_page = _listing_params({**params, "per_page": params.get("per_page")
                                                      or str(self.per_page)})
            listing = await run_in_threadpool(list_curated, self.lake, status=status, page=page, per_page=per_page)
        except ReviewError as error:
            return HTMLResponse(_error_page(str(error)), error.status_code, headers=_SECURITY_HEADERS)
        message = None
        if params.get("saved"):
            message = f"Saved: {params['saved']} {DECISIONS.get(params.get('decision', ''), 'reviewed')}"
        return HTMLResponse(render_page(listing, reviewer=reviewer, message=message), headers=_SECURITY_HEADERS)

    async def _review_form(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import HTMLResponse, RedirectResponse

        try:
            self._check_origin(request)
            fields = await self._form_fields(request)
            record = await run_in_threadpool(self._record, fields)
        except ReviewError as error:
            return HTMLResponse(_error_page(str(error)), error.status_code, headers=_SECURITY_HEADERS)
        query = {k: v for k, v in (("status", fields.get("status")), ("page", fields.get("page")),
                                   ("per_page", fields.get("per_page")), ("reviewer", record.reviewer),
                                   ("saved", record.example_id), ("decision", record.decision)) if v}
        return RedirectResponse("/?" + urlencode(query), status_code=303)

    async def _api_examples(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        try:
            status, page, per_page = _listing_params({**request.query_params, "per_page": request.query_params.get(
                "per_page") or str(self.per_page)})
            listing = await run_in_threadpool(list_curated, self.lake, status=status, page=page, per_page=per_page)
        except ReviewError as error:
            return JSONResponse({"error": str(error)}, error.status_code)
        return JSONResponse(json.loads(json.dumps(asdict(listing), default=_json_value)))

    async def _api_review(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        try:
            self._check_origin(request)
            body = await self._body(request)
            try:
                payload = json.loads(body or b"null")
            except ValueError as error:
                raise ReviewError(f"the body is not JSON ({error})") from None
            if not isinstance(payload, dict):
                raise ReviewError("the body must be a JSON object: {example_id, decision, reviewer, "
                                  "edited_response?, note?}")
            texts = {k: v for k, v in payload.items() if v is not None}
            wrong = sorted(k for k, v in texts.items() if not isinstance(v, str))
            if wrong:
                raise ReviewError(f"fields {', '.join(wrong)} must be strings")
            record = await run_in_threadpool(self._record, texts)
        except ReviewError as error:
            return JSONResponse({"error": str(error)}, error.status_code)
        return JSONResponse(asdict(record))

    async def _healthz(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok"})

    async def _css(self, request: Request) -> Response:
        from starlette.responses import Response

        return Response(_CSS, media_type="text/css", headers={"X-Content-Type-Options": "nosniff"})

    async def _js(self, request: Request) -> Response:
        from starlette.responses import Response

        return Response(_JS, media_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"})

    async def _no_icon(self, request: Request) -> Response:
        from starlette.responses import Response

        return Response(status_code=204)

    @staticmethod
    def _check_origin(request: Request) -> None:
        # No login guards the page, so a decision from another site's form (a cross-site POST) is refused.
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise ReviewError(f"cross-site request from origin {origin!r} refused: submit reviews from the review "
                              f"page itself", status_code=403)

    @staticmethod
    async def _body(request: Request) -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ReviewError(f"the request body is over {MAX_BODY_BYTES} bytes", status_code=413)
        return body

    async def _form_fields(self, request: Request) -> dict[str, str]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise ReviewError(f"content type {kind or 'none'!r}: post the page's form "
                              f"(application/x-www-form-urlencoded), or JSON to /api/reviews", status_code=415)
        try:
            parsed = parse_qs((await self._body(request)).decode("utf-8"), keep_blank_values=True,
                              max_num_fields=50)
        except (UnicodeDecodeError, ValueError) as error:
            raise ReviewError(f"the form cannot be read ({error})") from None
        # A browser submits CRLF line ends from a textarea; store the text as typed.
        return {k: v[0].replace("\r\n", "\n") for k, v in parsed.items()}


def _json_value(value: object) -> object:
    if isinstance(value, pd.Timestamp | dt.date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
