"""End-to-end tests in a real browser: headless Chromium (Debian's package) driven by Playwright for Python.

Run by `nox -s e2e`, which installs chromium and playwright and sets E2E_CHROMIUM to the browser's path. Without
E2E_CHROMIUM (the default test session), these tests are skipped: they need a browser the other sessions do not
install. With it, anything missing is an error, not a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("E2E_CHROMIUM", "")
#: Never `playwright install`: the browser is the system's, started with these flags.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM:
        return
    skip = pytest.mark.skip(reason="browser tests run in `nox -s e2e` (set E2E_CHROMIUM=/usr/bin/chromium)")
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no browser at {CHROMIUM}"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"
