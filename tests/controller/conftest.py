"""Controller fixtures: `pump_env`, one connected pump: in process on the simulator's model (no
wire) for the rules; on each transport (serial pty, MQTT) for a test marked `on_the_wire`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from memory_env import memory_env
from transport_env import transport_env

from pumpctl.clock import VirtualClock


@pytest.fixture(params=["memory"])
async def pump_env(request: pytest.FixtureRequest, clock: VirtualClock) -> AsyncIterator[Any]:
    """A connected driver and its simulated pump on the virtual clock: in process, or on the
    transport `on_the_wire` names (memory_env.py)."""
    if request.param == "memory":
        async with memory_env(clock) as env:
            yield env
        return
    async with transport_env(request, clock, tcp=False) as env:
        yield env
