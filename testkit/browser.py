"""Debian's chromium driven by Playwright, for the web console's browser tests.

Playwright's own browser downloads are not available here (nor wanted on CI):
the tests drive the system's ``/usr/bin/chromium`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_path() -> str:
    """The system chromium; fail (never skip) when it is missing."""
    found = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if found is None:
        raise AssertionError("chromium is not installed: apt-get install -y chromium")
    return found


@contextmanager
def chromium(extra_args: Sequence[str] = ()) -> Iterator[Browser]:
    """A headless chromium for the duration of the block."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=[*ARGS, *extra_args], headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
