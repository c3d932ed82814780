"""The serial simulator, spoken to byte by byte over a real pseudo-terminal (no driver)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from listener_wait import until

from drivers.base import Alarm, PumpState
from drivers.serial.codec import Command, Reply, ReplyDecoder
from drivers.serial.transport import close_stream, open_serial
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import FIRMWARE, SerialSimulator

#: Bound on waiting for a frame the simulator must send (it answers in well under 1 ms).
WAIT_S = 2.0
#: How long silence is awaited when the simulator must NOT answer.
SILENCE_S = 0.3


class RawClient:
    """A client that writes bytes and reads frames, nothing more."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = ReplyDecoder()
        self.frames: list[Reply] = []

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self, within: float = WAIT_S) -> Reply:
        async with asyncio.timeout(within):
            while not self.frames:
                self.frames += self.decoder.feed(await self.reader.read(256))
        return self.frames.pop(0)

    async def ask(self, command: Command) -> Reply:
        return await self.ask_raw(command.to_bytes())

    async def ask_raw(self, data: bytes) -> Reply:
        await self.send(data)
        return await self.frame()

    async def silent(self) -> bool:
        try:
            await self.frame(within=SILENCE_S)
        except TimeoutError:
            return True
        return False


@pytest.fixture
async def model(clock: VirtualClock) -> PumpModel:
    return PumpModel("sim-0", clock, address=0)


@pytest.fixture
async def sim(model: PumpModel) -> AsyncIterator[SerialSimulator]:
    async with SerialSimulator([model]) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: SerialSimulator) -> AsyncIterator[RawClient]:
    reader, writer = await open_serial(sim.path, 19200)
    try:
        yield RawClient(reader, writer)
    finally:
        await close_stream(writer)


# -- commands and replies --------------------------------------------------------------------


async def test_identify_and_status(client: RawClient) -> None:
    assert await client.ask(Command(0, "VER")) == Reply(0, "S", FIRMWARE)
    assert await client.ask(Command(0)) == Reply(0, "S")
    # no address: the pump at address 0 answers, as one pump alone on a line does
    assert await client.ask(Command(None)) == Reply(0, "S")


async def test_query_replies_always_carry_a_decimal_point(client: RawClient) -> None:
    await client.ask(Command(0, "RAT", "200MH"))
    await client.ask(Command(0, "VOL", "1000"))
    assert (await client.ask(Command(0, "RAT"))).data == "200.0MH"
    assert (await client.ask(Command(0, "VOL"))).data == "1000.ML"
    assert (await client.ask(Command(0, "DIS"))).data == "I0.000W0.000ML"


@pytest.mark.parametrize(
    ("setting", "ml_h", "query"),
    [
        ("3333.UM", 199.98, "3333.UM"),  # nesp-lib's microlitres per minute
        ("1.5MM", 90.0, "1.500MM"),
        ("5000UH", 5.0, "5000.UH"),
        ("120MH", 120.0, "120.0MH"),
    ],
)
async def test_rate_units(
    client: RawClient, model: PumpModel, setting: str, ml_h: float, query: str
) -> None:
    assert (await client.ask(Command(0, "RAT", setting))).error is None
    assert model.status().rate_ml_h == pytest.approx(ml_h)
    assert (await client.ask(Command(0, "RAT"))).data == query


async def test_rate_without_unit_keeps_the_unit_in_force(
    client: RawClient, model: PumpModel
) -> None:
    await client.ask(Command(0, "RAT", "1MM"))
    await client.ask(Command(0, "RAT", "2"))
    assert model.status().rate_ml_h == 120


async def test_volume_units(client: RawClient, model: PumpModel) -> None:
    await client.ask(Command(0, "VOL", "UL"))
    await client.ask(Command(0, "VOL", "500"))
    assert model.status().vtbi_ml == pytest.approx(0.5)
    assert (await client.ask(Command(0, "VOL"))).data == "500.0UL"


async def test_run_stop_and_dispensed_volume(
    client: RawClient, model: PumpModel, clock: VirtualClock
) -> None:
    await client.ask(Command(0, "RAT", "60MH"))
    assert await client.ask(Command(0, "DIR", "INF")) == Reply(0, "S")
    assert await client.ask(Command(0, "RUN")) == Reply(0, "I")
    await clock.advance(600)
    assert (await client.ask(Command(0, "DIS"))).data == "I10.00W0.000ML"
    assert await client.ask(Command(0, "STP")) == Reply(0, "S")
    assert await client.ask(Command(0, "CLD", "INF")) == Reply(0, "S")
    assert model.status().volume_infused_ml == 0


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (Command(0, "XYZ"), ""),
        (Command(0, "DIR", "WDR"), "NA"),  # an infusion pump never withdraws
        (Command(0, "SAF", "300"), "OOR"),
        (Command(0, "RAT", "0MH"), "OOR"),
        (Command(0, "RAT", "12345"), "OOR"),
        (Command(0, "RUN"), "NA"),  # no rate programmed
    ],
)
async def test_errors(client: RawClient, model: PumpModel, command: Command, error: str) -> None:
    reply = await client.ask(command)
    assert reply.error == error
    assert model.state is PumpState.STOPPED
    assert model.status().rate_ml_h == 0


async def test_unknown_address_is_silent(client: RawClient) -> None:
    await client.send(Command(5).to_bytes())
    assert await client.silent()


async def test_many_pumps_answer_by_address(clock: VirtualClock) -> None:
    models = [PumpModel(f"p{a}", clock, address=a) for a in (0, 7, 99)]
    async with SerialSimulator(models) as sim:
        reader, writer = await open_serial(sim.path, 19200)
        client = RawClient(reader, writer)
        try:
            for m in models:
                await client.ask(Command(m.address, "RAT", f"{m.address + 1}MH"))
                assert (await client.ask(Command(m.address))).address == m.address
            assert [m.status().rate_ml_h for m in models] == [1, 8, 100]
        finally:
            await close_stream(writer)


async def test_client_may_close_and_reopen_the_port(sim: SerialSimulator) -> None:
    for _ in range(3):
        reader, writer = await open_serial(sim.path, 19200)
        client = RawClient(reader, writer)
        assert await client.ask(Command(0)) == Reply(0, "S")
        await close_stream(writer)


# -- safe mode -------------------------------------------------------------------------------


async def test_safe_mode_framing_follows_the_mode_after_the_command(
    client: RawClient, sim: SerialSimulator
) -> None:
    reply = await client.ask(Command(0, "SAF", "5"))  # sent basic, answered safe
    assert reply == Reply(0, "S", safe=True)
    assert sim.safe_mode_s(0) == 5
    # a basic packet in safe mode is not valid: refused, not executed
    assert await client.ask(Command(0, "RAT", "50MH")) == Reply(0, "S", "?COM", safe=True)
    assert await client.ask(Command(0, "SAF", safe=True)) == Reply(0, "S", "5", safe=True)
    assert await client.ask(Command(0, "SAF", "0", safe=True)) == Reply(0, "S")  # basic again
    assert sim.safe_mode_s(0) == 0
    # a pump accepts a safe-framed packet in basic mode too, and answers basic
    assert await client.ask(Command(0, safe=True)) == Reply(0, "S")


async def test_safe_command_with_a_bad_crc_is_never_acted_on(
    client: RawClient, model: PumpModel
) -> None:
    frame = bytearray(Command(0, "RAT", "90MH", safe=True).to_bytes())
    frame[5] ^= 0x01  # '9' -> '8': still a plausible command, but the CRC no longer fits
    await client.send(bytes(frame))
    assert await client.silent()
    assert model.status().rate_ml_h == 0


@pytest.mark.slow
async def test_watchdog_stops_the_pump_and_says_so_unsolicited(
    client: RawClient, model: PumpModel
) -> None:
    await client.ask(Command(0, "RAT", "100MH"))
    await client.ask(Command(0, "RUN"))
    assert await client.ask(Command(0, "SAF", "1")) == Reply(0, "I", safe=True)
    # nothing more is sent: within about 1 s the pump stops and sends A?T on its own
    assert await client.frame(within=3) == Reply(0, "A", "?T", safe=True)
    assert model.state is PumpState.ALARM
    assert model.alarms == {Alarm.COMM_TIMEOUT}
    # the first valid command acknowledges the alarm and is not executed
    assert await client.ask(Command(0, "RUN", safe=True)) == Reply(0, "A", "?T", safe=True)
    assert await client.ask(Command(0, safe=True)) == Reply(0, "S", safe=True)
    assert (await client.ask(Command(0, "RUN", safe=True))).error == "NA"  # still alarmed
    model.clear_alarm(Alarm.COMM_TIMEOUT)
    assert await client.ask(Command(0, "RUN", safe=True)) == Reply(0, "I", safe=True)


async def test_unsolicited_alarm_only_in_safe_mode(
    client: RawClient, model: PumpModel, sim: SerialSimulator
) -> None:
    model.raise_alarm(Alarm.MALFUNCTION)
    assert sim.unsolicited_sent == 0  # basic mode: the pump only speaks when spoken to
    assert await client.ask(Command(0)) == Reply(0, "A", "?E")
    model.clear_alarm(Alarm.MALFUNCTION)
    await client.ask(Command(0, "SAF", "9"))
    model.raise_alarm(Alarm.OCCLUSION)
    assert sim.unsolicited_sent == 1
    assert await client.frame() == Reply(0, "A", "?S", safe=True)


# -- alarms ----------------------------------------------------------------------------------


async def test_alarm_is_acknowledged_by_the_first_command_which_is_not_executed(
    client: RawClient, model: PumpModel
) -> None:
    await client.ask(Command(0, "RAT", "100MH"))
    model.raise_alarm(Alarm.OCCLUSION)
    assert await client.ask(Command(0, "RAT", "120MH")) == Reply(0, "A", "?S")
    assert model.status().rate_ml_h == 100  # not executed
    # acknowledged: the pump now shows stopped, and refuses to start while occluded
    assert await client.ask(Command(0)) == Reply(0, "S")
    assert (await client.ask(Command(0, "RUN"))).error == "NA"
    model.clear_alarm(Alarm.OCCLUSION)
    assert await client.ask(Command(0, "RUN")) == Reply(0, "I")


@pytest.mark.parametrize(
    "alarm", [Alarm.AIR_IN_LINE, Alarm.DOOR_OPEN, Alarm.EMPTY, Alarm.LOW_BATTERY]
)
async def test_alarms_the_protocol_cannot_say_show_as_stopped(
    client: RawClient, model: PumpModel, sim: SerialSimulator, alarm: Alarm
) -> None:
    await client.ask(Command(0, "RAT", "100MH"))
    await client.ask(Command(0, "RUN"))
    model.raise_alarm(alarm)
    assert await client.ask(Command(0)) == Reply(0, "S")
    line = sim.describe(model)["line"]
    assert isinstance(line, dict)
    assert line["alarms_unsayable"] == [alarm.value]  # the control interface says why


@pytest.mark.parametrize(
    ("alarm", "code"),
    [(Alarm.OCCLUSION, "S"), (Alarm.COMM_TIMEOUT, "T"), (Alarm.MALFUNCTION, "E")],
)
async def test_alarm_codes(client: RawClient, model: PumpModel, alarm: Alarm, code: str) -> None:
    model.raise_alarm(alarm)
    assert (await client.ask(Command(0))).alarm == code


# -- wire time and the packet gap ------------------------------------------------------------


@pytest.mark.slow
async def test_a_gap_inside_a_packet_discards_it(
    client: RawClient, model: PumpModel, sim: SerialSimulator
) -> None:
    await client.send(b"0RAT1")
    await asyncio.sleep(0.6)  # the gap under test (more than 0.5 s), not a synchronisation
    assert (await client.ask_raw(b"00MH\r")).error == ""  # `00MH` alone is no command
    assert sim.gap_discards == 1
    assert model.status().rate_ml_h == 0
    await client.send(b"0RAT1")
    assert (await client.ask_raw(b"00MH\r")).error is None  # no gap: one packet
    assert model.status().rate_ml_h == 100


@pytest.mark.parametrize(("baud", "least_s"), [(19200, 0.0052), (2400, 0.0416)])
async def test_wire_time_is_emulated(model: PumpModel, baud: int, least_s: float) -> None:
    async with SerialSimulator([model], baud=baud, emulate_wire_time=True) as sim:
        reader, writer = await open_serial(sim.path, 19200)
        client = RawClient(reader, writer)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            assert await client.ask(Command(0, "STP")) == Reply(0, "S")  # 5 + 5 bytes
            assert loop.time() - start >= least_s
        finally:
            await close_stream(writer)


# -- faults ----------------------------------------------------------------------------------


async def test_fault_no_reply(client: RawClient, model: PumpModel) -> None:
    model.faults.no_reply = True
    await client.send(Command(0, "RAT", "10MH").to_bytes())
    assert await client.silent()
    assert model.status().rate_ml_h == 0  # swallowed, not executed
    model.faults.no_reply = False
    assert await client.ask(Command(0)) == Reply(0, "S")


async def test_fault_late_reply(client: RawClient, model: PumpModel) -> None:
    model.faults.late_reply_s = 0.1
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await client.ask(Command(0)) == Reply(0, "S")
    assert loop.time() - start >= 0.1


@pytest.mark.parametrize("safe", [False, True])
async def test_fault_garble_replies(client: RawClient, model: PumpModel, safe: bool) -> None:
    if safe:
        await client.ask(Command(0, "SAF", "9"))
    model.faults.garble_replies = 1
    await client.send(Command(0, safe=safe).to_bytes())
    assert await client.silent()  # the garbled reply is no frame at all
    assert client.decoder.errors >= 1
    assert model.faults.garble_replies == 0
    assert await client.ask(Command(0, safe=safe)) == Reply(0, "S", safe=safe)


async def test_fault_refuse_next(client: RawClient, model: PumpModel) -> None:
    model.faults.refuse_next = 1
    assert await client.ask(Command(0, "RAT", "10MH")) == Reply(0, "S", "?NA")
    assert model.status().rate_ml_h == 0
    assert await client.ask(Command(0, "RAT", "10MH")) == Reply(0, "S")
    assert model.status().rate_ml_h == 10


async def test_fault_rate_delay(client: RawClient, model: PumpModel) -> None:
    model.faults.rate_delay_s = 0.1
    assert await client.ask(Command(0, "RAT", "10MH")) == Reply(0, "S")
    assert model.status().rate_ml_h == 0
    await until(lambda: model.status().rate_ml_h == 10, model.listeners)


async def test_fault_drop_connection_until_reset(client: RawClient, model: PumpModel) -> None:
    model.faults.drop_connection = True
    await client.send(Command(0).to_bytes())
    assert await client.silent()
    model.faults.drop_connection = False
    assert await client.ask(Command(0)) == Reply(0, "S")
