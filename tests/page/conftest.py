"""Fixtures of the page tests: a real `pumpctl serve --simulate 2 --clock virtual` process and
Debian's Chromium under Playwright (tests/helpers/page_env.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from page_env import chromium_binary
from playwright.async_api import Browser, async_playwright
from service_process import Service, serving


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """The real service on a free port, two simulated serial pumps, a virtual clock."""
    async with serving(tmp_path) as served:
        yield served


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_binary()
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=executable)
        try:
            yield launched
        finally:
            await launched.close()
