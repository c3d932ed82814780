"""The nurse station page in a real browser: Debian's Chromium (`/usr/bin/chromium`, no browser
download) driven by Playwright; a page signed in as a role; screenshots of the room to
`artifacts/page/` (git-ignored). With CI=true a missing Chromium fails the run; it never skips.
"""

from __future__ import annotations

from pathlib import Path

from needs import free_port, missing
from playwright.async_api import Browser, Page, expect
from service_process import TOKENS, Service

__all__ = ["ARTIFACTS", "WAIT_MS", "chromium_binary", "free_port", "screenshot", "signed_in"]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "page"
WAIT_MS = 15_000  # a stop, a refresh and a render on a loaded CI machine

expect.set_options(timeout=WAIT_MS)


def chromium_binary() -> str:
    """Debian's Chromium; fails (never skips) in CI when it is missing."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is missing (scripts/test installs Debian's chromium through apt)")
    return str(CHROMIUM)


async def signed_in(
    browser: Browser, service: Service, role: str, width: int = 1280, url: str | None = None
) -> Page:
    """A new tab on the page, signed in with `role`'s token, the room shown."""
    page = await browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto((url or service.url) + "/")
    await page.get_by_label("Access token").fill(TOKENS[role])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("region", name="pump-1")).to_be_visible()
    return page


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
