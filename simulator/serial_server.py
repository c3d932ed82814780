"""Simulated New Era pumps behind one pseudo-terminal or TCP port: the device side of the serial
stack.

Commands are decoded and replies encoded with `drivers.serial.codec`, the driver's own codec.
Each `PumpModel` answers at its `address`. The line honours safe mode (SAF n: a watchdog on wire
time raises `comm_timeout`, replies framed in the mode in force after the command, alarms sent
unsolicited), alarm acknowledgement (the first valid command after an alarm gets `A?<code>`, is
not executed, and acknowledges it), the 0.5 s gap rule inside a packet, optional wire time per
baud, and the model's `Faults`. What the protocol cannot say (air in line, door open, empty, low
battery) shows as a stopped pump `S`; the control interface (simulator/control.py) tells why.
Served over TCP (`socket://host:port`, as a serial-to-network adapter would) the line can also be
unplugged and plugged back in, so drivers can be tested for port loss and reconnection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import termios
import tty
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drivers.base import Alarm, PumpState
from drivers.serial.codec import (
    MAX_SAFE_MODE_S,
    PACKET_GAP_S,
    RATE_UNITS,
    VOLUME_UNITS,
    Command,
    CommandDecoder,
    FrameError,
    Reply,
    format_number,
    parse_number,
    wire_seconds,
)
from drivers.serial.status import CODE_OF_ALARM, STATUS_OF_STATE
from simulator.control import ControlServer
from simulator.model import PumpModel, SimulatorError

__all__ = [
    "FIRMWARE",
    "SerialSimulator",
    "WireEvent",
    "serve",
]

#: The host a TCP-served line listens on: loopback only.
TCP_HOST = "127.0.0.1"

log = logging.getLogger(__name__)

#: What `VER` answers (an NE-1000, firmware 3.928, as in the manual).
FIRMWARE = "NE1000V3.928"
#: Most reply bytes held for a client that does not read (a real line just loses them).
MAX_OUTPUT = 64 * 1024

_RATE_SETTING = re.compile(rf"(\d*\.?\d*)({'|'.join(RATE_UNITS)})?")


@dataclass(frozen=True, slots=True)
class WireEvent:
    """A command the simulator received: event-loop time, address, command, and whether it was
    swallowed by a fault (`answered` False)."""

    at: float
    address: int
    command: Command
    answered: bool


class _UnknownCommandError(Exception):
    """A command the pump does not know: answered `?`."""


class _Device:
    """The line side of one simulated pump: framing mode, watchdog, alarm acknowledgement."""

    def __init__(self, server: SerialSimulator, model: PumpModel) -> None:
        self.server = server
        self.model = model
        self.address = model.address
        self.safe_s = 0
        self.watchdog: asyncio.TimerHandle | None = None
        self.acked: set[Alarm] = set()  # standing alarms the line has acknowledged
        self.notified: set[Alarm] = set()  # standing alarms already sent unsolicited
        self.rate_unit = "MH"
        self.volume_unit = "ML"
        self.diameter_mm = 0.0
        model.listeners.append(self._on_change)

    def detach(self) -> None:
        """Stop the watchdog and stop listening to the model."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self._on_change in self.model.listeners:
            self.model.listeners.remove(self._on_change)

    @property
    def silent(self) -> bool:
        """True while a fault keeps this pump off the line."""
        return self.model.faults.no_reply or self.model.faults.drop_connection

    def line_alarms(self) -> list[Alarm]:
        """Standing alarms the protocol can say, in reporting order."""
        standing = self.model.alarms
        return [a for a in CODE_OF_ALARM if a in standing]

    def status_char(self) -> str:
        """The status character the line shows (an alarmed pump shows as stopped)."""
        return STATUS_OF_STATE.get(self.model.state, STATUS_OF_STATE[PumpState.STOPPED])

    def reply(self, data: str = "") -> Reply:
        """A reply in the framing in force now."""
        return Reply(self.address, self.status_char(), data, safe=self.safe_s > 0)

    def handle(self, command: Command) -> Reply | None:
        """Answer one command (None: the pump stays silent)."""
        if self.silent:
            return None
        if self.safe_s and not command.safe:
            return self.reply("?COM")  # not a valid packet in safe mode: no feed, nothing done
        if self.model.faults.take_damage():
            return self.reply("?COM")  # a packet damaged on the wire: no feed, nothing done
        self.arm_watchdog()
        if self.model.faults.take_refusal():
            return self.reply("?NA")
        for alarm in self.line_alarms():
            if alarm not in self.acked:
                self.acked.add(alarm)
                return Reply(self.address, "A", f"?{CODE_OF_ALARM[alarm]}", safe=self.safe_s > 0)
        try:
            data = self.execute(command)
        except _UnknownCommandError:
            data = "?"
        except SimulatorError as exc:
            data = f"?{exc.code}"
        except ValueError:
            data = "?OOR"
        self.arm_watchdog()  # SAF may have changed the period
        return self.reply(data)

    def execute(self, command: Command) -> str:  # noqa: PLR0911, PLR0912 - one case per command
        """Carry out a command on the model; return the reply's data."""
        name, data, model = command.name, command.data, self.model
        if name == "":
            if data:
                raise _UnknownCommandError
            return ""
        if name == "VER":
            return FIRMWARE
        if name == "DIR":
            return self._direction(data)
        if name == "VOL":
            return self._volume(data)
        if name == "RAT":
            return self._rate(data)
        if name == "RUN":
            model.run()
            return ""
        if name == "STP":
            model.stop()
            return ""
        if name == "DIS":
            infused = model.status().volume_infused_ml
            return f"I{format_number(infused)}W{format_number(0)}ML"
        if name == "CLD":
            if data == "INF":
                model.clear_volume()
            elif data != "WDR":
                raise _UnknownCommandError
            return ""
        if name == "SAF":
            return self._safe_mode(data)
        if name == "DIA":
            if data == "":
                return format_number(self.diameter_mm)
            self.diameter_mm = parse_number(data)
            return ""
        raise _UnknownCommandError

    def _direction(self, data: str) -> str:
        if data == "":
            return "INF"
        if data == "INF":
            return ""
        if data in {"WDR", "REV"}:
            raise SimulatorError("NA", "an infusion pump never withdraws")
        raise _UnknownCommandError

    def _volume(self, data: str) -> str:
        if data == "":
            vtbi = self.model.status().vtbi_ml
            try:
                return format_number(vtbi / VOLUME_UNITS[self.volume_unit]) + self.volume_unit
            except ValueError:
                return format_number(vtbi) + "ML"
        if data in VOLUME_UNITS:
            self.volume_unit = data
            return ""
        self.model.set_vtbi(parse_number(data) * VOLUME_UNITS[self.volume_unit])
        return ""

    def _rate(self, data: str) -> str:
        if data == "":
            rate = self.model.status().rate_ml_h
            try:
                return format_number(rate / RATE_UNITS[self.rate_unit]) + self.rate_unit
            except ValueError:
                return format_number(rate) + "MH"
        match = _RATE_SETTING.fullmatch(data)
        if match is None:
            raise _UnknownCommandError
        unit = match[2] or self.rate_unit
        self.model.set_rate(parse_number(match[1]) * RATE_UNITS[unit])
        self.rate_unit = unit
        return ""

    def _safe_mode(self, data: str) -> str:
        if data == "":
            return str(self.safe_s)
        if not data.isdigit() or int(data) > MAX_SAFE_MODE_S:
            raise SimulatorError("OOR", f"SAF {data}: expected 0-255")
        self.safe_s = int(data)
        return ""

    # -- the watchdog and unsolicited alarms -------------------------------------------------

    def arm_watchdog(self) -> None:
        """(Re)start the safe-mode watchdog on wire time; stop it in basic mode."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.safe_s:
            loop = asyncio.get_running_loop()
            self.watchdog = loop.call_later(self.safe_s, self._watchdog_expired)

    def _watchdog_expired(self) -> None:
        self.watchdog = None
        log.info("pump %s: no valid packet for %s s: stop, alarm T", self.address, self.safe_s)
        self.model.stop()
        if Alarm.COMM_TIMEOUT not in self.model.alarms:
            self.model.raise_alarm(Alarm.COMM_TIMEOUT)

    def _on_change(self) -> None:
        standing = self.model.alarms
        self.acked &= standing
        self.notified &= standing
        if not self.safe_s or self.silent:
            return
        for alarm in self.line_alarms():
            if alarm not in self.acked and alarm not in self.notified:
                self.notified.add(alarm)
                reply = Reply(self.address, "A", f"?{CODE_OF_ALARM[alarm]}", safe=True)
                self.server.unsolicited_sent += 1
                self.server.transmit(reply.to_bytes())


class _TcpClient(asyncio.Protocol):
    """One TCP connection to a TCP-served line: bytes in go to the simulator's decoder."""

    def __init__(self, simulator: SerialSimulator) -> None:
        self.simulator = simulator
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.simulator._client_connected(self)

    def data_received(self, data: bytes) -> None:
        if self.simulator._client is self:
            self.simulator._receive(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.simulator._client_gone(self)


class SerialSimulator:
    """Serves `models` (each at its `address`) on one pseudo-terminal, or TCP port, until closed.

    Use as an async context manager; `path` is what a client opens: the terminal (e.g.
    `/dev/pts/7`), or `socket://127.0.0.1:PORT` when `tcp_port` is given (0: any free port).
    Over TCP one client is served at a time (a newer connection replaces an older one).
    """

    def __init__(
        self,
        models: Iterable[PumpModel],
        *,
        baud: int = 19200,
        emulate_wire_time: bool = False,
        tcp_port: int | None = None,
    ) -> None:
        self.devices: dict[int, _Device] = {}
        self._models = list(models)
        for model in self._models:
            if not 0 <= model.address <= 99:
                raise ValueError(f"pump {model.pump_id}: address {model.address} not in 0-99")
            if model.address in {m.address for m in self._models if m is not model}:
                raise ValueError(f"address {model.address} is used by two pumps")
        self.baud = baud
        self.emulate_wire_time = emulate_wire_time
        self.path = ""
        #: Every command received, in order (tests wait on `listeners`).
        self.received: list[WireEvent] = []
        self.listeners: list[Callable[[WireEvent], None]] = []
        self.gap_discards = 0
        self.unsolicited_sent = 0
        self.frame_errors = 0
        self._decoder = CommandDecoder(on_error=self._frame_error)
        self._master = -1
        self._slave = -1
        self._last_rx = 0.0
        self._out = bytearray()
        self._writing = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tcp_port = tcp_port
        #: TCP connections accepted so far (a TCP-served line).
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._client: _TcpClient | None = None

    async def __aenter__(self) -> SerialSimulator:
        if self.tcp_port is None:
            self.open()
        else:
            await self.open_tcp(self.tcp_port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def model(self, address: int) -> PumpModel:
        """The model answering at `address`."""
        return self.devices[address].model

    def safe_mode_s(self, address: int) -> int:
        """The safe-mode period in force at `address` (0: basic mode)."""
        return self.devices[address].safe_s

    def open(self) -> str:
        """Open the pseudo-terminal (raw, both ends) and start serving; returns its path."""
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        tty.setraw(self._master)
        tty.setraw(self._slave)
        # our own handle on the far side stays open, so a client closing does not end the line
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._attach_devices()
        self._loop.add_reader(self._master, self._readable)
        return self.path

    async def open_tcp(self, port: int = 0) -> str:
        """Serve the line on TCP port `port` of loopback (0: any free); returns its url."""
        self._loop = asyncio.get_running_loop()
        self._attach_devices()
        await self._listen(port)
        return self.path

    def _attach_devices(self) -> None:
        for model in self._models:
            self.devices[model.address] = _Device(self, model)

    async def _listen(self, port: int) -> None:
        assert self._loop is not None
        self._server = await self._loop.create_server(
            lambda: _TcpClient(self), TCP_HOST, port, reuse_address=True
        )
        self.tcp_port = self._server.sockets[0].getsockname()[1]
        self.path = f"socket://{TCP_HOST}:{self.tcp_port}"

    @property
    def client_connected(self) -> bool:
        """True while a TCP client is connected (a TCP-served line)."""
        return self._client is not None

    def drop_client(self) -> None:
        """Close the TCP client's connection (a blip: the line accepts a new one at once)."""
        client, self._client = self._client, None
        self._lost_client_bytes()
        if client is not None and client.transport is not None:
            client.transport.close()

    def unplug(self) -> None:
        """Unplug the TCP-served line: drop the client and refuse connections until `plug`.

        The pumps go on as they were (running, safe-mode watchdogs on wire time): only the
        controller's link is gone.
        """
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_client()

    async def plug(self) -> None:
        """Plug the TCP-served line back in: accept connections on the same port again."""
        if self._server is None and self.tcp_port is not None:
            await self._listen(self.tcp_port)

    def _client_connected(self, client: _TcpClient) -> None:
        if self._server is None:  # unplugged between the accept and now
            assert client.transport is not None
            client.transport.close()
            return
        if self._client is not None:
            log.info("serial simulator %s: a new client replaces the old one", self.path)
            self.drop_client()
        self._client = client
        self.connections += 1
        self._decoder.reset()

    def _client_gone(self, client: _TcpClient) -> None:
        if self._client is client:
            self._client = None
            self._lost_client_bytes()

    def _lost_client_bytes(self) -> None:
        """Bytes on their way to or from a gone client are lost, as on an unplugged cable."""
        self._decoder.reset()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def close(self) -> None:
        """Stop serving and close the pseudo-terminal. Idempotent."""
        for device in self.devices.values():
            device.detach()
        self.devices.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.unplug()
        if self._master >= 0 and self._loop is not None:
            self._loop.remove_reader(self._master)
            if self._writing:
                self._loop.remove_writer(self._master)
                self._writing = False
            os.close(self._master)
            os.close(self._slave)
        self._master = self._slave = -1

    def describe(self, model: PumpModel) -> dict[str, object]:
        """What the line shows of `model` (for the control interface)."""
        device = self.devices.get(model.address)
        if device is None or device.model is not model:
            return {}
        return {
            "line": {
                "status_char": device.status_char(),
                "safe_mode_s": device.safe_s,
                "alarms_acknowledged": sorted(a.value for a in device.acked),
                "alarms_unsayable": sorted(a.value for a in model.alarms if a not in CODE_OF_ALARM),
            }
        }

    def flush_input_of_client(self) -> None:
        """Drop bytes written to the client that it has not read (as unplugging would)."""
        if self._slave >= 0:
            termios.tcflush(self._slave, termios.TCIFLUSH)

    # -- receiving --------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # cannot happen while we hold the far side; stop cleanly
            log.warning("serial simulator %s: read failed: %s", self.path, exc)
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        """Bytes from the client (pty or TCP): decode, honour the gap rule, answer."""
        assert self._loop is not None
        now = self._loop.time()
        if self._decoder.pending and now - self._last_rx > PACKET_GAP_S:
            self._decoder.reset()
            self.gap_discards += 1
        self._last_rx = now
        for command in self._decoder.feed(data):
            self._handle(command, now)

    def _frame_error(self, exc: FrameError) -> None:
        self.frame_errors += 1
        log.debug("serial simulator %s: dropped bytes: %s", self.path, exc)

    def _handle(self, command: Command, now: float) -> None:
        address = 0 if command.address is None else command.address
        device = self.devices.get(address)
        reply = device.handle(command) if device is not None else None
        event = WireEvent(now, address, command, answered=reply is not None)
        self.received.append(event)
        for listener in list(self.listeners):
            listener(event)
        if device is None or reply is None:
            return
        frame = reply.to_bytes()
        if device.model.faults.take_garble():
            frame = _garble(frame, safe=reply.safe)
        delay = device.model.faults.late_reply_s
        if self.emulate_wire_time:
            delay += wire_seconds(len(command.to_bytes()) + len(frame), self.baud)
        if delay > 0:
            assert self._loop is not None
            timer = self._loop.call_later(delay, self._transmit_later, frame)
            self._timers.add(timer)
        else:
            self.transmit(frame)

    # -- sending ----------------------------------------------------------------------------

    def _transmit_later(self, frame: bytes) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > now}
        self.transmit(frame)

    def transmit(self, frame: bytes) -> None:
        """Send bytes to the client (buffered while the terminal is full; lost if unplugged)."""
        if self._client is not None:
            transport = self._client.transport
            if transport is None or transport.is_closing():
                return
            if transport.get_write_buffer_size() + len(frame) > MAX_OUTPUT:
                log.warning("serial simulator %s: nobody reads: reply dropped", self.path)
                return
            transport.write(frame)
            return
        if self._master < 0:
            return
        if len(self._out) + len(frame) > MAX_OUTPUT:
            log.warning("serial simulator %s: nobody reads: reply dropped", self.path)
            return
        self._out += frame
        self._write_some()

    def _write_some(self) -> None:
        assert self._loop is not None
        try:
            written = os.write(self._master, self._out)
        except (BlockingIOError, InterruptedError):
            written = 0
        del self._out[:written]
        if self._out and not self._writing:
            self._loop.add_writer(self._master, self._write_some)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._master)
            self._writing = False


def _garble(frame: bytes, *, safe: bool) -> bytes:
    """Flip one bit: in a safe frame's payload (the CRC catches it), or make a basic reply's
    status byte non-ASCII (the codec rejects it; basic mode has no check for subtler flips)."""
    garbled = bytearray(frame)
    garbled[3] ^= 0x01 if safe else 0x80
    return bytes(garbled)


async def serve(
    models: list[PumpModel],
    stop: asyncio.Event,
    *,
    announce: Callable[[str], None],
    baud: int = 19200,
    emulate_wire_time: bool = True,
    control_host: str = "127.0.0.1",
    control_port: int = 0,
    tcp_port: int | None = None,
) -> None:
    """Serve `models` on a pseudo-terminal (or TCP `tcp_port`), with a control server, until
    `stop` is set.

    `announce` gets the pseudo-terminal's path (or `socket://127.0.0.1:PORT`) first, then
    `control: tcp://host:port`.
    """
    async with (
        SerialSimulator(
            models, baud=baud, emulate_wire_time=emulate_wire_time, tcp_port=tcp_port
        ) as simulator,
        ControlServer(
            {m.pump_id: m for m in models},
            host=control_host,
            port=control_port,
            extra=simulator.describe,
        ) as control,
    ):
        announce(simulator.path)
        announce(f"control: {control.address}")
        await stop.wait()
