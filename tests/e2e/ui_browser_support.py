"""What the dashboard's browser tests share: Debian's headless Chromium (/usr/bin/chromium)
driven by Playwright, signing in through the login form, and screenshots at 1280 px and
375 px (with no horizontal scrolling at either) kept under .artifacts/ui-screenshots/
(ignored by git).

A test module calls `skip_without_browser()` at import: skipped only when Chromium is
absent and NORN_REQUIRE_BROWSER is unset; CI (.ci/run) installs Chromium and sets it, so
there the tests always run."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "ui-screenshots"
# As the machine's probe ran it: no sandbox (root), no network of its own.
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
PASSWORD = "correct-horse-battery-staple"
WIDTHS = (1280, 375)


def skip_without_browser() -> None:
    if not Path(CHROMIUM).exists() and not os.environ.get("NORN_REQUIRE_BROWSER"):
        pytest.skip(f"{CHROMIUM} is not installed (CI installs it)", allow_module_level=True)


@asynccontextmanager
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        # A fresh profile per test; Playwright's own temporary one unless told otherwise.
        # bypass_csp: the accessibility test injects axe as an inline script, which a
        # future Content-Security-Policy must not turn into a false failure.
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
            bypass_csp=True,
        )
        try:
            yield context
        finally:
            await context.close()


async def sign_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/ui/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/ui/pipelines")


async def sideways_scroll(page: Any) -> int:
    """How many pixels the page scrolls horizontally (0 when it fits)."""
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return max(int(overflow), 0)


def shot_name(name: str) -> str:
    """A file name from a page's name or route pattern ('/ui/runs/{id}' -> 'runs-id')."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().removeprefix("/ui/")).strip("-") or "root"


async def shoot_at(page: Any, name: str, width: int, keep: bool = True) -> str | None:
    """The viewport at `width`, a full-page screenshot of it (unless not `keep`); a
    message when the page scrolls sideways there, else None."""
    await page.set_viewport_size({"width": width, "height": 900})
    if keep:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{shot_name(name)}-{width}.png"
        await page.screenshot(path=str(path), full_page=True)
    overflow = await sideways_scroll(page)
    return f"{name} scrolls sideways by {overflow}px at {width}px" if overflow else None


async def shoot(page: Any, name: str) -> list[str]:
    """Screenshots at 1280 px and at 375 px; the widths at which the page scrolls
    sideways, as messages (none when it fits). The viewport is back at 1280 px after."""
    problems = [await shoot_at(page, name, width) for width in WIDTHS]
    await page.set_viewport_size({"width": 1280, "height": 900})
    return [problem for problem in problems if problem]


async def shoot_and_fit(page: Any, name: str) -> None:
    """`shoot`, failing when the page scrolls sideways at either width."""
    problems = await shoot(page, name)
    assert not problems, problems
