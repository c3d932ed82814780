"""The serial protocol layer against the simulator over real pseudo-terminals.

Serial-only behaviour: many pumps on one line, the stop jumping the queue, timeouts, the safe-mode
watchdog, unsolicited alarms, framing detection, status mapping, line capacity.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from listener_wait import until
from serial_env import TEST_REPLY_TIMEOUT_S

from drivers.base import (
    Alarm,
    PumpConfigError,
    PumpConnectionError,
    PumpState,
    PumpStatus,
    PumpTimeout,
)
from drivers.serial import LineMember, SerialLine, SerialPump, check_line_capacity, line_load
from drivers.serial.codec import Command, CommandDecoder, Reply
from drivers.serial.line import EXCHANGE_RETRIES, LINE_CAPACITY_LIMIT, POLL_EXCHANGE_BYTES
from drivers.serial.status import ALARM_OF_CODE, CODE_OF_ALARM, STATUS_OF_STATE
from drivers.serial.transport import open_serial
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import FIRMWARE, SerialSimulator


@asynccontextmanager
async def line_with(
    clock: VirtualClock, n: int, **sim_options: object
) -> AsyncIterator[tuple[SerialSimulator, SerialLine, list[PumpModel]]]:
    models = [PumpModel(f"p{i}", clock, address=i) for i in range(n)]
    async with (
        SerialSimulator(models, **sim_options) as sim,  # type: ignore[arg-type]
        SerialLine(sim.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S) as line,
    ):
        yield sim, line, models


async def test_many_addresses_share_one_line(clock: VirtualClock) -> None:
    async with line_with(clock, 8) as (sim, line, models):
        pumps = [SerialPump(line, i, pump_id=f"p{i}") for i in range(8)]
        for pump in pumps:
            await pump.connect()
        try:
            statuses = await asyncio.gather(*(p.set_rate(10 + i) for i, p in enumerate(pumps)))
            for i, status in enumerate(statuses):
                assert status.pump_id == f"p{i}"
                assert status.rate_ml_h == 10 + i
                assert models[i].status().rate_ml_h == 10 + i
            assert {e.address for e in sim.received} == set(range(8))
        finally:
            for pump in pumps:
                await pump.close()


async def test_stop_jumps_the_queue(clock: VirtualClock) -> None:
    async with (
        line_with(clock, 2) as (sim, line, models),
        SerialPump(line, 0) as p0,
        SerialPump(line, 1) as p1,
    ):
        await p0.set_rate(100)
        await p0.run()
        models[1].faults.late_reply_s = 0.01  # exchanges with pump 1 take a while
        reads = [asyncio.ensure_future(p1.read_status()) for _ in range(6)]
        await until(lambda: any(e.address == 1 for e in sim.received[-1:]), sim.listeners)
        queued_at = len(sim.received)
        status = await p0.stop()
        assert status.state is PumpState.STOPPED
        stp = next(
            i for i, e in enumerate(sim.received) if e.address == 0 and e.command.name == "STP"
        )
        # at most the exchange already in flight went before the stop; 18 were queued
        assert stp <= queued_at
        await asyncio.gather(*reads)


async def test_pump_that_stops_answering_times_out(clock: VirtualClock) -> None:
    async with line_with(clock, 1) as (_sim, line, models), SerialPump(line, 0, pump_id="x") as p:
        models[0].faults.no_reply = True
        with pytest.raises(PumpTimeout) as info:
            await p.set_rate(10)
        assert info.value.pump_id == "x"
        assert info.value.operation == "set_rate"
        assert line.stats.timeouts == 3  # first try and two retries
        assert models[0].status().rate_ml_h == 0


async def test_late_replies_beyond_the_timeout_are_not_misread(clock: VirtualClock) -> None:
    async with line_with(clock, 1) as (_sim, line, models), SerialPump(line, 0, safe_mode_s=0) as p:
        await p.set_rate(33)
        await p.set_vtbi(44)
        # later than all three attempts together (a reply a little late would be matched to the
        # retry: same address and shape; harmless, as it says the same thing)
        models[0].faults.late_reply_s = 1.0
        with pytest.raises(PumpTimeout):
            await p.read_status()
        models[0].faults.late_reply_s = 0
        status = await p.read_status()
        assert (status.rate_ml_h, status.vtbi_ml) == (33, 44)


@pytest.mark.slow
async def test_safe_mode_watchdog_is_fed_then_stops_a_silent_controller(
    clock: VirtualClock,
) -> None:
    async with line_with(clock, 1) as (sim, line, models):
        pump = SerialPump(line, 0, safe_mode_s=1)
        await pump.connect()
        await pump.set_rate(50)
        await pump.run()
        start = asyncio.get_running_loop().time()
        # the driver feeds the watchdog on its own: wait for feeds spanning over one period
        await until(
            lambda: sum(1 for e in sim.received if e.command == Command(0, safe=True)) >= 4,
            sim.listeners,
        )
        assert asyncio.get_running_loop().time() - start > 1.0
        assert models[0].state is PumpState.RUNNING
        assert models[0].alarms == frozenset()
        await pump.close()  # the controller dies: nothing feeds the watchdog any more
        await until(lambda: Alarm.COMM_TIMEOUT in models[0].alarms, models[0].listeners)
        assert models[0].state is PumpState.ALARM
        # a new controller learns why the pump stopped
        async with SerialPump(line, 0, safe_mode_s=None) as again:
            assert again.safe_mode_s == 1
            status = again.last_status
            assert status is not None
            assert status.state is PumpState.ALARM
            assert Alarm.COMM_TIMEOUT in status.alarms


async def test_unsolicited_alarm_reaches_the_right_pump(clock: VirtualClock) -> None:
    async with (
        line_with(clock, 2) as (_sim, line, models),
        SerialPump(line, 0) as p0,
        SerialPump(line, 1) as p1,
    ):
        await p1.set_rate(10)
        await p1.run()
        changes = p1.status_changes()
        nxt = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0)  # subscribe before the alarm
        models[1].raise_alarm(Alarm.OCCLUSION)  # the pump says it on its own (safe mode)
        async with asyncio.timeout(5):
            status: PumpStatus = await nxt
        await changes.aclose()  # type: ignore[attr-defined]
        assert status.state is PumpState.ALARM
        assert status.alarms == {Alarm.OCCLUSION}
        assert line.stats.unsolicited == 1
        assert p1.acknowledged == []  # not acknowledged yet: no command went to it
        assert p0.last_status is not None
        assert p0.last_status.alarms == frozenset()
        await p1.read_status()
        assert p1.acknowledged == [Alarm.OCCLUSION]


async def test_basic_mode_works_end_to_end(clock: VirtualClock) -> None:
    async with line_with(clock, 1) as (sim, line, models), SerialPump(line, 0, safe_mode_s=0) as p:
        assert sim.safe_mode_s(0) == 0
        await p.set_rate(12)
        assert (await p.run()).state is PumpState.RUNNING
        assert (await p.stop()).state is PumpState.STOPPED
        assert not any(e.command.safe for e in sim.received[1:])  # only SAF 0 went safe-framed
        assert models[0].state is PumpState.STOPPED


@pytest.mark.parametrize("mode", [0, 7])
async def test_status_only_driver_detects_framing_and_sends_no_saf(
    clock: VirtualClock, mode: int
) -> None:
    async with line_with(clock, 1) as (sim, line, _models):
        async with SerialPump(line, 0, safe_mode_s=mode):
            pass
        before = len(sim.received)
        async with SerialPump(line, 0, safe_mode_s=None) as pump:
            assert pump.safe_mode_s == mode
        sent = [e.command for e in sim.received[before:]]
        assert all(c.name in {"", "SAF", "VER", "RAT", "VOL", "DIS"} and c.data == "" for c in sent)
        assert sim.safe_mode_s(0) == mode


#: The spec's table (interfaces.md section 1): status character -> state, alarms.
STATUS_TABLE = [
    ("I", PumpState.RUNNING, set()),
    ("S", PumpState.STOPPED, set()),
    ("P", PumpState.PAUSED, set()),
    ("T", PumpState.PAUSED, set()),
    ("U", PumpState.PAUSED, set()),
    ("W", PumpState.ALARM, {Alarm.MALFUNCTION}),
    ("X", PumpState.ALARM, {Alarm.MALFUNCTION}),
]
#: What the simulator's model can be made to show: the rest need a raw device.
SIMULATED_CHARS = set(STATUS_OF_STATE.values())
SIMULATED_CODES = set(CODE_OF_ALARM.values())


class RawDevice:
    """A bare pump on a raw pty answering every command with one status character.

    Only for what no simulated pump says: the model never withdraws (W), purges (X), waits for a
    trigger (U) or pauses on a timer (T), and never reports a power reset (A?R) or an
    out-of-range program (A?O). Everything the model can say is tested against the simulator.
    """

    def __init__(self, status: str, first_alarm: str | None = None) -> None:
        self.status = status
        self.first_alarm = first_alarm
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.decoder = CommandDecoder()
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        for cmd in self.decoder.feed(os.read(self.master, 1024)):
            data = {"RAT": "10.00MH", "VOL": "100.0ML", "DIS": "I1.000W0.000ML"}.get(
                cmd.name if not cmd.data else "", ""
            )
            if cmd.name == "VER":
                data = FIRMWARE
            reply = Reply(cmd.address or 0, self.status, data, safe=cmd.safe and cmd.data != "0")
            if self.first_alarm:
                reply = Reply(cmd.address or 0, "A", f"?{self.first_alarm}", safe=reply.safe)
                self.first_alarm = None
            os.write(self.master, reply.to_bytes())

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


async def show(model: PumpModel, clock: VirtualClock, char: str) -> None:
    """Bring a simulated pump to the state it shows on the line as `char` (I, S or P), having
    infused 1 ml at 10 ml/h of 100 ml."""
    model.set_rate(10)
    model.set_vtbi(100)
    model.run()
    await clock.advance(6 * 60)
    if char == "P":
        model.pause()
    elif char == "S":
        model.stop()


@pytest.mark.parametrize(
    ("char", "state", "alarms"), [row for row in STATUS_TABLE if row[0] in SIMULATED_CHARS]
)
async def test_status_chars_a_simulated_pump_shows_map_per_the_table(
    clock: VirtualClock, char: str, state: PumpState, alarms: set[Alarm]
) -> None:
    async with line_with(clock, 1) as (sim, line, models), SerialPump(line, 0, safe_mode_s=0) as p:
        await show(models[0], clock, char)
        status = await p.read_status()
        assert sim.devices[0].status_char() == char
        assert (status.state, set(status.alarms)) == (state, alarms)
        assert (status.rate_ml_h, status.vtbi_ml, status.volume_infused_ml) == (10, 100, 1)


@pytest.mark.parametrize(
    ("char", "state", "alarms"), [row for row in STATUS_TABLE if row[0] not in SIMULATED_CHARS]
)
async def test_status_chars_no_simulated_pump_shows_map_per_the_table(
    char: str, state: PumpState, alarms: set[Alarm]
) -> None:
    device = RawDevice(char)
    try:
        async with (
            SerialLine(device.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S) as line,
            SerialPump(line, 0, safe_mode_s=0) as pump,
        ):
            status = await pump.read_status()
            assert (status.state, set(status.alarms)) == (state, alarms)
            assert (status.rate_ml_h, status.vtbi_ml, status.volume_infused_ml) == (10, 100, 1)
    finally:
        device.close()


async def alarm_reported(line: SerialLine, alarm: Alarm) -> None:
    """A pump connected on `line` acknowledges `alarm` first, then keeps reporting it."""
    async with SerialPump(line, 0, safe_mode_s=0) as pump:
        assert pump.acknowledged == [alarm]
        status = await pump.read_status()
        assert status.state is PumpState.ALARM
        assert status.alarms == {alarm}


@pytest.mark.parametrize(
    ("code", "alarm"), [(c, a) for c, a in ALARM_OF_CODE.items() if c in SIMULATED_CODES]
)
async def test_every_alarm_code_a_simulated_pump_sends_is_reported(
    clock: VirtualClock, code: str, alarm: Alarm
) -> None:
    assert CODE_OF_ALARM[alarm] == code  # what the simulator sends for it
    async with line_with(clock, 1) as (_sim, line, models):
        models[0].raise_alarm(alarm)  # before anyone talks to the pump
        await alarm_reported(line, alarm)


@pytest.mark.parametrize(
    ("code", "alarm"), [(c, a) for c, a in ALARM_OF_CODE.items() if c not in SIMULATED_CODES]
)
async def test_every_alarm_code_no_simulated_pump_sends_is_reported(
    code: str, alarm: Alarm
) -> None:
    device = RawDevice("S", first_alarm=code)
    try:
        async with SerialLine(device.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S) as line:
            await alarm_reported(line, alarm)
    finally:
        device.close()


async def test_line_lost_fails_with_connection_error(clock: VirtualClock) -> None:
    models = [PumpModel("p0", clock, address=0)]
    sim = SerialSimulator(models)
    sim.open()
    try:
        async with (
            SerialLine(sim.path, reply_timeout_s=TEST_REPLY_TIMEOUT_S) as line,
            SerialPump(line, 0) as pump,
        ):
            sim.close()  # the far end disappears
            with pytest.raises((PumpConnectionError, PumpTimeout)) as info:
                await pump.read_status()
            assert info.value.retryable
    finally:
        sim.close()


async def test_line_capacity_refusal_gives_the_figures() -> None:
    line = SerialLine("/dev/null-line", baud=19200)
    pumps = [SerialPump(line, i, pump_id=f"p{i}") for i in range(10)]
    for pump in pumps:  # register without I/O, as a configuration check does
        line.register(pump._member, lambda _reply: None)
    assert line_load(line.members, 19200) <= LINE_CAPACITY_LIMIT
    with pytest.raises(PumpConfigError) as info:
        SerialPump(line, 10, pump_id="p10")
    message = info.value.message
    assert "19200 baud" in message
    assert "50%" in message
    assert "11 pump(s)" in message
    assert f"{POLL_EXCHANGE_BYTES} B" in message
    assert info.value.pump_id == "p10"
    assert info.value.operation == "configure"


def test_line_capacity_at_300_baud() -> None:
    # a safe status exchange is ~20 bytes, 0.67 s at 300 baud: one pump polled every second
    # cannot fit; polled every minute with SAF 60 it does
    with pytest.raises(PumpConfigError, match="300 baud"):
        check_line_capacity("/dev/ttyS0", 300, [LineMember(0, "a")], "a")
    check_line_capacity("/dev/ttyS0", 300, [LineMember(0, "a", 60, 60.0)], "a")


async def test_duplicate_address_is_refused(clock: VirtualClock) -> None:
    async with line_with(clock, 1) as (_sim, line, _models), SerialPump(line, 0):
        with pytest.raises(PumpConfigError, match="address 0"):
            SerialPump(line, 0, pump_id="twin")


def test_bad_configuration_is_refused() -> None:
    line = SerialLine("/dev/null-line")
    with pytest.raises(PumpConfigError, match="address"):
        SerialPump(line, 100)
    with pytest.raises(PumpConfigError, match="safe_mode_s"):
        SerialPump(line, 1, safe_mode_s=256)


async def test_garbled_reply_is_counted_and_never_acted_on(clock: VirtualClock) -> None:
    async with line_with(clock, 1) as (_sim, line, models), SerialPump(line, 0) as pump:
        await pump.set_rate(10)
        models[0].faults.garble_replies = 2
        status = await pump.read_status()
        assert status.rate_ml_h == 10
        assert line.stats.kinds.get("check", 0) >= 2


async def test_one_byte_at_a_time_transport(clock: VirtualClock) -> None:
    async def one_byte_at_a_time(url: str, baud: int) -> tuple[Any, Any]:
        reader, writer = await open_serial(url, baud)
        read = reader.read

        async def trickle(_n: int = -1) -> bytes:
            return await read(1)

        reader.read = trickle  # type: ignore[method-assign]
        return reader, writer

    models = [PumpModel("p0", clock, address=0)]
    async with (
        SerialSimulator(models) as sim,
        SerialLine(sim.path, opener=one_byte_at_a_time) as line,
        SerialPump(line, 0) as pump,
    ):
        await pump.set_rate(99.5)
        await pump.set_vtbi(12)
        status = await pump.run()
        assert (status.state, status.rate_ml_h, status.vtbi_ml) == (PumpState.RUNNING, 99.5, 12)
        assert line.stats.frame_errors == 0


async def test_socket_url_transport(clock: VirtualClock) -> None:
    """`socket://host:port` works like a device path (pyserial's serial_for_url)."""
    async with (
        SerialSimulator([PumpModel("p0", clock)], tcp_port=0) as sim,
        SerialLine(sim.path) as line,
        SerialPump(line, 0, safe_mode_s=0) as pump,
    ):
        assert sim.path.startswith("socket://127.0.0.1:")
        status = await pump.set_rate(5)
        assert (status.rate_ml_h, pump.firmware) == (5, FIRMWARE)
        assert sim.client_connected


async def test_a_stop_keeps_its_place_through_its_retries(clock: VirtualClock) -> None:
    """The stop's retries go ahead of a busy neighbour's queued reads: a stop to a silent pump
    fails after at most the neighbour's exchange already in flight and its own tries. (Were a
    read let in between the tries, each would add the neighbour's reply time.)"""
    async with (
        line_with(clock, 2) as (_sim, line, models),
        SerialPump(line, 0) as p0,
        SerialPump(line, 1) as p1,
    ):
        neighbour_s = TEST_REPLY_TIMEOUT_S * 0.95  # answered, just in time
        models[1].faults.late_reply_s = neighbour_s
        reads = [asyncio.ensure_future(p1.read_status()) for _ in range(4)]
        models[0].faults.no_reply = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(PumpTimeout):
            await p0.stop()
        elapsed = loop.time() - start
        bound = neighbour_s + (EXCHANGE_RETRIES + 1) * line.longest_exchange_s
        assert elapsed <= bound + 0.05, f"{elapsed:.3f} s, bound {bound:.3f} s"
        await asyncio.gather(*reads)
