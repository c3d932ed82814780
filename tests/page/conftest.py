"""Fixtures of the page tests: a real `pumpctl serve --simulate 2 --clock virtual` process and
Debian's Chromium under Playwright (tests/helpers/page_env.py).

One Chromium per test module (its launch is a second of CPU, paid once, not by each test), each
test in tabs of its own that are closed after it (no page of one test reads the service of the
next). The modules that use `browser` run their tests on the module's event loop
(`pytestmark = pytest.mark.asyncio(loop_scope="module")`): Playwright's objects belong to the
loop that made them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from page_env import chromium_binary
from playwright.async_api import Browser, async_playwright
from service_process import Service, serving


@pytest_asyncio.fixture(loop_scope="module")
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """The real service on a free port, two simulated serial pumps, a virtual clock."""
    async with serving(tmp_path) as served:
        yield served


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, launched once for the module."""
    executable = chromium_binary()
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(chromium: Browser) -> AsyncIterator[Browser]:
    """The module's Chromium for one test: every tab the test opened is closed after it."""
    assert not chromium.contexts, "a tab of an earlier test is still open"
    try:
        yield chromium
    finally:
        for context in chromium.contexts:
            await context.close()
