"""A connected driver and its simulated pump over a chosen transport (serial pty/TCP, or MQTT on
a connection of the driver's own or on a shared bus)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from mqtt_env import mqtt_env
from serial_env import serial_env

from pumpctl.clock import VirtualClock


@asynccontextmanager
async def transport_env(
    request: pytest.FixtureRequest, clock: VirtualClock, *, tcp: bool
) -> AsyncIterator[Any]:
    """The env of `request.param`'s transport; a serial line served over TCP when `tcp`."""
    if request.param == "serial":
        async with serial_env(clock, tcp=tcp) as env:
            yield env
    else:
        broker = request.getfixturevalue("broker")
        async with mqtt_env(clock, broker, bus=request.param == "mqtt-bus") as env:
            yield env
