"""Driver fixtures: `pump_env`, one connected pump per transport for the conformance suite.

Each env has `.driver` (a connected drivers.base.Pump), `.model` (the simulated PumpModel),
`.clock` (VirtualClock) and `async break_link()` / `async restore_link()`; `port_env` envs also
have `async drop_port()` / `async restore_port()` (serial over `socket://`: the TCP port is
unplugged; MQTT: the broker is killed and restarted).
The serial env is tests/helpers/serial_env.py; the MQTT env is tests/helpers/mqtt_env.py
(`mqtt-bus`: the driver on an `MqttBus` shared with a neighbour pump).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from transport_env import transport_env

from pumpctl.clock import VirtualClock


@pytest.fixture(params=["serial", "mqtt", "mqtt-bus"])
async def pump_env(request: pytest.FixtureRequest, clock: VirtualClock) -> AsyncIterator[Any]:
    """A connected driver and its simulated pump, over each transport in turn."""
    async with transport_env(request, clock, tcp=False) as env:
        yield env


@pytest.fixture(params=["serial", "mqtt", "mqtt-bus"])
async def port_env(request: pytest.FixtureRequest, clock: VirtualClock) -> AsyncIterator[Any]:
    """A connected driver whose port can be lost and come back, over each transport in turn."""
    async with transport_env(request, clock, tcp=True) as env:
        yield env
