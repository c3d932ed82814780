"""A command damaged on the wire (the pump answers `?COM`, bad packet) is sent again, not refused.

interfaces.md section 1: `?COM` means the pump received a bad packet; it did nothing. Sending
the same absolute command again is safe; only a line that keeps damaging it is an error, and a
retryable one (check the line), never a refusal by the pump.
"""

from __future__ import annotations

import pytest
from serial_env import serial_env

from drivers.base import PumpProtocolError, PumpState
from drivers.serial.line import EXCHANGE_RETRIES
from pumpctl.clock import VirtualClock


@pytest.mark.parametrize("safe_mode_s", [None, 5], ids=["basic", "safe"])
async def test_a_damaged_command_is_sent_again_and_executed_once(
    clock: VirtualClock, safe_mode_s: int | None
) -> None:
    async with serial_env(clock, safe_mode_s=safe_mode_s) as env:
        env.model.faults.damage_commands = 1
        status = await env.driver.set_rate(125)
        assert status.rate_ml_h == 125
        assert env.model.faults.damage_commands == 0  # the damage was met, and got over


async def test_a_damaged_stop_still_stops_the_pump_I1_A3(clock: VirtualClock) -> None:
    """I1's stop goes through a line that damages its first packet."""
    async with serial_env(clock) as env:
        await env.driver.set_vtbi(500)
        await env.driver.set_rate(100)
        await env.driver.run()
        env.model.faults.damage_commands = 1
        status = await env.driver.stop()
        assert status.state is PumpState.STOPPED
        assert env.model.state is PumpState.STOPPED


async def test_a_line_that_keeps_damaging_is_a_retryable_protocol_error(
    clock: VirtualClock,
) -> None:
    async with serial_env(clock) as env:
        env.model.faults.damage_commands = EXCHANGE_RETRIES + 1
        with pytest.raises(PumpProtocolError, match=r"\?COM") as caught:
            await env.driver.set_rate(90)
        assert caught.value.retryable
        assert caught.value.operation == "set_rate"
        assert env.model.status().rate_ml_h != 90  # nothing damaged was executed
        assert (await env.driver.set_rate(90)).rate_ml_h == 90  # the line is usable again
