"""Fixtures of the page tests: a real `pumpctl serve --simulate 2 --clock virtual` process and
Debian's Chromium under Playwright (tests/helpers/page_env.py).

Each test still gets a service of its own, fresh (no state of another test), but not started
and stopped on its time: the module keeps the next test's service starting while a test runs,
and a used one is stopped while the next test runs (`Spares`). A start and a stop are about 3 s
of each test's 10, most of it waiting on the processes.

One Chromium per test module (its launch is a second of CPU, paid once, not by each test), each
test in tabs of its own that are closed after it (no page of one test reads the service of the
next). The modules that use `browser` run their tests on the module's event loop
(`pytestmark = pytest.mark.asyncio(loop_scope="module")`): Playwright's objects belong to the
loop that made them. Every page module with async tests does so, and the suite's leaked-task
check runs on that loop here (`no_leaked_tasks`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from leaks import tasks_checked
from page_env import chromium_binary, free_port
from playwright.async_api import Browser, async_playwright
from service_process import Service

#: The names of `Spares`' own tasks, which outlive a test by design (the leaked-task check
#: lets them): the next test's service starting, a used one stopping.
NEXT_SERVICE = "the next page test's service"
RETIRING = "a page test's service stopping"


class Spares:
    """Services of one module's tests, each used by one test only: the next one is started
    while a test runs, and a used one is stopped while the next test runs. At the end of the
    module the spare nobody took and the stops still under way are awaited (bounded by
    `Service.start` and `Service.stop`)."""

    def __init__(self, paths: pytest.TempPathFactory) -> None:
        self.paths = paths
        self.spare: asyncio.Task[Service] | None = None
        self.stopping: set[asyncio.Task[None]] = set()

    def _start(self) -> asyncio.Task[Service]:
        async def started() -> Service:
            served = Service(port=free_port(), data_dir=self.paths.mktemp("service"))
            await served.start()  # (killed by `start` itself when it fails or is cancelled)
            return served

        return asyncio.create_task(started(), name=NEXT_SERVICE)

    async def take(self) -> Service:
        """A fresh service, up; the next one starts now."""
        starting, self.spare = self.spare or self._start(), None
        served = await starting
        self.spare = self._start()
        return served

    def retire(self, served: Service) -> None:
        """Stop `served` while the next test runs."""
        task = asyncio.create_task(served.stop(), name=RETIRING)
        self.stopping.add(task)
        task.add_done_callback(self.stopping.discard)

    async def close(self) -> None:
        if self.spare is not None:
            spare, self.spare = self.spare, None
            # an unused spare that never came up was killed by `start`: nothing to stop
            with contextlib.suppress(Exception):
                self.retire(await spare)
        await asyncio.gather(*self.stopping)


@pytest_asyncio.fixture(loop_scope="module")
async def no_leaked_tasks() -> AsyncIterator[None]:
    """The suite's leaked-task check (tests/helpers/leaks.py) on the page modules' loop, where
    their tests run (every page module runs on its module's loop); the service pool's own tasks
    outlive a test by design."""
    async with tasks_checked(outliving=frozenset({NEXT_SERVICE, RETIRING})):
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def spares(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Spares]:
    pool = Spares(tmp_path_factory)
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
