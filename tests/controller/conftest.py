"""Controller fixtures: `pump_env`, one connected pump per transport (serial pty, MQTT)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from transport_env import transport_env

from pumpctl.clock import VirtualClock


@pytest.fixture(params=["serial", "mqtt"])
async def pump_env(request: pytest.FixtureRequest, clock: VirtualClock) -> AsyncIterator[Any]:
    """A connected driver and its simulated pump on the virtual clock, per transport."""
    async with transport_env(request, clock, tcp=False) as env:
        yield env
