"""Shared fixtures: leaked-task detection, the virtual clock, and real Mosquitto brokers."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from leaks import tasks_checked
from mosquitto_env import Broker, mosquitto_binary
from needs import free_port

from pumpctl.clock import VirtualClock


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail any test that leaves asyncio tasks running behind it, on the test's own loop (a
    module on a loop of its own imports tests/helpers/leaks.py's check for that loop)."""
    async with tasks_checked():
        yield


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clinical clock at a fixed start."""
    return VirtualClock()


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh Mosquitto for this test (started from the binary on a free port)."""
    binary = mosquitto_binary()
    with tempfile.TemporaryDirectory(prefix="pumpctl-mosq-") as tmp:
        b = Broker(binary=binary, port=free_port(), workdir=Path(tmp))
        b.start()
        try:
            yield b
        finally:
            b.stop()
