"""The page's sign-in with a personal account (interfaces.md, section 4; issue 20), in Chromium
against the real service: a wrong password is said in words, the right one signs the nurse
in under her own name, her session is kept for the tab only, "Sign out" ends it at the
service (the token no longer works), and repeated failures are said with their wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect
from service_process import Service, serving

from pumpctl.credentials import hash_password
from pumpctl.store import migrate
from pumpctl.store.accounts import AccountBook
from pumpctl.store.engine import make_engine

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the module's Chromium (conftest.py)
PASSWORD = "a long enough pass phrase"  # noqa: S105 - the tests' account


@pytest_asyncio.fixture(loop_scope="module")
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    url = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrate.upgrade(url)
    book = AccountBook(make_engine(url))
    try:
        book.add("nina.k", "nurse", hash_password(PASSWORD))
    finally:
        book.engine.dispose()
    async with serving(tmp_path) as served:
        yield served


async def sign_in(page: Page, name: str, password: str) -> None:
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_nurse_signs_in_with_her_account_and_signs_out(
    service: Service, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(service.url + "/")
    await sign_in(page, "nina.k", "not her pass phrase")
    await expect(page.locator("#sign-in-error")).to_have_text(
        "The name or the password is not right."
    )
    await expect(page.get_by_label("Password")).to_have_value("")  # never left in the field

    await sign_in(page, "Nina.K", PASSWORD)
    await expect(page.get_by_text("Signed in as nina.k (nurse)")).to_be_visible()
    await expect(page.get_by_role("list", name="Pumps, alarms first")).to_be_visible()
    token = await page.evaluate("sessionStorage.getItem('pumpctl.token')")
    assert token
    assert await page.evaluate("localStorage.length") == 0
    assert PASSWORD not in await page.content()
    await page.reload()  # the tab keeps its session
    await expect(page.get_by_text("Signed in as nina.k (nurse)")).to_be_visible()

    assert service.http is not None
    headers = {"Authorization": f"Bearer {token}"}
    assert (await service.http.get("/api/v1/me", headers=headers)).status_code == 200
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("User name")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('pumpctl.token')") is None
    # ended at the service too, not only forgotten by the page
    async with asyncio.timeout(10):
        while (await service.http.get("/api/v1/me", headers=headers)).status_code != 401:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polling a condition with a deadline


async def test_repeated_failures_are_said_with_their_wait(
    service: Service, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(service.url + "/")
    for _ in range(3):
        await sign_in(page, "nina.k", "not her pass phrase")
        await expect(page.locator("#sign-in-error")).to_have_text(
            "The name or the password is not right."
        )
        await page.locator("#sign-in-error").evaluate("el => { el.textContent = ''; }")
    await sign_in(page, "nina.k", PASSWORD)
    await expect(page.locator("#sign-in-error")).to_have_text(
        "Too many failed sign-ins: try again in 1 s."
    )
