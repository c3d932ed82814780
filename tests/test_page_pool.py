"""The page modules' leaked-task check (tests/page/conftest.py) tells the service pool's work
from a test's own: the pool's tasks and every task they start outlive a test by design (a spare
polling /health starts httpx's connection attempts, which may be under way when a test ends:
seen, the check cancelled one and the next test's service never came up), and a task the test
itself leaves running still fails it."""

from __future__ import annotations

import asyncio

import pytest
from leaks import tasks_checked
from page_pool import RETIRING, Spares


async def test_the_pools_work_and_what_it_starts_are_let_by_and_a_tests_own_task_is_not(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    release = asyncio.Event()
    attempting = asyncio.Event()

    async def attempt() -> None:
        attempting.set()
        await release.wait()

    async def work() -> None:  # as a spare's /health poll: its connection attempt is a task
        await asyncio.create_task(attempt(), name="a connection attempt of the pool's")

    left: list[asyncio.Task[bool]] = []

    async def a_test(pool: Spares) -> None:
        async with tasks_checked(outliving=pool.work.__contains__):
            await attempting.wait()
            left.append(asyncio.create_task(release.wait(), name="the test's own"))

    with Spares(tmp_path_factory).opened(asyncio.get_running_loop()) as pool:
        spawned = pool.spawn(work(), RETIRING)
        try:
            with pytest.raises(pytest.fail.Exception) as failed:
                await a_test(pool)
            assert str(failed.value) == "test leaked 1 asyncio task(s): the test's own"
            assert left[0].cancelled()  # the check cancelled the test's own task
            assert not spawned.done()  # and not the pool's work
        finally:
            release.set()
            await spawned


async def test_work_started_while_the_pool_is_not_open_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Untagged, the pool's work would fail the next test as a leak: `spawn` refuses it."""
    work = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match=r"not open on this loop \(Spares.opened\)"):
        Spares(tmp_path_factory).spawn(work, RETIRING)
    work.close()
