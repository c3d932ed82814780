"""The New Era protocol layer: one exchange at a time on a line shared by up to 100 pumps.

`SerialLine` owns one byte stream: requests wait in a priority queue (a stop jumps ahead of
everything queued), one exchange is in flight at a time, a reply is matched to its request by
address and shape, idempotent requests are retried, unsolicited alarm frames (safe mode) go to
their pump. `SerialPump` implements `drivers.base.Pump` on a line and keeps the safe-mode
watchdog fed. Wire time only (`asyncio.timeout`): constants below are named after the spec
(interfaces.md section 1). Rule A3: every command is read back; the methods return that reading.

A lost port (adapter unplugged, `socket://` connection dropped, pty gone) marks the line down:
in-flight and new commands fail at once with `PumpConnectionError`, and an owned task reopens the
same url with capped exponential backoff and jitter. Once it is back each pump re-establishes
its framing and safe mode with `SAF` and queries only, then reads and publishes its real state
(A2: a pump that stopped while the link was down is reported, never restarted or sped up).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum

from drivers.backoff import backoff_delay
from drivers.base import (
    Alarm,
    Pump,
    PumpCommandRejected,
    PumpConfigError,
    PumpConnectionError,
    PumpError,
    PumpNotConfirmed,
    PumpProtocolError,
    PumpState,
    PumpStatus,
    PumpTimeout,
    StatusBroadcast,
)
from drivers.serial.codec import (
    ALARM_CODES,
    MAX_BUFFER,
    MAX_PAYLOAD,
    RATE_UNITS,
    VOLUME_UNITS,
    Command,
    FrameError,
    Reply,
    ReplyDecoder,
    format_number,
    parse_dispensed,
    parse_quantity,
)
from drivers.serial.transport import Opener, TransportError, close_stream, open_serial

__all__ = [
    "ALARM_OF_CODE",
    "ALARM_OF_STATUS",
    "DEFAULT_BAUD",
    "DEFAULT_SAFE_MODE_S",
    "LINE_CAPACITY_LIMIT",
    "LINK_TIMEOUT_S",
    "PACKET_GAP_S",
    "RECONNECT_MAX_S",
    "RECONNECT_MIN_S",
    "REPLY_TIMEOUT_S",
    "STATE_OF_STATUS",
    "LineMember",
    "Priority",
    "SerialLine",
    "SerialPump",
    "check_line_capacity",
    "line_load",
]

log = logging.getLogger(__name__)

#: Wait for a reply this long beyond its own wire time (a pump answers within milliseconds).
REPLY_TIMEOUT_S = 0.5
#: Retries of a request whose reply timed out or failed its check (all our commands are
#: absolute, so sending one twice does no harm).
EXCHANGE_RETRIES = 2
#: An alarm reply means the command was not executed (it acknowledged one alarm): send again,
#: once for each alarm code a pump can have standing, so a stop gets through them all (A1, A3).
ALARM_RESENDS = len(ALARM_CODES)
#: A3: stops sent before a read-back still showing the motor moving is raised as not confirmed.
STOP_ATTEMPTS = 2
#: Status characters of a moving motor (infusing, withdrawing, purging): not a confirmed stop.
MOVING_STATUS = frozenset("IWX")
#: A line may be at most this busy with polling and watchdog feeding (interfaces.md section 1).
LINE_CAPACITY_LIMIT = 0.5
#: Bytes of one safe-mode status exchange, the watchdog feed (interfaces.md section 1).
SAFE_STATUS_EXCHANGE_BYTES = 20
#: 8N1: start bit, 8 data bits, stop bit.
BITS_PER_BYTE = 10
DEFAULT_BAUD = 19200
#: Safe mode by default: SAF 5, the pump stops itself 5 s after its controller went silent.
DEFAULT_SAFE_MODE_S = 5
MAX_SAFE_MODE_S = 255
#: Feed the watchdog after a third of its period without a valid exchange; a lost feed is
#: tried again after a tenth of the period (each try bounded by the reply timeout), so several
#: lost feeds in a row still leave margin before the pump stops.
WATCHDOG_FEED_FRACTION = 1 / 3
WATCHDOG_RETRY_FRACTION = 1 / 10
#: How often a controller reads a pump's full status (for the line-capacity figures).
DEFAULT_POLL_INTERVAL_S = 1.0
MAX_RATE_ML_H = 9999.0
MAX_VTBI_ML = 9999.0
#: Reopening a lost port: first delay and cap of the backoff (wire seconds). Opening a port is
#: cheap and local, and the cap stays under the default watchdog feed interval (SAF 5 / 3), so a
#: port back within a safe-mode period is reopened and fed before the pump stops itself.
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 1.0
#: A gap of more than this inside a packet discards it (interfaces.md section 1): the pump's
#: rule, applied to replies too.
PACKET_GAP_S = 0.5
#: A2 (interfaces.md section 2): a pump with no valid reply for longer than this is stale.
LINK_TIMEOUT_S = 5.0
_MAX_FRAME_BYTES = MAX_PAYLOAD + 5


class Priority(IntEnum):
    """Queue order on a line: a stop goes next, then watchdog feeds, then everything else."""

    STOP = 0
    WATCHDOG = 1
    NORMAL = 2


#: Status characters to pumpctl states (interfaces.md section 1 table).
STATE_OF_STATUS: dict[str, PumpState] = {
    "I": PumpState.RUNNING,
    "S": PumpState.STOPPED,
    "P": PumpState.PAUSED,
    "T": PumpState.PAUSED,
    "U": PumpState.PAUSED,
    "W": PumpState.ALARM,
    "X": PumpState.ALARM,
}
#: An infusion pump must never withdraw or purge: W and X are a malfunction.
ALARM_OF_STATUS: dict[str, Alarm] = {"W": Alarm.MALFUNCTION, "X": Alarm.MALFUNCTION}
#: Alarm codes of `A?<code>` replies to pumpctl alarms.
ALARM_OF_CODE: dict[str, Alarm] = {
    "S": Alarm.OCCLUSION,
    "T": Alarm.COMM_TIMEOUT,
    "R": Alarm.MALFUNCTION,
    "E": Alarm.MALFUNCTION,
    "O": Alarm.MALFUNCTION,
}

_RATE_REPLY = re.compile(r"\d*\.?\d*(MH|MM|UH|UM)")
_VOLUME_REPLY = re.compile(r"\d*\.?\d*(ML|UL)")
_DISPENSED_REPLY = re.compile(r"I\d*\.?\d*W\d*\.?\d*(ML|UL)")
_VERSION_REPLY = re.compile(r"[A-Z0-9.]+")
_INTEGER_REPLY = re.compile(r"\d+")
_EMPTY_REPLY = re.compile("")


def _expect(pattern: re.Pattern[str]) -> Callable[[Reply], bool]:
    """A reply shape check: alarms and errors always fit; data must match `pattern`."""

    def fits(reply: Reply) -> bool:
        if reply.alarm is not None or reply.error is not None:
            return True
        return pattern.fullmatch(reply.data) is not None

    return fits


def wire_seconds(n_bytes: int, baud: int) -> float:
    """Time `n_bytes` take on the wire at `baud` (8N1)."""
    return n_bytes * BITS_PER_BYTE / baud


def _exchange_bytes(name: str, reply_data: str) -> int:
    command = Command(99, name, safe=True).to_bytes()
    return len(command) + len(Reply(99, "S", reply_data, safe=True).to_bytes())


#: Bytes of one full status read (RAT, VOL and DIS queries with their longest replies).
POLL_EXCHANGE_BYTES = (
    _exchange_bytes("RAT", "9999.MH")
    + _exchange_bytes("VOL", "9999.ML")
    + _exchange_bytes("DIS", "I9999.W9999.ML")
)


def _feed_interval(safe_mode_s: int) -> float:
    return safe_mode_s * WATCHDOG_FEED_FRACTION


# -- line capacity ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineMember:
    """A pump as configured on a line, for capacity figures. `safe_mode_s` None: unknown (5)."""

    address: int
    pump_id: str
    safe_mode_s: int | None = DEFAULT_SAFE_MODE_S
    poll_interval_s: float | None = DEFAULT_POLL_INTERVAL_S

    def bytes_per_s(self) -> float:
        """Bytes per second this pump's polling and watchdog feeding put on the line."""
        load = 0.0
        if self.poll_interval_s:
            load += POLL_EXCHANGE_BYTES / self.poll_interval_s
        safe = DEFAULT_SAFE_MODE_S if self.safe_mode_s is None else self.safe_mode_s
        if safe:
            load += SAFE_STATUS_EXCHANGE_BYTES / _feed_interval(safe)
        return load


def line_load(members: list[LineMember], baud: int) -> float:
    """Fraction of the line's time that polling and watchdog feeding of `members` use."""
    return sum(m.bytes_per_s() for m in members) * BITS_PER_BYTE / baud


def check_line_capacity(url: str, baud: int, members: list[LineMember], pump_id: str) -> None:
    """Refuse (PumpConfigError with the figures) a line that would be over half busy."""
    load = line_load(members, baud)
    if load <= LINE_CAPACITY_LIMIT:
        return
    per_pump = "; ".join(
        f"{m.pump_id} (address {m.address}): {m.bytes_per_s():.0f} B/s"
        f" (full status every {m.poll_interval_s} s = {POLL_EXCHANGE_BYTES} B,"
        f" watchdog SAF {m.safe_mode_s})"
        for m in members
    )
    total = sum(m.bytes_per_s() for m in members)
    raise PumpConfigError(
        pump_id,
        "configure",
        f"line {url} at {baud} baud would be {load:.0%} busy, over the {LINE_CAPACITY_LIMIT:.0%}"
        f" limit: {len(members)} pump(s) need {total:.0f} B/s x {BITS_PER_BYTE} bits / {baud}"
        f" baud = {load:.2f} s of line time per second [{per_pump}]; poll less often, put fewer"
        " pumps on this line or raise the baud rate",
    )


# -- the line --------------------------------------------------------------------------------


@dataclass(eq=False)
class _Request:
    command: Command
    pump_id: str
    operation: str
    expect: Callable[[Reply], bool] | None
    future: asyncio.Future[Reply]


@dataclass(eq=False)
class _Member:
    config: LineMember
    on_unsolicited: Callable[[Reply], None]
    on_lost: Callable[[str], None] | None = None


@dataclass
class LineStats:
    """Counters of what went wrong on a line (for diagnostics and tests)."""

    frame_errors: int = 0
    stale_replies: int = 0
    timeouts: int = 0
    last_frame_error: str = ""
    unsolicited: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class SerialLine:
    """One serial port shared by up to 100 pumps; one exchange in flight at a time.

    A lost port is reopened (same url) by an owned task with capped exponential backoff and
    jitter until the line is closed; `connected`, `wait_connected` and `wait_lost` tell its state.
    """

    def __init__(
        self,
        url: str,
        *,
        baud: int = DEFAULT_BAUD,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        opener: Opener = open_serial,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
    ) -> None:
        for name, value in (
            ("reconnect_min_s", reconnect_min_s),
            ("reconnect_max_s", reconnect_max_s),
        ):
            if not value > 0:
                raise PumpConfigError(f"line {url}", "configure", f"{name} must be > 0: {value}")
        self.url = url
        self.baud = baud
        self.reply_timeout_s = reply_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._opener = opener
        self._members: dict[int, _Member] = {}
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Request]] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._inflight: _Request | None = None
        self._waiter: asyncio.Future[Reply] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._reconnector: asyncio.Task[None] | None = None
        self._closing = False
        self._lost: str | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        #: Event-loop time the port was last lost (None: never).
        self.lost_at: float | None = None
        #: Times the port was reopened after a loss.
        self.reconnections = 0
        self.stats = LineStats()
        self._decoder = ReplyDecoder(on_error=self._frame_error)

    async def __aenter__(self) -> SerialLine:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        """True while the port is open and was not lost."""
        return self._writer is not None and self._lost is None

    @property
    def connected(self) -> bool:
        """True while the port is open and was not lost (the link state, for a controller)."""
        return self.is_open

    @property
    def lost_reason(self) -> str | None:
        """Why the port is down while it is being reopened, else None."""
        return self._lost

    async def wait_connected(self) -> None:
        """Return once the port is open (bound it with a timeout)."""
        await self._up.wait()

    async def wait_lost(self) -> None:
        """Return once the port is lost or closed (bound it with a timeout)."""
        await self._down.wait()

    async def open(self) -> None:
        """Open the port and start the line's reader and dispatcher tasks."""
        if self._dispatcher is not None:
            return
        try:
            reader, writer = await self._opener(self.url, self.baud)
        except TransportError as exc:
            raise PumpConnectionError(f"line {self.url}", "open", str(exc)) from exc
        self._closing = False
        self._attach(reader, writer)
        self._dispatcher = asyncio.create_task(
            self._dispatch_loop(), name=f"serial-dispatcher {self.url}"
        )

    async def close(self) -> None:
        """Stop the line's tasks (reconnection too), fail queued requests, close the port.

        Idempotent.
        """
        self._closing = True
        tasks = [t for t in (self._reconnector, self._reading, self._dispatcher) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._reconnector = self._reading = self._dispatcher = None
        self._fail_queued("line closed")
        if self._writer is not None:
            writer, self._writer, self._reader = self._writer, None, None
            await close_stream(writer)
        self._lost = None  # closed, not lost: nothing is reopening it
        self._up.clear()
        self._down.set()
        for member in list(self._members.values()):
            if member.on_lost is not None:
                member.on_lost("line closed")

    def _attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Use a freshly opened port: start reading it, mark the line up."""
        self._reader, self._writer = reader, writer
        self._lost = None
        self._decoder.reset()
        self._reading = asyncio.create_task(self._read_loop(), name=f"serial-reader {self.url}")
        self._down.clear()
        self._up.set()

    def _fail_queued(self, reason: str) -> None:
        while not self._queue.empty():
            _, _, request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(
                    PumpConnectionError(request.pump_id, request.operation, reason)
                )

    async def _reconnect(self) -> None:
        """Owned task: close the lost port, then reopen the same url with backoff and jitter."""
        loop = asyncio.get_running_loop()
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        if self._writer is not None:
            await close_stream(self._writer)  # close() finishes this if we are cancelled here
            self._writer = self._reader = None
        attempt = 0
        while True:
            await asyncio.sleep(backoff_delay(attempt, self.reconnect_min_s, self.reconnect_max_s))
            attempt += 1
            try:
                reader, writer = await self._opener(self.url, self.baud)
            except TransportError as exc:
                log.debug("line %s: reopening failed (attempt %d): %s", self.url, attempt, exc)
                continue
            break
        down_s = loop.time() - (self.lost_at or loop.time())
        self.reconnections += 1
        self._attach(reader, writer)
        log.warning("line %s recovered after %.1f s (%d attempt(s))", self.url, down_s, attempt)

    # -- membership and capacity ------------------------------------------------------------

    @property
    def members(self) -> list[LineMember]:
        """The pumps registered on this line."""
        return [m.config for m in self._members.values()]

    def check(self, member: LineMember) -> None:
        """Refuse `member` (PumpConfigError) if its address is taken or the line would overload."""
        if member.address in self._members:
            other = self._members[member.address].config.pump_id
            raise PumpConfigError(
                member.pump_id, "configure", f"address {member.address} is already {other}'s"
            )
        check_line_capacity(self.url, self.baud, [*self.members, member], member.pump_id)

    def register(
        self,
        member: LineMember,
        on_unsolicited: Callable[[Reply], None],
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        """Add a pump to the line (after `check`); its unsolicited frames go to the callback,
        and `on_lost(reason)` is called when the port is lost."""
        self.check(member)
        self._members[member.address] = _Member(member, on_unsolicited, on_lost)

    def unregister(self, address: int) -> None:
        """Remove the pump at `address` (no error if absent)."""
        self._members.pop(address, None)

    # -- exchanges --------------------------------------------------------------------------

    async def exchange(
        self,
        command: Command,
        *,
        pump_id: str,
        operation: str,
        priority: Priority = Priority.NORMAL,
        retries: int = EXCHANGE_RETRIES,
        expect: Callable[[Reply], bool] | None = None,
    ) -> Reply:
        """Send `command` when its turn comes, return the matching reply (retrying on failure).

        Raises PumpTimeout (no valid reply), PumpProtocolError (reply failed its check) after
        the retries, PumpConnectionError if the line is closed or lost.
        """
        loop = asyncio.get_running_loop()
        last: PumpError | None = None
        for _attempt in range(retries + 1):
            if not self.is_open:
                reason = f"line {self.url} is not open"
                if self._lost is not None:
                    reason = f"line {self.url} is down ({self._lost}); reopening it"
                raise PumpConnectionError(pump_id, operation, reason)
            future: asyncio.Future[Reply] = loop.create_future()
            request = _Request(command, pump_id, operation, expect, future)
            self._queue.put_nowait((priority, next(self._seq), request))
            try:
                return await future
            except (PumpTimeout, PumpProtocolError) as exc:
                last = exc
                log.info("%s: %s attempt failed: %s", pump_id, operation, exc.message)
        assert last is not None
        raise last

    async def _dispatch_loop(self) -> None:
        while True:
            _, _, request = await self._queue.get()
            if request.future.done():  # its caller gave up while it was queued
                continue
            try:
                reply = await self._transact(request)
            except asyncio.CancelledError:  # the line is closing under this exchange
                if not request.future.done():
                    request.future.set_exception(
                        PumpConnectionError(request.pump_id, request.operation, "line closed")
                    )
                raise
            except PumpError as exc:
                if not request.future.done():
                    request.future.set_exception(exc)
            else:
                if not request.future.done():
                    request.future.set_result(reply)

    async def _transact(self, request: _Request) -> Reply:
        if self._writer is None or self._lost is not None:
            raise PumpConnectionError(request.pump_id, request.operation, self._lost or "closed")
        frame = request.command.to_bytes()
        if self._decoder.pending:
            # the pump only speaks when spoken to: a partial frame still pending now (noise, the
            # start of a reply nobody waits for) can never begin this request's reply
            self._drop_partial("a new request goes out")
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        timeout = self.reply_timeout_s + wire_seconds(len(frame) + _MAX_FRAME_BYTES, self.baud)
        self._inflight, self._waiter = request, waiter
        try:
            self._writer.write(frame)
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            self.stats.timeouts += 1
            raise PumpTimeout(
                request.pump_id,
                request.operation,
                f"no valid reply to {request.command.payload.decode()!r} within {timeout:.2f} s",
            ) from None
        except OSError as exc:
            self._connection_lost(f"write failed: {exc}")
            raise PumpConnectionError(request.pump_id, request.operation, str(exc)) from exc
        finally:
            self._inflight, self._waiter = None, None

    def _drop_partial(self, why: str) -> None:
        """Discard a partial frame held by the decoder, counted as a frame error."""
        self._frame_error(FrameError("gap", f"partial frame dropped: {why}", 0))
        self._decoder.reset()

    async def _read_loop(self) -> None:
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        last_rx = loop.time()
        try:
            while True:
                data = await self._reader.read(MAX_BUFFER)
                if not data:
                    self._connection_lost(f"port {self.url} closed (end of file)")
                    return
                now = loop.time()
                if self._decoder.pending and now - last_rx > PACKET_GAP_S:
                    self._drop_partial(f"gap of {now - last_rx:.2f} s inside a packet")
                last_rx = now
                for reply in self._decoder.feed(data):
                    self._on_reply(reply)
        except OSError as exc:
            self._connection_lost(f"port {self.url} failed: {exc}")

    def _on_reply(self, reply: Reply) -> None:
        request, waiter = self._inflight, self._waiter
        if (
            request is not None
            and waiter is not None
            and not waiter.done()
            and reply.address == request.command.address
            and (request.expect is None or request.expect(reply))
        ):
            waiter.set_result(reply)
            return
        member = self._members.get(reply.address)
        if reply.alarm is not None and member is not None:
            self.stats.unsolicited += 1
            member.on_unsolicited(reply)
            return
        self.stats.stale_replies += 1
        log.debug("line %s: ignored a reply nobody waits for: %r", self.url, reply)

    def _frame_error(self, exc: FrameError) -> None:
        self.stats.frame_errors += 1
        self.stats.kinds[exc.kind] = self.stats.kinds.get(exc.kind, 0) + 1
        self.stats.last_frame_error = str(exc)
        request, waiter = self._inflight, self._waiter
        # a reply that failed its check is never acted on; fail fast so the retry goes now
        if exc.kind in {"check", "invalid"} and request and waiter and not waiter.done():
            waiter.set_exception(
                PumpProtocolError(request.pump_id, request.operation, f"bad reply: {exc}")
            )

    def _connection_lost(self, reason: str) -> None:
        """The port failed: mark the line down, fail what waits, start reopening (once)."""
        if self._closing or self._lost is not None or self._writer is None:
            return
        self._lost = reason
        self.lost_at = asyncio.get_running_loop().time()
        self._up.clear()
        self._down.set()
        log.warning("line %s lost: %s; reopening it", self.url, reason)
        request, waiter = self._inflight, self._waiter
        if request and waiter and not waiter.done():
            waiter.set_exception(PumpConnectionError(request.pump_id, request.operation, reason))
        self._fail_queued(f"line {self.url} lost: {reason}")
        for member in list(self._members.values()):
            if member.on_lost is not None:
                member.on_lost(reason)
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.create_task(
                self._reconnect(), name=f"serial-reconnect {self.url}"
            )


# -- one pump on a line ----------------------------------------------------------------------


class SerialPump(Pump):
    """A New Era pump at `address` on `line`.

    `safe_mode_s`: n (1-255) switches safe mode on at connect (SAF n) and keeps its watchdog fed;
    0 switches it off (SAF 0); None changes nothing (framing and SAF are detected with queries
    only, as `pumpctl pump status` needs). In safe mode a silent controller stops the pump.
    After the line lost its port and got it back, the same is done again and the real state is
    read and published (A2); `connected`, `last_contact` and `is_stale` tell the link's health.
    """

    def __init__(
        self,
        line: SerialLine,
        address: int,
        *,
        pump_id: str | None = None,
        safe_mode_s: int | None = DEFAULT_SAFE_MODE_S,
        poll_interval_s: float | None = DEFAULT_POLL_INTERVAL_S,
        link_timeout_s: float = LINK_TIMEOUT_S,
    ) -> None:
        self.pump_id = pump_id or f"serial:{line.url}#{address}"
        if not 0 <= address <= 99:
            raise PumpConfigError(self.pump_id, "configure", f"address {address}: must be 0-99")
        if safe_mode_s is not None and not 0 <= safe_mode_s <= MAX_SAFE_MODE_S:
            raise PumpConfigError(
                self.pump_id, "configure", f"safe_mode_s {safe_mode_s}: must be 0-255 or None"
            )
        self.line = line
        self.address = address
        self.link_timeout_s = link_timeout_s
        self.requested_safe_mode_s = safe_mode_s
        self._member = LineMember(address, self.pump_id, safe_mode_s, poll_interval_s)
        line.check(self._member)
        #: The safe-mode period in force (0: basic mode), known after connect.
        self.safe_mode_s: int | None = None
        #: The pump's identification (`VER` reply), known after connect.
        self.firmware: str | None = None
        #: Alarms this driver learnt from alarm frames (acknowledged by its commands), in order.
        self.acknowledged: list[Alarm] = []
        self._safe = False
        self._latched: set[Alarm] = set()
        self._status_char = "S"
        self._last: PumpStatus | None = None
        self._last_valid: float | None = None
        self._broadcast = StatusBroadcast()
        self._link_task: asyncio.Task[None] | None = None
        self._owned: set[asyncio.Task[PumpStatus]] = set()
        self._registered = False
        self._linked = asyncio.Event()
        self._unlinked = asyncio.Event()
        self._unlinked.set()
        #: Times the pump was re-established after the line came back.
        self.reconnections = 0

    # -- life -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Register on the line, set (or detect) the framing, identify, read the status."""
        if not self.line.is_open:
            raise PumpConnectionError(self.pump_id, "connect", f"line {self.line.url} not open")
        self.line.register(self._member, self._on_unsolicited, self._on_line_lost)
        self._registered = True
        try:
            await self._set_framing("connect")
            version = await self._command("VER", "", "connect", expect=_VERSION_REPLY)
            self.firmware = version.data
            await self.read_status()
        except BaseException:
            await self.close()
            raise
        self._set_linked(linked=self.line.is_open)
        self._link_task = asyncio.create_task(self._keep_link(), name=f"serial-link {self.pump_id}")

    async def close(self) -> None:
        """Stop feeding the watchdog and leave the line; the pump's mode is left as it is."""
        if self._link_task is not None:
            self._link_task.cancel()
            await asyncio.gather(self._link_task, return_exceptions=True)
            self._link_task = None
        if self._owned:
            await asyncio.gather(*self._owned, return_exceptions=True)
        if self._registered:
            self.line.unregister(self.address)
            self._registered = False
        self._set_linked(linked=False)

    async def _set_framing(self, operation: str) -> None:
        """Framing and safe mode as configured: `SAF n`, or detected with queries only."""
        if self.requested_safe_mode_s is None:
            await self._detect_framing(operation)
        else:
            n = self.requested_safe_mode_s
            await self._command("SAF", str(n), operation, safe=True)
            self._safe, self.safe_mode_s = n > 0, n

    async def _detect_framing(self, operation: str) -> None:
        """Find the framing in force with status queries only (basic first), then SAF's period."""
        try:
            reply: Reply | None = await self._send(
                Command(self.address), operation, retries=0, expect=_expect(_EMPTY_REPLY)
            )
        except PumpTimeout:
            reply = None
        if reply is None or reply.safe or reply.error == "COM":
            reply = await self._send(
                Command(self.address, safe=True), operation, expect=_expect(_EMPTY_REPLY)
            )
        self._safe = reply.safe
        if self._safe:
            period = await self._command("SAF", "", operation, expect=_INTEGER_REPLY)
            self.safe_mode_s = int(period.data)
        else:
            self.safe_mode_s = 0

    # -- link health and reconnection -------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the line is up and this pump was re-established on it."""
        return self._linked.is_set()

    @property
    def last_contact(self) -> float | None:
        """Event-loop time of the last valid reply from the pump, or None."""
        return self._last_valid

    def is_stale(self, now: float | None = None) -> bool:
        """A2: True when no valid reply came for longer than the link timeout (or ever)."""
        if self._last_valid is None:
            return True
        if now is None:
            now = asyncio.get_running_loop().time()
        return now - self._last_valid > self.link_timeout_s

    async def wait_linked(self) -> None:
        """Return once the pump is re-established on an open line (bound it with a timeout)."""
        await self._linked.wait()

    async def wait_unlinked(self) -> None:
        """Return once the line is lost or the pump closed (bound it with a timeout)."""
        await self._unlinked.wait()

    def _set_linked(self, *, linked: bool) -> None:
        if linked:
            self._unlinked.clear()
            self._linked.set()
        else:
            self._linked.clear()
            self._unlinked.set()

    def _on_line_lost(self, _reason: str) -> None:
        """The line lost its port (it logs that): re-establish this pump when it is back."""
        self._set_linked(linked=False)

    async def _keep_link(self) -> None:
        """Owned task: re-establish the pump each time the line comes back; feed the watchdog."""
        loop = asyncio.get_running_loop()
        attempt = 0
        feed_failing = False
        while True:
            if not self._linked.is_set():
                await self.line.wait_connected()
                try:
                    await self._reestablish()
                except PumpError as exc:
                    if isinstance(exc, PumpConnectionError) and not self.line.is_open:
                        continue  # lost again: wait for the line
                    if attempt == 0:
                        log.warning("%s: not re-established, retrying: %s", self.pump_id, exc)
                    await asyncio.sleep(
                        backoff_delay(attempt, self.line.reconnect_min_s, self.line.reconnect_max_s)
                    )
                    attempt += 1
                    continue
                attempt = 0
                continue
            period = self.safe_mode_s if self._safe else 0
            if not period:
                await self._unlinked.wait()
                continue
            interval = _feed_interval(period)
            idle = loop.time() - (self._last_valid or 0.0)
            if idle < interval:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval - idle):
                        await self._unlinked.wait()
                continue
            try:
                await self._send(
                    Command(self.address, safe=True),
                    "watchdog",
                    priority=Priority.WATCHDOG,
                    retries=0,
                    expect=_expect(_EMPTY_REPLY),
                )
            except PumpConnectionError:
                # the line is down (it logged that) or closed: re-establish when it is back
                self._set_linked(linked=False)
                continue
            except PumpError as exc:
                if not feed_failing:
                    log.warning("%s: watchdog feed failed: %s", self.pump_id, exc.message)
                    feed_failing = True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period * WATCHDOG_RETRY_FRACTION):
                        await self._unlinked.wait()
                continue
            if feed_failing:
                log.warning("%s: watchdog fed again", self.pump_id)
                feed_failing = False

    async def _reestablish(self) -> None:
        """A2: after the line came back, framing and safe mode as configured, then the real
        state read and published. Only `SAF` and queries are sent: a pump found stopped (its
        watchdog expired: comm_timeout) is reported and left as it is, never restarted."""
        before = self._last
        await self._set_framing("reconnect")
        status = await self._read("reconnect", Priority.NORMAL)
        self.reconnections += 1
        self._set_linked(linked=True)
        if (
            before is not None
            and before.state is PumpState.RUNNING
            and (status.state is not PumpState.RUNNING or status.rate_ml_h < before.rate_ml_h)
        ):
            log.warning(
                "%s: link back, pump found %s%s at %s ml/h (was running at %s ml/h): left as"
                " it is (A2)",
                self.pump_id,
                status.state.value,
                "".join(f" [{a.value}]" for a in sorted(status.alarms)),
                status.rate_ml_h,
                before.rate_ml_h,
            )
        else:
            log.info(
                "%s: link back, pump %s at %s ml/h",
                self.pump_id,
                status.state.value,
                status.rate_ml_h,
            )

    # -- the Pump interface -----------------------------------------------------------------

    @property
    def last_status(self) -> PumpStatus | None:
        """The last status read (or updated by any reply), None before first contact."""
        return self._last

    def status_changes(self) -> AsyncIterator[PumpStatus]:
        """Every change of status from now on."""
        return self._broadcast.subscribe()

    async def read_status(self) -> PumpStatus:
        """Read rate (RAT), volume to be infused (VOL) and volume infused (DIS)."""
        return await self._read("read_status", Priority.NORMAL)

    async def set_rate(self, rate_ml_h: float) -> PumpStatus:
        """`RAT <rate> MH`, then read back."""
        text = self._number("set_rate", "rate_ml_h", rate_ml_h, MAX_RATE_ML_H)
        await self._command("RAT", f"{text}MH", "set_rate")
        return await self._read("set_rate", Priority.NORMAL)

    async def set_vtbi(self, vtbi_ml: float) -> PumpStatus:
        """`VOL ML` then `VOL <ml>`, then read back."""
        text = self._number("set_vtbi", "vtbi_ml", vtbi_ml, MAX_VTBI_ML)
        await self._command("VOL", "ML", "set_vtbi")
        await self._command("VOL", text, "set_vtbi")
        return await self._read("set_vtbi", Priority.NORMAL)

    async def run(self) -> PumpStatus:
        """`DIR INF` (an infusion pump never withdraws), `RUN`, then read back."""
        await self._command("DIR", "INF", "run")
        await self._command("RUN", "", "run")
        return await self._read("run", Priority.NORMAL)

    async def stop(self) -> PumpStatus:
        """`STP` ahead of any queued request, then read back; shielded from cancellation."""
        task = asyncio.create_task(self._stop(), name=f"serial-stop {self.pump_id}")
        self._owned.add(task)
        task.add_done_callback(self._reap_stop)
        return await asyncio.shield(task)

    def _reap_stop(self, task: asyncio.Task[PumpStatus]) -> None:
        """Forget a finished stop; a failed one is logged at ERROR (its caller may be gone)."""
        self._owned.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: stop failed: %s", self.pump_id, exc)

    async def _stop(self) -> PumpStatus:
        """A3: `STP` and read back until the motor is seen still; else PumpNotConfirmed."""
        for _attempt in range(STOP_ATTEMPTS):
            await self._command("STP", "", "stop", priority=Priority.STOP)
            status = await self._read("stop", Priority.STOP)
            if self._status_char not in MOVING_STATUS:
                return status
            log.error("%s: stop sent, pump still reads %r", self.pump_id, self._status_char)
        raise PumpNotConfirmed(
            self.pump_id,
            "stop",
            f"pump did not stop: clamp the line (A3: {STOP_ATTEMPTS} stops acknowledged, the"
            f" read-back still shows status {self._status_char!r}, {status.rate_ml_h} ml/h)",
        )

    async def clear_volume(self) -> PumpStatus:
        """`CLD INF`, then read back."""
        await self._command("CLD", "INF", "clear_volume")
        return await self._read("clear_volume", Priority.NORMAL)

    # -- internals --------------------------------------------------------------------------

    def _number(self, operation: str, name: str, value: float, maximum: float) -> str:
        try:
            text = format_number(value, point=False)
        except ValueError:
            text = ""
        if not text or not 0 < float(text) <= maximum:
            raise PumpCommandRejected(
                self.pump_id, operation, f"{name} {value!r} out of range (0, {maximum}]", "OOR"
            )
        return text

    async def _read(self, operation: str, priority: Priority) -> PumpStatus:
        rat = await self._command("RAT", "", operation, expect=_RATE_REPLY, priority=priority)
        vol = await self._command("VOL", "", operation, expect=_VOLUME_REPLY, priority=priority)
        dis = await self._command("DIS", "", operation, expect=_DISPENSED_REPLY, priority=priority)
        try:
            rate, rate_unit = parse_quantity(rat.data, RATE_UNITS)
            vtbi, vtbi_unit = parse_quantity(vol.data, VOLUME_UNITS)
            infused, _withdrawn, dis_unit = parse_dispensed(dis.data)
        except ValueError as exc:
            raise PumpProtocolError(self.pump_id, operation, str(exc)) from None
        state, alarms = self._state()
        status = PumpStatus(
            pump_id=self.pump_id,
            state=state,
            rate_ml_h=round(rate * RATE_UNITS[rate_unit], 4),
            vtbi_ml=round(vtbi * VOLUME_UNITS[vtbi_unit], 4),
            volume_infused_ml=round(infused * VOLUME_UNITS[dis_unit], 4),
            alarms=alarms,
            last_contact=self._last_valid or 0.0,
        )
        self._publish(status)
        return status

    async def _command(
        self,
        name: str,
        data: str,
        operation: str,
        *,
        expect: re.Pattern[str] = _EMPTY_REPLY,
        priority: Priority = Priority.NORMAL,
        safe: bool | None = None,
    ) -> Reply:
        """Send one command in the framing in force; raise PumpCommandRejected on `?` replies."""
        framing = self._safe if safe is None else safe
        command = Command(self.address, name, data, safe=framing)
        for _attempt in range(EXCHANGE_RETRIES + 1):
            reply = await self._send(command, operation, priority=priority, expect=_expect(expect))
            if reply.error != "COM":
                break
            # ?COM: the pump received a damaged packet and did nothing; sending again is safe
        else:
            raise PumpProtocolError(
                self.pump_id,
                operation,
                f"pump answered ?COM (bad packet) to {command.payload.decode()!r}"
                f" {EXCHANGE_RETRIES + 1} times: check the line and its framing",
            )
        if reply.error is not None:
            code = reply.error or "?"
            raise PumpCommandRejected(
                self.pump_id,
                operation,
                f"pump refused {command.payload.decode()!r}: ?{reply.error}",
                code,
            )
        return reply

    async def _send(
        self,
        command: Command,
        operation: str,
        *,
        priority: Priority = Priority.NORMAL,
        retries: int = EXCHANGE_RETRIES,
        expect: Callable[[Reply], bool] | None = None,
    ) -> Reply:
        """One exchange; an alarm reply is recorded and the command sent again (not executed)."""
        for _resend in range(ALARM_RESENDS + 1):
            reply = await self.line.exchange(
                command,
                pump_id=self.pump_id,
                operation=operation,
                priority=priority,
                retries=retries,
                expect=expect,
            )
            self._note(reply, acknowledged=True)
            if reply.alarm is None:
                return reply
        raise PumpCommandRejected(
            self.pump_id,
            operation,
            f"pump kept answering alarm A?{reply.alarm} to {command.payload.decode()!r}",
            f"A?{reply.alarm}",
        )

    def _note(self, reply: Reply, *, acknowledged: bool) -> None:
        """Learn from any valid reply: its status char, or the alarm it carries (latched)."""
        self._last_valid = asyncio.get_running_loop().time()
        if reply.alarm is not None:
            alarm = ALARM_OF_CODE[reply.alarm]
            if alarm not in self._latched:
                log.warning("%s: pump alarm A?%s (%s)", self.pump_id, reply.alarm, alarm.value)
                self._latched.add(alarm)
            if acknowledged:
                self.acknowledged.append(alarm)
        else:
            self._status_char = reply.status
            if reply.status == "I":
                # running again: someone dealt with the alarm and restarted the pump
                self._latched.clear()
        if self._last is not None:
            state, alarms = self._state()
            self._publish(
                replace(
                    self._last, state=state, alarms=alarms, last_contact=self._last_valid or 0.0
                )
            )

    def _state(self) -> tuple[PumpState, frozenset[Alarm]]:
        """The pumpctl state and alarms: latched alarm replies, and W/X as a malfunction."""
        alarms = set(self._latched)
        if self._status_char in ALARM_OF_STATUS:
            alarms.add(ALARM_OF_STATUS[self._status_char])
        state = PumpState.ALARM if alarms else STATE_OF_STATUS[self._status_char]
        return state, frozenset(alarms)

    def _publish(self, status: PumpStatus) -> None:
        self._last = status
        self._broadcast.publish(status)

    def _on_unsolicited(self, reply: Reply) -> None:
        """An alarm the pump sent on its own (safe mode): record it, it is not acknowledged."""
        self._note(reply, acknowledged=False)
