"""The suite's leaked-task check: a test that leaves asyncio tasks running behind it fails
(as pymodbus's tests do). tests/conftest.py runs it around every test on the test's own loop;
a module whose tests run on a loop of the module's (`pytest.mark.asyncio(loop_scope="module")`,
to share a fixture of the module's) imports `no_leaked_tasks_on_the_module_loop`, which runs it
on that loop instead: on the function's loop it would see none of the test's tasks. The page
modules do the same in tests/page/conftest.py, letting their service pool's work by (its
tasks and the tasks they start: tests/helpers/page_pool.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio


@contextlib.asynccontextmanager
async def tasks_checked(
    outliving: Callable[[asyncio.Task[Any]], bool] = lambda _task: False,
) -> AsyncIterator[None]:
    """Fail the test if a task it started is still running when it ends (the task cancelled).
    Tasks for which `outliving` is true are a module fixture's own, which outlive a test by
    design."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [
        t
        for t in asyncio.all_tasks() - before
        if t is not current and not t.done() and not outliving(t)
    ]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {names}")


@pytest_asyncio.fixture(loop_scope="module", autouse=True, name="no_leaked_tasks")
async def no_leaked_tasks_on_the_module_loop() -> AsyncIterator[None]:
    """The leaked-task check on the module's loop (it overrides tests/conftest.py's)."""
    async with tasks_checked():
        yield
