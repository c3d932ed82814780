"""Port loss and reconnection of the serial driver, over real transports.

The simulator serves the line on a loopback TCP port and the driver opens it as
`socket://127.0.0.1:PORT` (pyserial's serial_for_url), so the port can really be lost (the
connection dropped, the port unplugged) and come back. Rule A2: after reconnection the driver
reads and reports the pump's real state and never starts or speeds up a pump because of it.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from listener_wait import until
from serial_env import RELINK_BOUND_S, TEST_RECONNECT_MAX_S, TEST_REPLY_TIMEOUT_S, serial_env

from drivers.base import Alarm, PumpConfigError, PumpConnectionError, PumpState
from drivers.serial import SerialLine, SerialPump
from drivers.serial.transport import open_serial
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

LOGGER = "drivers.serial"  # the line and the pump log under it


def commands_since(sim: SerialSimulator, index: int) -> set[tuple[str, str]]:
    """(name, data) of every command the simulator received from `index` on."""
    return {(e.command.name, e.command.data) for e in sim.received[index:]}


def only_queries_and(saf: int) -> set[tuple[str, str]]:
    """A2: what re-establishing a pump may send: its configured SAF and queries, nothing else."""
    return {("SAF", str(saf)), ("", ""), ("RAT", ""), ("VOL", ""), ("DIS", "")}


async def test_dropped_socket_is_reopened_and_the_real_state_read_A2(clock: VirtualClock) -> None:
    """(a) The TCP connection drops; the driver reopens the same url by itself and reads what the
    pump really does now (stopped at its keypad while the link was gone)."""
    async with serial_env(clock, tcp=True) as env:
        await env.driver.set_rate(60)
        await env.driver.set_vtbi(100)
        assert (await env.driver.run()).state is PumpState.RUNNING
        assert env.line.connected
        env.simulator.drop_client()
        env.model.stop()  # a nurse stops the pump before the driver hears from it again
        async with asyncio.timeout(RELINK_BOUND_S):
            await env.line.wait_lost()
        assert not env.driver.connected
        assert env.line.lost_reason is not None
        async with asyncio.timeout(RELINK_BOUND_S):
            await env.driver.wait_linked()
        assert env.line.connected
        assert env.line.reconnections == 1
        assert env.driver.reconnections == 1
        assert env.simulator.connections == 2
        status = env.driver.last_status
        assert status is not None
        assert status.state is PumpState.STOPPED
        assert status.rate_ml_h == 60
        assert (await env.driver.read_status()).state is PumpState.STOPPED
        assert env.model.state is PumpState.STOPPED


async def test_pump_running_through_the_outage_stays_as_it_was_A2(clock: VirtualClock) -> None:
    """(b) The pump went on infusing while the port was unplugged: after reconnection the
    status says running at the same rate, with the volume it really infused, and nothing but
    the configured SAF and queries went to it."""
    async with serial_env(clock, tcp=True, safe_mode_s=5) as env:
        await env.driver.set_rate(120)
        await env.driver.set_vtbi(500)
        await env.driver.run()
        before = env.driver.last_contact
        mark = len(env.simulator.received)
        await env.drop_port()
        await env.clock.advance(30 * 60)
        await env.restore_port()
        status = env.driver.last_status
        assert status is not None
        assert status.state is PumpState.RUNNING
        assert status.rate_ml_h == 120
        assert status.volume_infused_ml == pytest.approx(60, abs=0.05)
        assert status.alarms == frozenset()
        assert before is not None
        assert status.last_contact > before
        assert env.driver.last_contact == status.last_contact
        assert commands_since(env.simulator, mark) <= only_queries_and(5)
        assert ("SAF", "5") in commands_since(env.simulator, mark)  # safe mode set again
        assert env.simulator.safe_mode_s(0) == 5
        assert env.model.state is PumpState.RUNNING
        assert env.model.status().rate_ml_h == 120


@pytest.mark.slow
async def test_watchdog_expired_during_the_outage_is_reported_not_restarted_A2(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """(c) SAF 1 and the port stays unplugged longer than the watchdog: the pump stops itself
    with comm_timeout. After reconnection the driver reports exactly that and leaves the pump
    stopped (A2), and feeds the watchdog again."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with serial_env(clock, tcp=True, safe_mode_s=1) as env:
        await env.driver.set_rate(80)
        await env.driver.set_vtbi(500)
        await env.driver.run()
        mark = len(env.simulator.received)
        await env.drop_port()
        await until(
            lambda: Alarm.COMM_TIMEOUT in env.model.alarms,
            env.model.listeners,
            bound_s=RELINK_BOUND_S,
        )
        assert env.model.state is PumpState.ALARM
        await env.restore_port()
        status = env.driver.last_status
        assert status is not None
        assert status.state is PumpState.ALARM
        assert status.alarms == {Alarm.COMM_TIMEOUT}
        assert Alarm.COMM_TIMEOUT in env.driver.acknowledged
        assert commands_since(env.simulator, mark) <= only_queries_and(1)
        assert env.model.state is PumpState.ALARM  # never restarted
        assert env.model.status().rate_ml_h == 80
        # the watchdog is fed again: feeds keep arriving after the re-establishment
        fed = len(env.simulator.received)
        await until(
            lambda: len(env.simulator.received) >= fed + 3,
            env.simulator.listeners,
            bound_s=RELINK_BOUND_S,
        )
        assert (await env.driver.read_status()).alarms == {Alarm.COMM_TIMEOUT}
        assert env.model.state is PumpState.ALARM
    reported = [r.getMessage() for r in caplog.records if "left as it is (A2)" in r.getMessage()]
    assert len(reported) == 1
    assert "comm_timeout" in reported[0]


async def test_commands_during_the_outage_fail_fast_and_retryably(clock: VirtualClock) -> None:
    """(d) While the port is down every command fails at once with a retryable
    PumpConnectionError naming the pump and the operation; nothing reaches the pump."""
    async with serial_env(clock, tcp=True) as env:
        await env.driver.set_rate(30)
        await env.drop_port()
        mark = len(env.simulator.received)
        loop = asyncio.get_running_loop()
        driver = env.driver
        for operation, call in [
            ("read_status", driver.read_status),
            ("set_rate", lambda: driver.set_rate(40)),
            ("set_vtbi", lambda: driver.set_vtbi(40)),
            ("run", driver.run),
            ("stop", driver.stop),
            ("clear_volume", driver.clear_volume),
        ]:
            started = loop.time()
            with pytest.raises(PumpConnectionError) as info:
                await call()
            assert loop.time() - started < TEST_REPLY_TIMEOUT_S
            assert info.value.retryable
            assert info.value.pump_id == "serial-pump"
            assert info.value.operation == operation
            assert "reopening" in info.value.message
        assert len(env.simulator.received) == mark
        await env.restore_port()
        assert (await driver.read_status()).rate_ml_h == 30


async def test_exchanges_in_flight_and_queued_fail_when_the_port_goes(clock: VirtualClock) -> None:
    """(d) The exchange on the wire and those queued behind it fail with PumpConnectionError as
    soon as the port is lost, not after their reply timeout."""
    long_timeout = 5.0
    async with serial_env(clock, tcp=True, reply_timeout_s=long_timeout) as env:
        env.model.faults.no_reply = True  # the pump hears but says nothing: exchanges hang
        mark = len(env.simulator.received)
        loop = asyncio.get_running_loop()
        started = loop.time()
        reads = [asyncio.ensure_future(env.driver.read_status()) for _ in range(3)]
        await until(
            lambda: len(env.simulator.received) > mark,
            env.simulator.listeners,
            bound_s=RELINK_BOUND_S,
        )
        env.simulator.drop_client()
        outcomes = await asyncio.gather(*reads, return_exceptions=True)
        assert all(isinstance(o, PumpConnectionError) and o.retryable for o in outcomes)
        assert loop.time() - started < long_timeout / 2
        env.model.faults.no_reply = False
        async with asyncio.timeout(RELINK_BOUND_S):
            await env.driver.wait_linked()


async def test_close_during_the_outage_ends_the_reconnect_task(clock: VirtualClock) -> None:
    """(e) Closing a line whose port is gone stops its reopening (no task is left behind; the
    no_leaked_tasks fixture checks too)."""
    model = PumpModel("p0", clock, address=0)
    async with SerialSimulator([model], tcp_port=0) as sim:
        line = SerialLine(sim.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S)
        await line.open()
        pump = SerialPump(line, 0, pump_id="p0")
        await pump.connect()
        sim.unplug()
        async with asyncio.timeout(RELINK_BOUND_S):
            await line.wait_lost()
        names = {f"serial-reconnect {sim.path}", "serial-link p0"}
        running = [t for t in asyncio.all_tasks() if t.get_name() in names]
        assert len(running) == 2
        assert not any(t.done() for t in running)
        await pump.close()
        await line.close()
        assert all(t.done() for t in running)
        assert not line.connected
        with pytest.raises(PumpConnectionError, match="not open"):
            await pump.read_status()
        await sim.plug()  # the port coming back after close is not reopened
        assert sim.connections == 1


async def test_lost_and_recovered_are_logged_once_each(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Transitions only (as Home Assistant's coordinator logs): many failed reopenings and a
    hungry watchdog during the outage give one warning when lost and one when recovered."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    attempts = 0
    enough = asyncio.Event()

    async def counting_opener(
        url: str, baud: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal attempts
        attempts += 1
        if attempts >= 5:
            enough.set()
        return await open_serial(url, baud)

    model = PumpModel("p0", clock, address=0)
    async with (
        SerialSimulator([model], tcp_port=0) as sim,
        SerialLine(
            sim.path,
            reply_timeout_s=TEST_REPLY_TIMEOUT_S,
            opener=counting_opener,
            reconnect_max_s=TEST_RECONNECT_MAX_S,
        ) as line,
        SerialPump(line, 0, pump_id="p0", safe_mode_s=1) as pump,
    ):
        sim.unplug()
        async with asyncio.timeout(RELINK_BOUND_S):
            await enough.wait()  # the first open and four failed reopenings
        await sim.plug()
        async with asyncio.timeout(RELINK_BOUND_S):
            await pump.wait_linked()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "lost" in warnings[0]
    assert "recovered" in warnings[1]
    assert sum("reopening failed" in r.getMessage() for r in caplog.records) >= 3


async def test_pty_far_side_gone_marks_the_line_down_and_keeps_trying(clock: VirtualClock) -> None:
    """A pseudo-terminal whose far side is gone: the line is down, commands fail fast and
    retryably, and the reopening goes on (quietly) until the line is closed."""
    sim = SerialSimulator([PumpModel("p0", clock, address=0)])
    sim.open()
    try:
        async with (
            SerialLine(sim.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S) as line,
            SerialPump(line, 0, pump_id="p0") as pump,
        ):
            sim.close()
            async with asyncio.timeout(RELINK_BOUND_S):
                await line.wait_lost()
                await pump.wait_unlinked()
            assert not line.connected
            assert not pump.connected
            with pytest.raises(PumpConnectionError) as info:
                await pump.read_status()
            assert info.value.retryable
            assert any(t.get_name().startswith("serial-reconnect") for t in asyncio.all_tasks())
    finally:
        sim.close()


def test_bad_reconnect_settings_are_refused() -> None:
    """Non-positive backoff settings are refused, naming the field."""
    with pytest.raises(PumpConfigError, match="reconnect_min_s"):
        SerialLine("/dev/null-line", reconnect_min_s=0)
    with pytest.raises(PumpConfigError, match="reconnect_max_s"):
        SerialLine("/dev/null-line", reconnect_max_s=-1)


async def test_line_closed_under_an_open_pump_is_waited_for(clock: VirtualClock) -> None:
    """A line closed (not lost) under a pump still open: the pump is down, waits quietly (no
    spinning, no reopening), and is re-established when the line is opened again."""
    async with SerialSimulator([PumpModel("p0", clock, address=0)]) as sim:
        line = SerialLine(sim.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S)
        await line.open()
        pump = SerialPump(line, 0, pump_id="p0", safe_mode_s=1)
        await pump.connect()
        try:
            await line.close()
            assert not pump.connected
            mark = len(sim.received)
            with pytest.raises(PumpConnectionError, match="not open"):
                await pump.read_status()
            assert len(sim.received) == mark
            await line.open()
            async with asyncio.timeout(RELINK_BOUND_S):
                await pump.wait_linked()
            assert commands_since(sim, mark) <= only_queries_and(1)
            assert (await pump.read_status()).state is PumpState.STOPPED
        finally:
            await pump.close()
            await line.close()
