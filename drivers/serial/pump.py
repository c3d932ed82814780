"""One New Era pump on a line: framing (basic or safe), the safe-mode watchdog, the commands.

`SerialPump` implements `drivers.base.Pump` on a `SerialLine` and keeps the safe-mode watchdog
fed. Rule A3: every command is read back; the methods return that reading. A command's ledger
id travels with each of its exchanges on the line (logged there) and in any error it raises.
After the line lost
its port and got it back, the pump re-establishes its framing and safe mode with `SAF` and
queries only, then reads and publishes its real state (A2: a pump that stopped while the link was
down is reported, never restarted or sped up). A pump that cannot be reached when it connects
(its line's port is not there yet, or it does not answer) starts unlinked the same way, with one
warning, and is identified and linked by its link task once it answers: one unplugged adapter or
silent pump never stops the start of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace

from drivers.backoff import backoff_delay
from drivers.base import (
    LINK_TIMEOUT_S,
    STOP_ATTEMPTS,
    Alarm,
    Pump,
    PumpCommandRejected,
    PumpConfigError,
    PumpConnectionError,
    PumpError,
    PumpProtocolError,
    PumpState,
    PumpStatus,
    PumpTimeout,
)
from drivers.serial.codec import (
    ALARM_CODES,
    MAX_NUMBER,
    MAX_SAFE_MODE_S,
    RATE_UNITS,
    VOLUME_UNITS,
    Command,
    Reply,
    format_number,
    parse_dispensed,
    parse_quantity,
)
from drivers.serial.line import (
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_SAFE_MODE_S,
    EXCHANGE_RETRIES,
    LineMember,
    Priority,
    SerialLine,
    feed_interval,
)
from drivers.serial.status import ALARM_OF_CODE, ALARM_OF_STATUS, MOVING_STATUS, STATE_OF_STATUS

__all__ = ["COMMAND_TIMEOUT_S", "LINK_TIMEOUT_S", "RELINK_MAX_S", "SerialPump"]

log = logging.getLogger(__name__)

#: An alarm reply means the command was not executed (it acknowledged one alarm): send again,
#: once for each alarm code a pump can have standing, so a stop gets through them all (A1, A3).
ALARM_RESENDS = len(ALARM_CODES)
#: Cap of the backoff between attempts to link a pump that does not answer (wire seconds). Each
#: attempt of a silent pump holds its line for one reply timeout (a probe: one try), so its
#: neighbours on the line keep most of it; the pump is linked within this long of answering.
RELINK_MAX_S = 5.0
#: A lost watchdog feed is tried again after a tenth of the period (each try bounded by the
#: reply timeout), so several lost feeds in a row still leave margin before the pump stops.
WATCHDOG_RETRY_FRACTION = 1 / 10
MAX_RATE_ML_H = MAX_VTBI_ML = MAX_NUMBER
#: A3's command timeout (wire seconds, the controller's default): once a pump answered a stop,
#: each exchange of the stop's read-back is tried for this long, not only the line's own tries.
COMMAND_TIMEOUT_S = 2.0

_RATE_REPLY = re.compile(rf"\d*\.?\d*({'|'.join(RATE_UNITS)})")
_VOLUME_REPLY = re.compile(rf"\d*\.?\d*({'|'.join(VOLUME_UNITS)})")
_DISPENSED_REPLY = re.compile(rf"I\d*\.?\d*W\d*\.?\d*({'|'.join(VOLUME_UNITS)})")
#: The queries of a read-back and the shape of their replies.
_READ_BACK = (("RAT", _RATE_REPLY), ("VOL", _VOLUME_REPLY), ("DIS", _DISPENSED_REPLY))
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


class SerialPump(Pump):
    """A New Era pump at `address` on `line`.

    `safe_mode_s`: n (1-255) switches safe mode on at connect (SAF n) and keeps its watchdog fed;
    0 switches it off (SAF 0); None changes nothing (framing and SAF are detected with queries
    only, as `pumpctl pump status` needs). In safe mode a silent controller stops the pump.
    After the line lost its port and got it back, the same is done again and the real state is
    read and published (A2); `connected`, `last_contact` and `is_stale` tell the link's health.
    A pump not reachable at connect starts unlinked and is linked once it answers (`connect`);
    `relink_max_s` caps the backoff between attempts to link a pump that does not answer.
    `command_timeout_s` (A3) bounds how long the read-back of a stop the pump answered is tried.
    """

    reports_alarm_clearance = False  # the protocol cannot say when a cause was cleared

    def __init__(
        self,
        line: SerialLine,
        address: int,
        *,
        pump_id: str | None = None,
        safe_mode_s: int | None = DEFAULT_SAFE_MODE_S,
        poll_interval_s: float | None = DEFAULT_POLL_INTERVAL_S,
        link_timeout_s: float = LINK_TIMEOUT_S,
        relink_max_s: float = RELINK_MAX_S,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        super().__init__(pump_id or f"serial:{line.url}#{address}", link_timeout_s=link_timeout_s)
        for name, value in (
            ("relink_max_s", relink_max_s),
            ("command_timeout_s", command_timeout_s),
        ):
            if not value > 0:
                raise PumpConfigError(self.pump_id, "configure", f"{name} must be > 0: {value}")
        if not 0 <= address <= 99:
            raise PumpConfigError(self.pump_id, "configure", f"address {address}: must be 0-99")
        if safe_mode_s is not None and not 0 <= safe_mode_s <= MAX_SAFE_MODE_S:
            raise PumpConfigError(
                self.pump_id, "configure", f"safe_mode_s {safe_mode_s}: must be 0-255 or None"
            )
        self.line = line
        self.address = address
        self.relink_max_s = relink_max_s
        self.command_timeout_s = command_timeout_s
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
        self._link_task: asyncio.Task[None] | None = None
        self._registered = False
        #: Identified once (framing, VER, status read): commands may be sent.
        self._established = False
        #: Why the pump is not linked (for its warning and its errors), else None.
        self._unlinked_reason: str | None = None
        #: A warning about this unlinked period was logged (one per period, no flood).
        self._warned = False
        #: Times the pump was re-established after the line came back.
        self.reconnections = 0

    # -- life -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Register on the line, set (or detect) the framing, identify, read the status.

        A pump that cannot be reached now, because its line's port is not there yet or the pump
        does not answer, does not raise: it starts unlinked (A2: `connected` False, its commands
        fail at once with `PumpConnectionError`), one warning names it, its port and why, and
        the owned link task identifies it as this would have (framing, `VER`, status read) once
        it answers; then it is linked. Errors that retrying cannot cure still raise: a line
        never opened or closed, a taken address, an overloaded line, a command refused."""
        if not self.line.is_open and self.line.lost_reason is None:
            raise PumpConnectionError(self.pump_id, "connect", f"line {self.line.url} not open")
        self.line.register(self._member, self._on_unsolicited, self._on_line_lost)
        self._registered = True
        failures = 0
        try:
            if self.line.is_open:
                try:
                    await self._establish(probe=False)
                except PumpError as exc:
                    if not exc.retryable:
                        raise
                    self._unlinked_reason, failures = exc.message, 1
            else:
                self._unlinked_reason = self.line.lost_reason
        except BaseException:
            await self.close()
            raise
        if not self._established:
            log.warning(
                "%s: starts unlinked (port %s, address %d): %s; it is linked when it answers (A2)",
                self.pump_id,
                self.line.url,
                self.address,
                self._unlinked_reason,
            )
            self._warned = True
        self._link_task = asyncio.create_task(
            self._keep_link(failures), name=f"serial-link {self.pump_id}"
        )

    async def close(self) -> None:
        """Stop feeding the watchdog and leave the line; the pump's mode is left as it is."""
        if self._link_task is not None:
            self._link_task.cancel()
            await asyncio.gather(self._link_task, return_exceptions=True)
            self._link_task = None
        await self._finish_stops()
        if self._registered:
            self.line.unregister(self.address)
            self._registered = False
        self._set_linked(linked=False)

    async def _set_framing(self, operation: str, *, probe: bool = False) -> None:
        """Framing and safe mode as configured: `SAF n`, or detected with queries only. A `probe`
        (a pump that did not answer last time) sends its first exchange once, quietly: a silent
        pump then costs its line one reply timeout per attempt, and the log nothing."""
        retries = 0 if probe else EXCHANGE_RETRIES
        if self.requested_safe_mode_s is None:
            await self._detect_framing(operation, retries=retries, quiet=probe)
        else:
            n = self.requested_safe_mode_s
            await self._command("SAF", str(n), operation, safe=True, retries=retries, quiet=probe)
            self._safe, self.safe_mode_s = n > 0, n

    async def _detect_framing(
        self, operation: str, *, retries: int = EXCHANGE_RETRIES, quiet: bool = False
    ) -> None:
        """Find the framing in force with status queries only (basic first), then SAF's period."""
        try:
            reply: Reply | None = await self._send(
                Command(self.address),
                operation,
                retries=0,
                expect=_expect(_EMPTY_REPLY),
                quiet=quiet,
            )
        except PumpTimeout:
            reply = None
        if reply is None or reply.safe or reply.error == "COM":
            reply = await self._send(
                Command(self.address, safe=True),
                operation,
                retries=retries,
                expect=_expect(_EMPTY_REPLY),
                quiet=quiet,
            )
        self._safe = reply.safe
        if self._safe:
            period = await self._command("SAF", "", operation, expect=_INTEGER_REPLY)
            self.safe_mode_s = int(period.data)
        else:
            self.safe_mode_s = 0

    # -- reconnection ---------------------------------------------------------------------

    def _on_line_lost(self, reason: str) -> None:
        """The line lost its port (it logs that): re-establish this pump when it is back."""
        self._unlinked_reason = reason
        self._set_linked(linked=False)

    def _not_linked_yet(self, operation: str, command_id: str | None) -> None:
        """Raise PumpConnectionError, at once and sending nothing, while a pump that started
        unlinked was never identified (its framing is not known: nothing can be said to it)."""
        if self._established or self._link_task is None:
            return
        raise PumpConnectionError(
            self.pump_id,
            operation,
            f"not linked yet (port {self.line.url}, address {self.address}):"
            f" {self._unlinked_reason}",
            command_id=command_id,
        )

    async def _keep_link(self, failures: int = 0) -> None:
        """Owned task: establish the pump (first contact after an unlinked start, or again each
        time the line comes back), then feed the watchdog. `failures`: attempts failed so far;
        after a failure the next attempt waits its backoff and is a probe."""
        loop = asyncio.get_running_loop()
        feed_failing = False
        while True:
            if not self._linked.is_set():
                if failures:
                    await asyncio.sleep(
                        backoff_delay(failures - 1, self.line.reconnect_min_s, self.relink_max_s)
                    )
                await self.line.wait_connected()
                try:
                    await self._establish(probe=failures > 0)
                except PumpError as exc:
                    self._unlinked_reason = exc.message
                    if isinstance(exc, PumpConnectionError) and not self.line.is_open:
                        continue  # lost again (the line logs that): wait for the line
                    if not self._warned:  # once per unlinked period, however long it lasts
                        log.warning(
                            "%s: not linked (port %s, address %d), retrying: %s",
                            self.pump_id,
                            self.line.url,
                            self.address,
                            exc.message,
                        )
                        self._warned = True
                    failures += 1
                    continue
                failures = 0
                continue
            period = self.safe_mode_s if self._safe else 0
            if not period:
                await self._unlinked.wait()
                continue
            interval = feed_interval(period)
            idle = loop.time() - (self._last_contact or 0.0)
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

    async def _establish(self, *, probe: bool) -> None:
        """Framing and safe mode as configured, the pump identified (`VER`, until it once
        answered it), then the real state read and published; then linked.

        A2: only `SAF` and queries are sent, on a first contact as after the line came back: a
        pump found stopped (its watchdog expired: comm_timeout) or running is reported and left
        as it is, never started, restarted or sped up."""
        first = not self._established
        operation = "connect" if first else "reconnect"
        before = self._broadcast.last
        await self._set_framing(operation, probe=probe)
        if self.firmware is None:
            version = await self._command("VER", "", operation, expect=_VERSION_REPLY)
            self.firmware = version.data
        status = await self._read(operation, Priority.NORMAL)
        self._established = True
        self._unlinked_reason = None
        warned, self._warned = self._warned, False
        self._set_linked(linked=self.line.is_open)
        if first:
            if warned:  # it started unlinked: say that it is linked now, as loudly
                log.warning(
                    "%s: linked (port %s, address %d, firmware %s): pump %s%s at %s ml/h (A2)",
                    self.pump_id,
                    self.line.url,
                    self.address,
                    self.firmware,
                    status.state.value,
                    "".join(f" [{a.value}]" for a in sorted(status.alarms)),
                    status.rate_ml_h,
                )
            return
        self.reconnections += 1
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

    async def read_status(self, *, command_id: str | None = None) -> PumpStatus:
        """Read rate (RAT), volume to be infused (VOL) and volume infused (DIS)."""
        self._not_linked_yet("read_status", command_id)
        return await self._read("read_status", Priority.NORMAL, command_id)

    async def set_rate(self, rate_ml_h: float, *, command_id: str | None = None) -> PumpStatus:
        """`RAT <rate> MH`, then read back."""
        self._not_linked_yet("set_rate", command_id)
        text = self._number("set_rate", "rate_ml_h", rate_ml_h, MAX_RATE_ML_H, command_id)
        await self._command("RAT", f"{text}MH", "set_rate", command_id=command_id)
        return await self._read("set_rate", Priority.NORMAL, command_id)

    async def set_vtbi(self, vtbi_ml: float, *, command_id: str | None = None) -> PumpStatus:
        """`VOL ML` then `VOL <ml>`, then read back."""
        self._not_linked_yet("set_vtbi", command_id)
        text = self._number("set_vtbi", "vtbi_ml", vtbi_ml, MAX_VTBI_ML, command_id)
        await self._command("VOL", "ML", "set_vtbi", command_id=command_id)
        await self._command("VOL", text, "set_vtbi", command_id=command_id)
        return await self._read("set_vtbi", Priority.NORMAL, command_id)

    async def run(self, *, command_id: str | None = None) -> PumpStatus:
        """`DIR INF` (an infusion pump never withdraws), `RUN`, then read back."""
        self._not_linked_yet("run", command_id)
        await self._command("DIR", "INF", "run", command_id=command_id)
        await self._command("RUN", "", "run", command_id=command_id)
        return await self._read("run", Priority.NORMAL, command_id)

    async def clear_volume(self, *, command_id: str | None = None) -> PumpStatus:
        """`CLD INF`, then read back."""
        self._not_linked_yet("clear_volume", command_id)
        await self._command("CLD", "INF", "clear_volume", command_id=command_id)
        return await self._read("clear_volume", Priority.NORMAL, command_id)

    async def _stop_once(self, command_id: str | None) -> tuple[PumpStatus, str | None]:
        """`STP` ahead of any queued request; its reply carries the pump's state, so that one
        exchange confirms a stop (A3), and one more (`DIS`) reads the volume at the stop (rate
        and VTBI do not change with a stop). Only a reply still showing I, W or X costs the
        full read-back (rate, VTBI, volume) to say what the pump is doing.

        A3: once the pump answered the `STP`, each exchange of the read-back is tried until
        `command_timeout_s` has passed, not only the line's own tries: a pump that stopped and
        answers late, within the command timeout, confirms its stop. A `STP` with no valid
        answer raises after the line's tries; the controller sends the stop again (A3: retry,
        then alarm; pumpctl.controller.carry)."""
        self._not_linked_yet("stop", command_id)
        await self._command("STP", "", "stop", priority=Priority.STOP, command_id=command_id)
        within = self.command_timeout_s
        last = self._broadcast.last
        if self._status_char not in MOVING_STATUS and last is not None:
            dis = await self._command(
                "DIS",
                "",
                "stop",
                expect=_DISPENSED_REPLY,
                priority=Priority.STOP,
                command_id=command_id,
                within_s=within,
            )
            try:
                infused, _withdrawn, unit = parse_dispensed(dis.data)
            except ValueError as exc:
                raise PumpProtocolError(
                    self.pump_id, "stop", str(exc), command_id=command_id
                ) from None
            state, alarms = self._state()
            status = replace(
                last,
                state=state,
                alarms=alarms,
                volume_infused_ml=round(infused * VOLUME_UNITS[unit], 4),
                last_contact=self._last_contact or 0.0,
            )
            self._broadcast.publish(status)
            return status, None
        status = await self._read("stop", Priority.STOP, command_id, within_s=within)
        if self._status_char not in MOVING_STATUS:
            return status, None
        return status, f"the read-back still shows status {self._status_char!r}"

    @property
    def stop_worst_case_s(self) -> float:
        """The longest a stop takes: the exchange already in flight when the stop is queued (a
        stop jumps the queue and keeps its place through its retries and read-backs), then for
        each of STOP_ATTEMPTS attempts the `STP` answered only at its last try
        ((EXCHANGE_RETRIES + 1) x the line's longest exchange, its reply timeout plus the wire
        time of the longest command and reply) and the full read-back (3 exchanges), each
        answered only at its last try, started just before `command_timeout_s` ran out
        (`command_timeout_s` + the longest exchange, or its retries if longer). By default
        0.547 + 2 x (3 x 0.547 + 3 x 2.547) = 19.1 s at 19200 baud; a pump that does not
        answer fails sooner, after the `STP`'s tries (about 4 x 0.547 s = 2.2 s). Stops of other
        pumps on the same line queued ahead of this one come on top. Alarm and `?COM` replies
        make a command be sent again; `stop()` cuts them off at this bound.
        """
        longest = self.line.longest_exchange_s
        tries = (EXCHANGE_RETRIES + 1) * longest
        read_back = max(tries, self.command_timeout_s + longest)
        return longest + STOP_ATTEMPTS * (tries + len(_READ_BACK) * read_back)

    # -- internals --------------------------------------------------------------------------

    def _number(
        self, operation: str, name: str, value: float, maximum: float, command_id: str | None
    ) -> str:
        try:
            text = format_number(value, point=False)
        except ValueError:
            text = ""
        if not text or not 0 < float(text) <= maximum:
            raise PumpCommandRejected(
                self.pump_id,
                operation,
                f"{name} {value!r} out of range (0, {maximum}]",
                "OOR",
                command_id=command_id,
            )
        return text

    async def _read(
        self,
        operation: str,
        priority: Priority,
        command_id: str | None = None,
        *,
        within_s: float | None = None,
    ) -> PumpStatus:
        rat, vol, dis = [
            await self._command(
                name,
                "",
                operation,
                expect=shape,
                priority=priority,
                command_id=command_id,
                within_s=within_s,
            )
            for name, shape in _READ_BACK
        ]
        try:
            rate, rate_unit = parse_quantity(rat.data, RATE_UNITS)
            vtbi, vtbi_unit = parse_quantity(vol.data, VOLUME_UNITS)
            infused, _withdrawn, dis_unit = parse_dispensed(dis.data)
        except ValueError as exc:
            raise PumpProtocolError(
                self.pump_id, operation, str(exc), command_id=command_id
            ) from None
        state, alarms = self._state()
        status = PumpStatus(
            pump_id=self.pump_id,
            state=state,
            rate_ml_h=round(rate * RATE_UNITS[rate_unit], 4),
            vtbi_ml=round(vtbi * VOLUME_UNITS[vtbi_unit], 4),
            volume_infused_ml=round(infused * VOLUME_UNITS[dis_unit], 4),
            alarms=alarms,
            last_contact=self._last_contact or 0.0,
        )
        self._broadcast.publish(status)
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
        command_id: str | None = None,
        retries: int = EXCHANGE_RETRIES,
        quiet: bool = False,
        within_s: float | None = None,
    ) -> Reply:
        """Send one command in the framing in force; raise PumpCommandRejected on `?` replies.
        `within_s`: the line's tries go on that long (SerialLine.exchange)."""
        framing = self._safe if safe is None else safe
        command = Command(self.address, name, data, safe=framing)
        for _attempt in range(EXCHANGE_RETRIES + 1):
            reply = await self._send(
                command,
                operation,
                priority=priority,
                retries=retries,
                expect=_expect(expect),
                command_id=command_id,
                quiet=quiet,
                within_s=within_s,
            )
            if reply.error != "COM":
                break
            # ?COM: the pump received a damaged packet and did nothing; sending again is safe
        else:
            raise PumpProtocolError(
                self.pump_id,
                operation,
                f"pump answered ?COM (bad packet) to {command.payload.decode()!r}"
                f" {EXCHANGE_RETRIES + 1} times: check the line and its framing",
                command_id=command_id,
            )
        if reply.error is not None:
            code = reply.error or "?"
            raise PumpCommandRejected(
                self.pump_id,
                operation,
                f"pump refused {command.payload.decode()!r}: ?{reply.error}",
                code,
                command_id=command_id,
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
        command_id: str | None = None,
        quiet: bool = False,
        within_s: float | None = None,
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
                command_id=command_id,
                quiet=quiet,
                within_s=within_s,
            )
            self._note(reply, acknowledged=True)
            if reply.alarm is None:
                return reply
        raise PumpCommandRejected(
            self.pump_id,
            operation,
            f"pump kept answering alarm A?{reply.alarm} to {command.payload.decode()!r}",
            f"A?{reply.alarm}",
            command_id=command_id,
        )

    def _note(self, reply: Reply, *, acknowledged: bool) -> None:
        """Learn from any valid reply: its status char, or the alarm it carries (latched)."""
        contact = self._touch()
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
        if (last := self._broadcast.last) is not None:
            state, alarms = self._state()
            self._broadcast.publish(replace(last, state=state, alarms=alarms, last_contact=contact))

    def _state(self) -> tuple[PumpState, frozenset[Alarm]]:
        """The pumpctl state and alarms: latched alarm replies, and W/X as a malfunction."""
        alarms = set(self._latched)
        if self._status_char in ALARM_OF_STATUS:
            alarms.add(ALARM_OF_STATUS[self._status_char])
        state = PumpState.ALARM if alarms else STATE_OF_STATUS[self._status_char]
        return state, frozenset(alarms)

    def _on_unsolicited(self, reply: Reply) -> None:
        """An alarm the pump sent on its own (safe mode): record it, it is not acknowledged."""
        self._note(reply, acknowledged=False)
