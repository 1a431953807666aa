"""Fixtures of the browser tests: the real `runbroker` (tests/e2e/harness.py) and
Debian's Chromium driven by Playwright's sync API.

The sync API cannot run inside an asyncio loop, so browser tests are plain
(non-async) functions. No browser is ever downloaded: Chromium comes from the
system (`apt-get install chromium`, done by .ci/run). Without it, or without
Playwright, the tests skip on a workstation and fail under CI (CI=true).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ROOT, BrokerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: CI needs it for the browser tests (.ci/run installs it)")
    pytest.skip(f"{what}: browser tests skipped")


# Package scope, not session: while Playwright's sync API is open its event loop
# counts as running in this thread, and pytest-asyncio's tests after this
# package could not start theirs.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker per test module (a start costs a second or two); tests use their own names."""
    process = BrokerProcess(tmp_path_factory.mktemp("broker"))
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def page(browser: Any, broker: BrokerProcess) -> Iterator[Any]:
    """A fresh browser context on the console; fails the test on any JavaScript error."""
    context = browser.new_context(viewport=VIEWPORT, base_url=broker.url)
    context.set_default_timeout(5000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto("/")
    tab.wait_for_selector('#status[data-state="live"]')
    yield tab
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
