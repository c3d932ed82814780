"""Fixtures of the page tests: a real `pumpctl serve --simulate 2 --clock virtual` process and
Debian's Chromium under Playwright (tests/helpers/page_env.py).

Each test still gets a service of its own, fresh (no state of another test), but not started
and stopped on its time: the module keeps the next test's service starting while a test runs,
and a used one is stopped while the next test runs (`Spares`, tests/helpers/page_pool.py). A
start and a stop are about 3 s of each test's 10, most of it waiting on the processes.

One Chromium per test module (its launch is a second of CPU, paid once, not by each test), each
test in tabs of its own that are closed after it (no page of one test reads the service of the
next). The modules that use `browser` run their tests on the module's event loop
(`pytestmark = pytest.mark.asyncio(loop_scope="module")`): Playwright's objects belong to the
loop that made them. Every page module with async tests does so, and the suite's leaked-task
check runs on that loop here (`no_leaked_tasks`), letting the pool's own work by."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from leaks import tasks_checked
from page_env import chromium_binary
from page_pool import Spares
from playwright.async_api import Browser, async_playwright
from service_process import Service


@pytest_asyncio.fixture(loop_scope="module")
async def no_leaked_tasks(spares: Spares) -> AsyncIterator[None]:
    """The suite's leaked-task check (tests/helpers/leaks.py) on the page modules' loop, where
    their tests run (every page module runs on its module's loop); the service pool's work
    outlives a test by design (`Spares.work`)."""
    async with tasks_checked(outliving=spares.work.__contains__):
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def spares(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Spares]:
    with Spares(tmp_path_factory).opened(asyncio.get_running_loop()) as pool:
        try:
            yield pool
        finally:
            await pool.close()


@pytest_asyncio.fixture(loop_scope="module")
async def service(spares: Spares) -> AsyncIterator[Service]:
    """The real service on a free port, two simulated serial pumps, a virtual clock: fresh,
    this test's alone."""
    served = await spares.take()
    try:
        yield served
    finally:
        spares.retire(served)


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
