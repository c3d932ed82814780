"""The controller: every pump's supervisor, owned by one task group, and the virtual clock's
`settle` (architecture page, "Time").

With a `VirtualClock`, `advance(seconds)` returns only when every timer due in the span has
run, every command it caused is confirmed or failed, and every pump's status at the new instant
has crossed its transport and been processed: the controller installs `settle` as the clock's
settle step. A run then never depends on the machine's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from pumpctl.clock import Clock, VirtualClock
from pumpctl.controller.supervisor import PumpSupervisor

__all__ = ["SETTLE_BOUND_S", "Controller"]

#: Wire seconds `settle` waits for the commands of one instant before it gives up (a pump that
#: never answers still has its fate within the command timeout and a retry).
SETTLE_BOUND_S = 30.0
_QUIET_ROUNDS = 3


class Controller:
    """Supervises pumps; an async context manager that owns their tasks."""

    def __init__(self, clock: Clock, supervisors: Iterable[PumpSupervisor]) -> None:
        self.clock = clock
        self.supervisors = {s.pump.pump_id: s for s in supervisors}
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        if isinstance(clock, VirtualClock):
            clock.set_settle(self.settle)

    def __getitem__(self, pump_id: str) -> PumpSupervisor:
        return self.supervisors[pump_id]

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self._run(), name="controller")
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for supervisor in self.supervisors.values():
                group.create_task(supervisor.run(), name=f"supervisor {supervisor.pump.pump_id}")

    async def settle(self) -> None:
        """Let everything caused so far finish, then read every pump once at the new instant."""
        async with asyncio.timeout(SETTLE_BOUND_S):
            for _ in range(_QUIET_ROUNDS):
                await _yield()
                await self._commands_done()
            for supervisor in self.supervisors.values():
                await supervisor.poll_once()
            await self._commands_done()

    async def _commands_done(self) -> None:
        for _ in range(100):
            await asyncio.gather(*(s.wait_idle() for s in self.supervisors.values()))
            await _yield()
            if all(s.idle for s in self.supervisors.values()):
                return


async def _yield(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
