"""A3: the read-back of a serial stop the pump answered is tried for the command timeout.

A New Era pump's `STP` reply says it stopped; the `DIS` after it reads the volume at the stop.
A pump that answers that read-back late, after the line's own tries but within the command
timeout, confirms its stop; one that never answers it fails the stop after the command timeout,
within the stop's worst case. (A `STP` with no answer at all is sent again by the controller:
tests/controller/test_carry_serial_stop.py.) Real pseudo-terminal, simulated pump.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pump_actions import running
from serial_env import SerialEnv, serial_env

from drivers.base import PumpConfigError, PumpState, PumpTimeout
from drivers.serial import SerialPump
from pumpctl.clock import VirtualClock
from simulator.serial_server import WireEvent

#: The command timeout the driver is given here (wire seconds): several of the test line's
#: tries (about 0.2 s each) fit in it.
TIMEOUT_S = 1.0
#: Scheduling slack on a loaded machine, on top of a stated bound.
MARGIN_S = 0.5


def late_after_the_stop(env: SerialEnv, late_s: float) -> Callable[[WireEvent], None]:
    """A simulator listener: each reply to the pump after its `STP` comes `late_s` late (the
    `STP` itself is answered at once). The simulator reads the delay after its listeners."""
    stopped = False

    def listen(event: WireEvent) -> None:
        nonlocal stopped
        if event.address != env.driver.address:
            return
        stopped = stopped or event.command.name == "STP"
        late = stopped and event.command.name != "STP"
        env.model.faults.late_reply_s = late_s if late else 0.0

    return listen


def silent_after_the_stop(env: SerialEnv) -> Callable[[WireEvent], None]:
    """A simulator listener: the pump answers its `STP`, then nothing (the simulator handled
    the `STP` before its listeners hear of it)."""

    def listen(event: WireEvent) -> None:
        if event.address == env.driver.address and event.command.name == "STP":
            env.model.faults.no_reply = True

    return listen


async def test_A3_a_stop_whose_read_back_comes_late_is_confirmed(clock: VirtualClock) -> None:
    """A3: `STP` answered at once, `DIS` answered after the line's three tries but within the
    command timeout: the stop is confirmed by that real read-back, not raised as unconfirmed."""
    async with serial_env(clock) as env:
        await running(env)
        env.driver.command_timeout_s = TIMEOUT_S
        late_s = 4 * env.line.longest_exchange_s  # later than the line's own 3 tries
        assert late_s < TIMEOUT_S
        listen = late_after_the_stop(env, late_s)
        env.simulator.listeners.append(listen)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            status = await env.driver.stop(command_id="ledger-stop-late")
        finally:
            env.simulator.listeners.remove(listen)
            env.model.faults.late_reply_s = 0
        assert status.state is PumpState.STOPPED
        assert loop.time() - start >= late_s  # confirmed by the late read-back itself
        assert env.model.state is PumpState.STOPPED


async def test_A3_a_stop_whose_read_back_never_comes_fails_after_the_command_timeout(
    clock: VirtualClock,
) -> None:
    """A3: `STP` answered, then the pump goes silent: the read-back is tried until the command
    timeout has passed, then the stop raises (the controller then sends it again), within the
    stop's worst case."""
    async with serial_env(clock) as env:
        await running(env)
        env.driver.command_timeout_s = TIMEOUT_S
        listen = silent_after_the_stop(env)
        env.simulator.listeners.append(listen)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(PumpTimeout) as info:
                await env.driver.stop(command_id="ledger-stop-silent")
        finally:
            env.simulator.listeners.remove(listen)
            env.model.faults.no_reply = False
        elapsed = loop.time() - start
        assert info.value.command_id == "ledger-stop-silent"
        assert "DIS" in info.value.message
        assert elapsed >= TIMEOUT_S, f"read-back given up after {elapsed:.2f} s"
        bound = env.driver.stop_worst_case_s
        assert elapsed <= bound + MARGIN_S, f"{elapsed:.2f} s, bound {bound:.2f} s"
        assert (await env.driver.read_status()).state is PumpState.STOPPED


async def test_the_stop_worst_case_covers_read_backs_tried_for_the_command_timeout(
    clock: VirtualClock,
) -> None:
    """`stop_worst_case_s` grows with the command timeout (each read-back exchange may be tried
    that long), and a command timeout that is not positive is refused."""
    async with serial_env(clock) as env:
        longest = env.line.longest_exchange_s
        env.driver.command_timeout_s = 1.0
        short = env.driver.stop_worst_case_s
        env.driver.command_timeout_s = 2.0
        assert env.driver.stop_worst_case_s - short == pytest.approx(2 * 3 * 1.0)
        assert env.driver.stop_worst_case_s >= 2 * 3 * (2.0 + longest)
        with pytest.raises(PumpConfigError, match="command_timeout_s"):
            SerialPump(env.line, 1, command_timeout_s=0)
