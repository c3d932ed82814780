"""The page modules' service pool (tests/page/conftest.py): each page test gets a fresh
`pumpctl serve` of its own, started while the previous test ran, and stopped while the next
one runs."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from needs import free_port
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
