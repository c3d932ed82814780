"""A3 for a serial stop (issue 19, point 3): carried to a New Era pump on a real pseudo-terminal.

A stop the pump does not answer is sent again within the command timeout and is unconfirmed only
once a retry sent after the timeout failed too; a stop the pump answers late, but within that
time, is confirmed by its real read-back, never reported as "pump did not stop". A line already
known lost makes the stop unconfirmed at once.
"""

from __future__ import annotations

import asyncio

from pump_actions import running
from serial_env import serial_env

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller.carry import carry
from pumpctl.core.machine import CommandConfirmed, CommandUnconfirmed, StopPump
from simulator.serial_server import WireEvent

#: The command timeout these tests carry the stop with (wire seconds): several of the test
#: line's tries (3 x about 0.2 s) fit in it, as the line's 3 x 0.5 s fit in the real 2 s.
TIMEOUT_S = 1.0
#: Scheduling slack on a loaded machine, on top of a stated bound.
MARGIN_S = 2.0


async def test_A3_a_serial_stop_not_answered_is_retried_and_unconfirmed_only_after_the_timeout(
    clock: VirtualClock,
) -> None:
    """A3: not confirmed within the command timeout: retry, then alarm. The line's own tries
    (3 x its reply timeout) are not the command timeout: the stop goes on being sent until the
    timeout has passed, then once more, and only then is it unconfirmed."""
    async with serial_env(clock) as env:
        await running(env)
        stops: list[float] = []

        def count(event: WireEvent) -> None:
            if event.address == env.driver.address and event.command.name == "STP":
                stops.append(event.at)

        env.simulator.listeners.append(count)
        env.model.faults.no_reply = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        fate, read = await carry(env.driver, StopPump(id=7), "inf.7", timeout_s=TIMEOUT_S)
        elapsed = loop.time() - start
        env.simulator.listeners.remove(count)
        assert isinstance(fate, CommandUnconfirmed), fate
        assert read is None
        assert elapsed >= TIMEOUT_S, f"given up after {elapsed:.2f} s, within the timeout"
        # a retry went out after the timeout had passed, and the stop then ended (bounded)
        assert stops[-1] - start >= TIMEOUT_S, [round(at - start, 2) for at in stops]
        bound = TIMEOUT_S + 2 * env.driver.stop_worst_case_s
        assert elapsed <= bound + MARGIN_S, f"{elapsed:.2f} s, bound {bound:.2f} s"
        assert env.model.state is PumpState.RUNNING  # the pump heard nothing


async def test_A3_a_serial_stop_answered_late_is_confirmed_by_its_real_read_back(
    clock: VirtualClock,
) -> None:
    """A3: a pump that stops at once but answers later than the line's own tries (yet within
    the command timeout) confirms the stop: the fate is the real read-back (stopped), never a
    false "pump did not stop"."""
    async with serial_env(clock) as env:
        await running(env)
        late_s = 0.8  # beyond the line's 3 tries (about 0.55 s), within TIMEOUT_S
        assert late_s > 3 * env.line.longest_exchange_s * 0.9
        env.model.faults.late_reply_s = late_s
        loop = asyncio.get_running_loop()
        start = loop.time()
        fate, read = await carry(env.driver, StopPump(id=8), "inf.8", timeout_s=TIMEOUT_S)
        elapsed = loop.time() - start
        env.model.faults.late_reply_s = 0
        assert isinstance(fate, CommandConfirmed), fate
        assert fate.running is False
        assert read is not None
        assert read.state is PumpState.STOPPED
        assert elapsed >= late_s  # it really was the late answer that confirmed it
        assert env.model.state is PumpState.STOPPED


async def test_A3_a_serial_stop_on_a_line_known_lost_is_unconfirmed_at_once(
    clock: VirtualClock,
) -> None:
    """A3, A2: with the port already lost nothing can be sent: unconfirmed at once, not after
    the command timeout and a retry."""
    async with serial_env(clock, tcp=True) as env:
        await running(env)
        await env.drop_port()
        loop = asyncio.get_running_loop()
        start = loop.time()
        fate, read = await carry(env.driver, StopPump(id=9), "inf.9", timeout_s=TIMEOUT_S)
        elapsed = loop.time() - start
        assert isinstance(fate, CommandUnconfirmed), fate
        assert read is None
        assert elapsed < TIMEOUT_S / 2, f"{elapsed:.2f} s"
        await env.restore_port()
