"""A connected in-process pump (simulator/memory.py) on a simulated model: the rule-level tests'
pump, with no wire. `on_the_wire` puts a test on the transports instead (a pseudo-terminal and a
broker, tests/helpers/transport_env.py): a test about the wire, or one kept there as a whole
run of the controller over each transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from pumpctl.clock import VirtualClock
from simulator.memory import MemoryPump
from simulator.model import PumpModel

#: The command timeout of the tests' in-process pump (as the MQTT environment's).
COMMAND_TIMEOUT_S = 0.5
#: The transports a controller test on the wire runs on (`pump_env`'s parameters).
WIRES = ("serial", "mqtt")
#: Runs a test taking `pump_env` on each transport instead of in process.
on_the_wire = pytest.mark.parametrize("pump_env", WIRES, indirect=True)


@dataclass
class MemoryEnv:
    """A connected MemoryPump, the model behind it and the clock."""

    driver: MemoryPump
    model: PumpModel
    clock: VirtualClock

    async def break_link(self) -> None:
        """Cut the link (commands fail at once) until `restore_link`."""
        self.model.faults.drop_connection = True

    async def restore_link(self) -> None:
        """Plug the link back in: the next command links again."""
        self.model.faults.drop_connection = False


@asynccontextmanager
async def memory_env(
    clock: VirtualClock, *, command_timeout_s: float = COMMAND_TIMEOUT_S
) -> AsyncIterator[MemoryEnv]:
    """A simulated pump and an in-process driver on it."""
    model = PumpModel("memory-pump", clock)
    async with MemoryPump(model, command_timeout_s=command_timeout_s) as driver:
        yield MemoryEnv(driver, model, clock)
