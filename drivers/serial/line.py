"""The New Era line: one exchange at a time on a port shared by up to 100 pumps.

`SerialLine` owns one byte stream: requests wait in a priority queue (a stop jumps ahead of
everything queued), one exchange is in flight at a time, a reply is matched to its request by
address and shape, idempotent requests are retried, unsolicited alarm frames (safe mode) go to
their pump. Wire time only (`asyncio.timeout`): constants below are named after the spec
(interfaces.md section 1). The line-capacity check refuses a configuration that would keep the
line more than half busy.

A lost port (adapter unplugged, `socket://` connection dropped, pty gone) marks the line down:
in-flight and new commands fail at once with `PumpConnectionError`, and an owned task reopens the
same url with capped exponential backoff and jitter; each pump on the line re-establishes itself
once it is back (drivers.serial.pump). A port that is not there when the line is opened is the
same case (A2: one unplugged adapter must not stop the supervision of every other pump): the
line opens down, naming why, and the same task opens it when it appears. Only a port that can
never be opened as configured (a bad baud rate, a URL pyserial cannot read) is refused, with
`PumpConfigError`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from drivers.backoff import backoff_delay
from drivers.base import (
    PumpConfigError,
    PumpConnectionError,
    PumpError,
    PumpProtocolError,
    PumpTimeout,
    command_label,
)
from drivers.serial.codec import (
    BITS_PER_BYTE,
    MAX_BUFFER,
    MAX_PAYLOAD,
    PACKET_GAP_S,
    Command,
    FrameError,
    Reply,
    ReplyDecoder,
    wire_seconds,
)
from drivers.serial.transport import (
    Opener,
    TransportConfigError,
    TransportError,
    close_stream,
    open_serial,
)

__all__ = [
    "DEFAULT_BAUD",
    "DEFAULT_POLL_INTERVAL_S",
    "DEFAULT_SAFE_MODE_S",
    "EXCHANGE_RETRIES",
    "LINE_CAPACITY_LIMIT",
    "POLL_EXCHANGE_BYTES",
    "RECONNECT_MAX_S",
    "RECONNECT_MIN_S",
    "REPLY_TIMEOUT_S",
    "LineMember",
    "LineStats",
    "Priority",
    "SerialLine",
    "check_line_capacity",
    "feed_interval",
    "line_load",
]

log = logging.getLogger(__name__)

#: Wait for a reply this long beyond its own wire time (a pump answers within milliseconds).
REPLY_TIMEOUT_S = 0.5
#: Retries of a request whose reply timed out or failed its check (all our commands are
#: absolute, so sending one twice does no harm).
EXCHANGE_RETRIES = 2
#: A line may be at most this busy with polling and watchdog feeding (interfaces.md section 1).
LINE_CAPACITY_LIMIT = 0.5
#: Bytes of one safe-mode status exchange, the watchdog feed (interfaces.md section 1).
SAFE_STATUS_EXCHANGE_BYTES = 20
DEFAULT_BAUD = 19200
#: Safe mode by default: SAF 5, the pump stops itself 5 s after its controller went silent.
DEFAULT_SAFE_MODE_S = 5
#: Feed the watchdog after a third of its period without a valid exchange.
WATCHDOG_FEED_FRACTION = 1 / 3
#: How often a controller reads a pump's full status (for the line-capacity figures).
DEFAULT_POLL_INTERVAL_S = 1.0
#: Reopening a lost port: first delay and cap of the backoff (wire seconds). Opening a port is
#: cheap and local, and the cap stays under the default watchdog feed interval (SAF 5 / 3), so a
#: port back within a safe-mode period is reopened and fed before the pump stops itself.
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 1.0
_MAX_FRAME_BYTES = MAX_PAYLOAD + 5


class Priority(IntEnum):
    """Queue order on a line: a stop goes next, then watchdog feeds, then everything else."""

    STOP = 0
    WATCHDOG = 1
    NORMAL = 2


def _exchange_bytes(name: str, reply_data: str) -> int:
    command = Command(99, name, safe=True).to_bytes()
    return len(command) + len(Reply(99, "S", reply_data, safe=True).to_bytes())


#: Bytes of one full status read (RAT, VOL and DIS queries with their longest replies).
POLL_EXCHANGE_BYTES = (
    _exchange_bytes("RAT", "9999.MH")
    + _exchange_bytes("VOL", "9999.ML")
    + _exchange_bytes("DIS", "I9999.W9999.ML")
)


def feed_interval(safe_mode_s: int) -> float:
    """Feed the watchdog of SAF `safe_mode_s` after this many seconds without an exchange."""
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
            load += SAFE_STATUS_EXCHANGE_BYTES / feed_interval(safe)
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
    command_id: str | None = None

    def error(
        self, kind: type[PumpTimeout | PumpConnectionError | PumpProtocolError], message: str
    ) -> PumpError:
        """An error of `kind` about this request, naming its pump, operation and ledger id."""
        return kind(self.pump_id, self.operation, message, command_id=self.command_id)

    def describe(self) -> str:
        """The command as sent, with its ledger id (for log lines)."""
        return f"{self.command.payload.decode()!r}{command_label(self.command_id)}"


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
        #: Times the port was reopened after a loss (not its first opening, however late).
        self.reconnections = 0
        self._ever_up = False
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
        """Open the port and start the line's reader and dispatcher tasks.

        A port that cannot be opened now (no such device yet, nobody listening) does not raise:
        the line starts down (`lost_reason` says why, `connected` is False) and its reconnection
        task opens the port when it appears, as after a loss. A port that never can be opened as
        configured raises `PumpConfigError`."""
        if self._dispatcher is not None:
            return
        try:
            reader, writer = await self._opener(self.url, self.baud)
        except TransportConfigError as exc:
            raise PumpConfigError(f"line {self.url}", "open", str(exc)) from exc
        except TransportError as exc:
            self._closing = False
            self._lost = str(exc)
            self.lost_at = asyncio.get_running_loop().time()
            log.info("line %s not opened: %s; opening it when it appears", self.url, exc)
            self._reconnector = asyncio.create_task(
                self._reconnect(), name=f"serial-reconnect {self.url}"
            )
        else:
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
        self._ever_up = True
        self._decoder.reset()
        self._reading = asyncio.create_task(self._read_loop(), name=f"serial-reader {self.url}")
        self._down.clear()
        self._up.set()

    def _fail_queued(self, reason: str) -> None:
        while not self._queue.empty():
            _, _, request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(request.error(PumpConnectionError, reason))

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
        first_open = not self._ever_up  # the port was not there when the line was opened
        attempt = 0
        while True:
            await asyncio.sleep(backoff_delay(attempt, self.reconnect_min_s, self.reconnect_max_s))
            attempt += 1
            try:
                reader, writer = await self._opener(self.url, self.baud)
            except TransportError as exc:
                # DEBUG only: a port gone for hours is tried every RECONNECT_MAX_S (no flood);
                # the loss was logged once, the recovery is logged once
                log.debug("line %s: reopening failed (attempt %d): %s", self.url, attempt, exc)
                continue
            break
        down_s = loop.time() - (self.lost_at or loop.time())
        self._attach(reader, writer)
        if first_open:  # its pumps say, each once, that they start unlinked and are linked
            log.info("line %s opened after %.1f s (%d attempt(s))", self.url, down_s, attempt)
        else:
            self.reconnections += 1
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
        command_id: str | None = None,
        quiet: bool = False,
        within_s: float | None = None,
    ) -> Reply:
        """Send `command` when its turn comes, return the matching reply (retrying on failure).

        `command_id`, the controller's ledger id, is logged with each try and carried by the
        error; a failed try is logged at INFO, or at DEBUG with `quiet` (the background probes
        of a pump that does not answer: expected failures, which must not flood the log).
        Raises PumpTimeout (no valid reply), PumpProtocolError (reply failed its check) after
        the retries, PumpConnectionError if the line is closed or lost. Each try waits at most
        `longest_exchange_s` once its turn has come. With `within_s`, tries go on after the
        retries while less than `within_s` has passed since the first was queued (A3: a pump
        answering late but within the command timeout is heard; its late reply to an earlier
        try, the same command, answers the try then on the wire); the last try starts before
        `within_s` has passed, or is the last of the retries.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        last: PumpError | None = None
        for attempt in itertools.count():
            if attempt > retries and (within_s is None or loop.time() - started >= within_s):
                break
            future: asyncio.Future[Reply] = loop.create_future()
            request = _Request(command, pump_id, operation, expect, future, command_id)
            if not self.is_open:
                reason = f"line {self.url} is not open"
                if self._lost is not None:
                    reason = f"line {self.url} is down ({self._lost}); reopening it"
                raise request.error(PumpConnectionError, reason)
            self._queue.put_nowait((priority, next(self._seq), request))
            try:
                return await future
            except (PumpTimeout, PumpProtocolError) as exc:
                last = exc
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "%s: %s: try %d of %s failed: %s",
                    pump_id,
                    operation,
                    attempt + 1,
                    request.describe(),
                    exc.message,
                )
        assert last is not None
        raise last

    @property
    def longest_exchange_s(self) -> float:
        """The longest one try of an exchange waits once on the wire: the reply timeout plus the
        wire time of the longest command and the longest reply."""
        return self.reply_timeout_s + wire_seconds(2 * _MAX_FRAME_BYTES, self.baud)

    async def _dispatch_loop(self) -> None:
        while True:
            _, _, request = await self._queue.get()
            if request.future.done():  # its caller gave up while it was queued
                continue
            try:
                reply = await self._transact(request)
            except asyncio.CancelledError:  # the line is closing under this exchange
                if not request.future.done():
                    request.future.set_exception(request.error(PumpConnectionError, "line closed"))
                raise
            except PumpError as exc:
                if not request.future.done():
                    request.future.set_exception(exc)
            else:
                if not request.future.done():
                    request.future.set_result(reply)
            # let the caller just answered queue its next exchange (or its retry) before the
            # next is taken: a stop's read-back and retries then go ahead of everything queued
            await asyncio.sleep(0)

    async def _transact(self, request: _Request) -> Reply:
        if self._writer is None or self._lost is not None:
            raise request.error(PumpConnectionError, self._lost or "closed")
        frame = request.command.to_bytes()
        if self._decoder.pending:
            # the pump only speaks when spoken to: a partial frame still pending now (noise, the
            # start of a reply nobody waits for) can never begin this request's reply
            self._drop_partial("a new request goes out")
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        timeout = self.reply_timeout_s + wire_seconds(len(frame) + _MAX_FRAME_BYTES, self.baud)
        self._inflight, self._waiter = request, waiter
        log.debug("line %s: %s sends %s", self.url, request.pump_id, request.describe())
        try:
            async with asyncio.timeout(timeout):  # the frame's own wire time is in it
                self._writer.write(frame)
                await self._writer.drain()
                return await waiter
        except TimeoutError:
            self.stats.timeouts += 1
            raise request.error(
                PumpTimeout,
                f"no valid reply to {request.command.payload.decode()!r} within {timeout:.2f} s",
            ) from None
        except OSError as exc:
            self._connection_lost(f"write failed: {exc}")
            raise request.error(PumpConnectionError, str(exc)) from exc
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
            waiter.set_exception(request.error(PumpProtocolError, f"bad reply: {exc}"))

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
            waiter.set_exception(request.error(PumpConnectionError, reason))
        self._fail_queued(f"line {self.url} lost: {reason}")
        for member in list(self._members.values()):
            if member.on_lost is not None:
                member.on_lost(reason)
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.create_task(
                self._reconnect(), name=f"serial-reconnect {self.url}"
            )
