"""The serial half of the conformance environment: a SerialPump on a real pty to the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from drivers.serial import SerialLine, SerialPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

#: Short wire timeouts keep failure tests fast; a pty answers in well under a millisecond.
TEST_REPLY_TIMEOUT_S = 0.15


@dataclass
class SerialEnv:
    """A connected SerialPump, the model behind it, the clock, and the link switch."""

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


@asynccontextmanager
async def serial_env(
    clock: VirtualClock, *, safe_mode_s: int | None = 5, address: int = 0
) -> AsyncIterator[SerialEnv]:
    """A simulated pump served on a fresh pseudo-terminal and a driver connected to it."""
    model = PumpModel("serial-pump", clock, address=address)
    async with (
        SerialSimulator([model]) as simulator,
        SerialLine(simulator.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S) as line,
        SerialPump(line, address, pump_id="serial-pump", safe_mode_s=safe_mode_s) as driver,
    ):
        yield SerialEnv(driver, model, clock, simulator, line)
