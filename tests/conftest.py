"""Shared fixtures: leaked-task detection, the virtual clock, and real Mosquitto brokers."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mosquitto_env import Broker, mosquitto_binary
from needs import free_port

from pumpctl.clock import VirtualClock


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail any test that leaves asyncio tasks running behind it (as pymodbus does)."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {names}")


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
