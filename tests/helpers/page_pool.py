"""The page modules' service pool (tests/page/conftest.py): each page test gets a fresh
`pumpctl serve` of its own, started while the previous test ran, and stopped while the next
one runs. The pool's work outlives a test by design: its own tasks and every task they start
(httpx's connection attempts while a spare polls /health) are tagged as they are created
(`Spares.work`), and the leaked-task check lets them by."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from needs import free_port
from service_process import Service

#: The names of `Spares`' own tasks (labels for a reader of a failure; the leaked-task check
#: tells the pool's work by `POOL_WORK`, not by name): the next test's service starting, a
#: used one stopping.
NEXT_SERVICE = "the next page test's service"
RETIRING = "a page test's service stopping"
#: True in the context of `Spares`' tasks, and so in every task they start (a task copies the
#: context of the code that creates it).
POOL_WORK: contextvars.ContextVar[bool] = contextvars.ContextVar("page pool work", default=False)


class Spares:
    """Services of one module's tests, each used by one test only: the next one is started
    while a test runs, and a used one is stopped while the next test runs. At the end of the
    module the spare nobody took and the stops still under way are awaited (bounded by
    `Service.start` and `Service.stop`)."""

    def __init__(self, paths: pytest.TempPathFactory) -> None:
        self.paths = paths
        self.spare: asyncio.Task[Service] | None = None
        self.stopping: set[asyncio.Task[None]] = set()
        #: Every task of the pool's work still alive: its own and those they started (a spare
        #: polling /health starts httpx's connection attempts, which may be under way when a
        #: test ends). Filled by the loop's task factory while the pool is open (`opened`).
        self.work: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._factory: Callable[..., asyncio.Task[Any]] | None = None

    @contextlib.contextmanager
    def opened(self, loop: asyncio.AbstractEventLoop) -> Iterator[Spares]:
        """Tag, on `loop`, every task created in the pool's context (`POOL_WORK`)."""
        before = loop.get_task_factory()

        def factory(
            loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
        ) -> asyncio.Task[Any]:
            # `options` as the loop passes them: `context` (3.11), `name` and more on later
            # Pythons; forwarded as they came
            task: asyncio.Task[Any]
            if before is not None:
                task = before(loop, coro, **options)
            else:
                task = asyncio.Task(coro, loop=loop, **options)
            context: contextvars.Context | None = options.get("context")
            if context.get(POOL_WORK, False) if context is not None else POOL_WORK.get():
                self.work.add(task)
            return task

        loop.set_task_factory(factory)  # type: ignore[arg-type]
        self._factory = factory
        try:
            yield self
        finally:
            loop.set_task_factory(before)
            self._factory = None

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """`work` as a task of the pool's (`POOL_WORK` set in its context), tagged by the
        loop's task factory: only while the pool is open (`opened`)."""
        loop = asyncio.get_running_loop()
        if self._factory is None or loop.get_task_factory() is not self._factory:
            raise RuntimeError("the pool is not open on this loop (Spares.opened)")
        context = contextvars.copy_context()
        context.run(POOL_WORK.set, True)
        return loop.create_task(work, name=name, context=context)

    def _start(self) -> asyncio.Task[Service]:
        async def started() -> Service:
            served = Service(port=free_port(), data_dir=self.paths.mktemp("service"))
            await served.start()  # (killed by `start` itself when it fails or is cancelled)
            return served

        return self.spawn(started(), NEXT_SERVICE)

    async def take(self) -> Service:
        """A fresh service, up; the next one starts now."""
        starting, self.spare = self.spare or self._start(), None
        served = await starting
        self.spare = self._start()
        return served

    def retire(self, served: Service) -> None:
        """Stop `served` while the next test runs."""
        task: asyncio.Task[None] = self.spawn(served.stop(), RETIRING)
        self.stopping.add(task)
        task.add_done_callback(self.stopping.discard)

    async def close(self) -> None:
        if self.spare is not None:
            spare, self.spare = self.spare, None
            # an unused spare that never came up was killed by `start`: nothing to stop
            with contextlib.suppress(Exception):
                self.retire(await spare)
        await asyncio.gather(*self.stopping)
