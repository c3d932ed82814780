"""Interoperability: nesp-lib, an independent New Era client, drives the serial simulator.

nesp-lib is blocking (pyserial, and a heartbeat thread on real time in safe mode): each step runs
in a worker thread, bounded by asyncio.timeout, while the simulator serves on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import nesp_lib
import pytest

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

T = TypeVar("T")
STEP_TIMEOUT_S = 10


async def step(call: Callable[[], T]) -> T:
    """Run one blocking nesp-lib call in a thread, bounded."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        return await asyncio.to_thread(call)


@pytest.mark.parametrize("safe_mode_s", [0, 5], ids=["basic", "safe"])
async def test_nesp_lib_drives_the_simulator(clock: VirtualClock, safe_mode_s: int) -> None:
    model = PumpModel("nesp", clock, address=3)
    async with SerialSimulator([model]) as sim:
        port = await step(lambda: nesp_lib.Port(sim.path, 19200))
        try:
            pump = await step(
                lambda: nesp_lib.Pump(port, address=3, safe_mode_timeout_s=safe_mode_s)
            )
            try:
                # identify
                assert pump.model_number == 1000
                assert pump.firmware_version == (3, 928)
                assert sim.safe_mode_s(3) == safe_mode_s

                def program() -> None:
                    pump.pumping_direction = nesp_lib.PumpingDirection.INFUSE
                    pump.pumping_rate_ml_per_min = 200 / 60  # sent as RAT3333.UM
                    pump.pumping_volume_ml = 50
                    pump.run(wait_while_running=False)

                await step(program)
                assert model.state is PumpState.RUNNING
                assert model.status().rate_ml_h == pytest.approx(200, abs=0.1)
                assert model.status().vtbi_ml == 50
                assert await step(lambda: pump.status) is nesp_lib.Status.INFUSING
                rate = await step(lambda: pump.pumping_rate_ml_per_min)
                assert rate * 60 == pytest.approx(200, abs=0.1)
                assert await step(lambda: pump.pumping_volume_ml) == 50

                await clock.advance(6 * 60)  # 200 ml/h for 6 min: 20 ml
                assert await step(lambda: pump.volume_infused_ml) == pytest.approx(20)

                await step(lambda: pump.stop(wait_while_running=True))
                assert model.state is PumpState.STOPPED
                assert await step(lambda: pump.status) is nesp_lib.Status.STOPPED
            finally:
                # back to basic mode: this also stops nesp-lib's heartbeat thread
                await step(lambda: setattr(pump, "safe_mode_timeout_s", 0))
            assert sim.safe_mode_s(3) == 0
        finally:
            await step(port.close)
