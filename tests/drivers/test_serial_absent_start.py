"""A serial pump that cannot be reached when the service starts, over real pseudo-terminals.

Rule A2 on a gateway: an unplugged USB adapter, or a pump that does not answer, must not stop
the supervision of every other pump. The line and the pump enter without raising; the pump
reports its link lost (`connected` False, commands fail at once and retryably, one warning names
it, its port and why); the driver keeps trying by itself, quietly. When the device appears (a
symlink to a pty the simulator serves, made after the start) or the pump answers, the pump is
identified as on a normal connect (framing, VER, status read) and linked, its real state read
and left as it is. Configuration errors still refuse.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from listener_wait import until
from serial_env import RELINK_BOUND_S, TEST_RECONNECT_MAX_S, TEST_REPLY_TIMEOUT_S

from drivers.base import PumpConfigError, PumpConnectionError, PumpState
from drivers.serial import SerialLine, SerialPump
from drivers.serial.transport import open_serial
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

LOGGER = "drivers.serial"
#: Backoff cap between attempts to link a silent pump, for tests (the default is 5 s).
TEST_RELINK_MAX_S = 0.2
#: What a first contact sends: the configured SAF, VER and the status queries, nothing else.
FIRST_CONTACT = {("SAF", "5"), ("VER", ""), ("RAT", ""), ("VOL", ""), ("DIS", "")}


def commands(sim: SerialSimulator, address: int = 0) -> set[tuple[str, str]]:
    """(name, data) of every command the simulator received for `address`."""
    return {(e.command.name, e.command.data) for e in sim.received if e.address == address}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The driver's own warnings (a failed stop is logged by drivers.base, at ERROR)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith(LOGGER)
    ]


async def test_a_missing_device_starts_unlinked_and_links_when_it_appears_A2(
    clock: VirtualClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(1) The path does not exist: no exception, the pump is not linked and says why; many
    quiet reopenings later the path appears, and the pump is identified and linked, its real
    state (running, from its keypad) read and left as it is."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    device = tmp_path / "ttyUSB-late"
    attempts = 0
    tried = asyncio.Event()

    async def counting_opener(
        url: str, baud: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal attempts
        attempts += 1
        if attempts >= 5:
            tried.set()
        return await open_serial(url, baud)

    model = PumpModel("bed-1", clock, address=0)
    model.set_rate(60)
    model.set_vtbi(100)
    model.run()  # started at the pump's keypad: the driver must report it, not change it
    async with (
        SerialLine(
            str(device),
            reply_timeout_s=TEST_REPLY_TIMEOUT_S,
            opener=counting_opener,
            reconnect_max_s=TEST_RECONNECT_MAX_S,
        ) as line,
        SerialPump(line, 0, pump_id="bed-1", relink_max_s=TEST_RELINK_MAX_S) as pump,
    ):
        assert not line.connected
        assert line.lost_reason is not None
        assert str(device) in line.lost_reason
        assert not pump.connected
        assert pump.last_status is None
        assert pump.is_stale()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PumpConnectionError) as info:
            await pump.read_status()
        assert loop.time() - started < TEST_REPLY_TIMEOUT_S  # at once, nothing sent
        assert info.value.retryable
        assert info.value.operation == "read_status"
        assert str(device) in info.value.message
        with pytest.raises(PumpConnectionError):
            await pump.stop()
        async with asyncio.timeout(RELINK_BOUND_S):
            await tried.wait()  # the first open and four failed reopenings, all quiet
        assert warnings_of(caplog) == [
            f"bed-1: starts unlinked (port {device}, address 0): {line.lost_reason};"
            " it is linked when it answers (A2)"
        ]
        async with SerialSimulator([model]) as sim:
            device.symlink_to(sim.path)  # the adapter is plugged in
            async with asyncio.timeout(RELINK_BOUND_S):
                await pump.wait_linked()
            assert line.connected
            assert line.reconnections == 0  # a first opening, late, not a reconnection
            assert pump.firmware is not None
            assert pump.safe_mode_s == 5
            assert sim.safe_mode_s(0) == 5
            status = pump.last_status
            assert status is not None
            assert status.state is PumpState.RUNNING
            assert status.rate_ml_h == 60
            assert commands(sim) <= FIRST_CONTACT | {("", "")}  # "": watchdog feeds
            assert commands(sim) >= FIRST_CONTACT
            assert model.state is PumpState.RUNNING
            assert (await pump.read_status()).rate_ml_h == 60
    warnings = warnings_of(caplog)
    assert len(warnings) == 2, warnings
    assert warnings[1].startswith(f"bed-1: linked (port {device}, address 0, firmware ")
    assert "running" in warnings[1]


async def test_a_silent_pump_starts_unlinked_its_neighbour_is_served_and_it_links_when_it_answers(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """(2) Two pumps on one line, the second does not answer at the start (no_reply): both
    enter, the first is linked and read, the second is not linked and is probed quietly (one
    try each, DEBUG only) until it answers; then it is identified and linked."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    answering = PumpModel("bed-1", clock, address=0)
    silent = PumpModel("bed-2", clock, address=1)
    silent.faults.no_reply = True
    async with (
        SerialSimulator([answering, silent]) as sim,
        SerialLine(
            sim.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S, reconnect_max_s=TEST_RECONNECT_MAX_S
        ) as line,
        SerialPump(line, 0, pump_id="bed-1", relink_max_s=TEST_RELINK_MAX_S) as first,
        SerialPump(line, 1, pump_id="bed-2", relink_max_s=TEST_RELINK_MAX_S) as second,
    ):
        assert first.connected
        assert (await first.read_status()).state is PumpState.STOPPED
        assert not second.connected
        assert second.last_status is None
        with pytest.raises(PumpConnectionError, match="not linked yet"):
            await second.set_rate(50)
        at_start = sum(e.address == 1 for e in sim.received)
        # the connect's own tries (SAF sent 3 times), then probes: wait for three of them
        async with asyncio.timeout(RELINK_BOUND_S):
            await until(
                lambda: sum(e.address == 1 for e in sim.received) >= at_start + 3, sim.listeners
            )
        assert commands(sim, 1) == {("SAF", "5")}  # nothing but the framing was tried
        assert first.connected  # its neighbour kept the line
        assert (await first.read_status()).state is PumpState.STOPPED
        warnings = warnings_of(caplog)
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"bed-2: starts unlinked (port {sim.path}, address 1): ")
        assert "no valid reply" in warnings[0]
        infos = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.INFO and r.getMessage().startswith("bed-2:")
        ]
        assert len(infos) == 3, infos  # the connect's three tries; the probes are DEBUG
        silent.faults.no_reply = False  # the pump is switched on
        async with asyncio.timeout(RELINK_BOUND_S):
            await second.wait_linked()
        assert second.firmware is not None
        assert sim.safe_mode_s(1) == 5
        assert commands(sim, 1) <= FIRST_CONTACT | {("", "")}
        assert (await second.read_status()).state is PumpState.STOPPED
        assert silent.state is PumpState.STOPPED
    warnings = warnings_of(caplog)
    assert len(warnings) == 2, warnings
    assert warnings[1].startswith(f"bed-2: linked (port {sim.path}, address 1, firmware ")


async def test_an_unlinked_pump_and_its_line_close_cleanly(
    clock: VirtualClock, tmp_path: Path
) -> None:
    """Closing a pump that never linked ends its link task and the line's reopening (the
    autouse fixture fails a test that leaks a task); nothing is reopened afterwards."""
    del clock
    line = SerialLine(str(tmp_path / "never"), reconnect_max_s=TEST_RECONNECT_MAX_S)
    await line.open()
    pump = SerialPump(line, 3, pump_id="bed-4")
    await pump.connect()
    names = {f"serial-reconnect {line.url}", "serial-link bed-4"}
    running = [t for t in asyncio.all_tasks() if t.get_name() in names]
    assert len(running) == 2
    await pump.close()
    await line.close()
    assert all(t.done() for t in running)
    assert line.lost_reason is None
    with pytest.raises(PumpConnectionError, match="not open"):
        await pump.read_status()


async def test_configuration_errors_still_refuse(tmp_path: Path) -> None:
    """What no retry can cure refuses as before: a baud rate a New Era pump does not have, a
    URL pyserial cannot read, an address out of range, a line never opened."""
    with pytest.raises(PumpConfigError, match="baud 1234"):
        await SerialLine(str(tmp_path / "tty"), baud=1234).open()
    with pytest.raises(PumpConfigError, match="cannot be opened as given"):
        await SerialLine("nosuchscheme://x").open()
    line = SerialLine(str(tmp_path / "tty"))
    with pytest.raises(PumpConfigError, match="address 100"):
        SerialPump(line, 100)
    with pytest.raises(PumpConnectionError, match="not open"):
        await SerialPump(line, 0).connect()  # the line was never opened: a caller's mistake
    with pytest.raises(PumpConfigError, match="relink_max_s"):
        SerialPump(line, 0, relink_max_s=0)
