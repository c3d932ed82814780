"""The nurse station page in a real browser: Debian's Chromium (`/usr/bin/chromium`, no browser
download) driven by Playwright; a page signed in as a role; a pump's tile in the room and its
detail opened from it; screenshots of the room to `artifacts/page/` (git-ignored: they are made
again by every run). With CI=true a missing Chromium fails the run; it never skips.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from needs import free_port, missing
from playwright.async_api import Browser, Locator, Page, expect
from service_process import TOKENS, Service

__all__ = [
    "ARTIFACTS",
    "WAIT_MS",
    "chromium_binary",
    "free_port",
    "opened",
    "screenshot",
    "signed_in",
    "tile",
]

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
    browser: Browser,
    service: Service,
    role: str,
    width: int = 1280,
    url: str | None = None,
    *,
    height: int = 900,
    prepare: Callable[[Page], Awaitable[None]] | None = None,
) -> Page:
    """A new tab on the page, signed in with `role`'s token, the room's tiles shown.
    `prepare` runs on the new tab before the page loads (an init script, the page's clock)."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    if prepare is not None:
        await prepare(page)
    await page.goto((url or service.url) + "/")
    await page.get_by_label("Access token").fill(TOKENS[role])
    await page.get_by_role("button", name="Sign in").click()
    await expect(tile(page, "pump-1")).to_be_visible()
    return page


def tile(page: Page, pump_id: str) -> Locator:
    """The pump's tile in the room (a button; it opens the pump's detail)."""
    return page.locator(f'#overview .tile[data-pump="{pump_id}"]')


async def opened(page: Page, pump_id: str) -> Locator:
    """The pump's detail region, opened from its tile unless it is open already."""
    region = page.get_by_role("region", name=pump_id, exact=True)
    if not await region.is_visible():
        await tile(page, pump_id).click()
    await expect(region).to_be_visible()
    return region


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
