"""The serial half of the conformance environment: a SerialPump on a real pty to the simulator.

With `tcp=True` the simulator serves the line on a loopback TCP port and the driver opens it as
`socket://127.0.0.1:PORT`, so the port itself can be lost and come back (`drop_port`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from drivers.serial import SerialLine, SerialPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

#: Short wire timeouts keep failure tests fast; a pty answers in well under a millisecond.
TEST_REPLY_TIMEOUT_S = 0.15
#: Reopening backoff cap for tests: a port back is reopened within a fraction of a second.
TEST_RECONNECT_MAX_S = 0.2
#: Bound on noticing a lost port and on being re-established after it is back.
RELINK_BOUND_S = 5.0


@dataclass
class SerialEnv:
    """A connected SerialPump, the model behind it, the clock, and the link switches."""

    driver: SerialPump
    model: PumpModel
    clock: VirtualClock
    simulator: SerialSimulator
    line: SerialLine

    async def break_link(self) -> None:
        """Cut the line (the pump hears and says nothing) until `restore_link`."""
        self.model.faults.drop_connection = True

    async def restore_link(self) -> None:
        """Plug the line back in."""
        self.model.faults.drop_connection = False

    async def drop_port(self) -> None:
        """Unplug the port (TCP-served line only); return once line and pump noticed."""
        self.simulator.unplug()
        async with asyncio.timeout(RELINK_BOUND_S):
            await self.line.wait_lost()
            await self.driver.wait_unlinked()

    async def restore_port(self) -> None:
        """Plug the port back in; return once the driver reopened it and re-established the pump."""
        await self.simulator.plug()
        async with asyncio.timeout(RELINK_BOUND_S):
            await self.line.wait_connected()
            await self.driver.wait_linked()


@asynccontextmanager
async def serial_env(
    clock: VirtualClock,
    *,
    safe_mode_s: int | None = 5,
    address: int = 0,
    tcp: bool = False,
    reply_timeout_s: float = TEST_REPLY_TIMEOUT_S,
) -> AsyncIterator[SerialEnv]:
    """A simulated pump served on a fresh pseudo-terminal (or TCP port) and a driver on it."""
    model = PumpModel("serial-pump", clock, address=address)
    async with (
        SerialSimulator([model], tcp_port=0 if tcp else None) as simulator,
        SerialLine(
            simulator.path,
            reply_timeout_s=reply_timeout_s,
            reconnect_max_s=TEST_RECONNECT_MAX_S,
        ) as line,
        SerialPump(line, address, pump_id="serial-pump", safe_mode_s=safe_mode_s) as driver,
    ):
        yield SerialEnv(driver, model, clock, simulator, line)
