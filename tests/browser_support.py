"""Headless Chromium for browser tests: Debian's chromium driven by Playwright, which cannot download its own
browser here, plus a folder for the screenshots a test keeps as artifacts.

Use the fixtures by importing them into a test module::

    from tests.browser_support import artifacts, browser, page  # noqa: F401 (pytest fixtures)

``page`` is a fresh page whose console errors and uncaught page errors are collected in ``page.errors``
(a list of strings), so a test can assert that a page ran without script errors.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CRUCIBLE_CHROMIUM", "/usr/bin/chromium")
# --no-sandbox: test containers run as root without user namespaces for Chromium's own sandbox.
CHROMIUM_ARGS = ("--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage")


def chromium_missing() -> str | None:
    """Why Chromium cannot run here (a skip reason), or None when it can."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)) and shutil.which(CHROMIUM) is None:
        return (f"no Chromium at {CHROMIUM}: install Debian's chromium (scripts/setup.sh does) or set "
                f"CRUCIBLE_CHROMIUM to a Chromium binary")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed in this environment (pip install -e '.[dev]')"
    return None


def artifacts_dir(name: str, fallback: Path) -> Path:
    """``$CRUCIBLE_TEST_ARTIFACTS/<name>`` (CI uploads that folder), else ``fallback`` (a pytest tmp_path)."""
    root = os.environ.get("CRUCIBLE_TEST_ARTIFACTS")
    folder = Path(root) / re.sub(r"[^A-Za-z0-9_.-]+", "_", name) if root else fallback
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium for the whole test module (skipped with the reason when Chromium is missing)."""
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A new page in its own context (no cookies or storage shared between tests); ``page.errors`` collects
    console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error"
              else None)
    opened.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    opened.errors = errors
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def artifacts(request, tmp_path: Path) -> Path:
    """Where this test keeps its screenshots: ``$CRUCIBLE_TEST_ARTIFACTS/<test name>`` or its tmp_path."""
    return artifacts_dir(request.node.name, tmp_path)
