"""The one async pump interface both drivers implement, its values and its error root.

States and alarms are the vocabulary of interfaces.md section 2. Times of contact are wire time
(the event loop's monotonic clock), because link freshness (A2) is about real bytes on real links.

`Pump` carries what every driver does the same way: link health (connected, last contact,
staleness) and the confirmed stop (A3: shielded from cancellation, read back, retried, bounded in
time, "clamp the line" when unconfirmed). A driver supplies the transport: the commands and one
stop-and-read-back primitive, `_stop_once`.

Every command takes the controller's ledger id (`command_id`), so the fate of a command can be
traced to it: MQTT sends it as the command's `id`, the serial driver records it with each
exchange (in its logs) and every error carries it (`PumpError.command_id`).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self

__all__ = [
    "LINK_TIMEOUT_S",
    "STOP_ATTEMPTS",
    "Alarm",
    "Pump",
    "PumpCommandRejected",
    "PumpConfigError",
    "PumpConnectionError",
    "PumpError",
    "PumpNotConfirmed",
    "PumpProtocolError",
    "PumpState",
    "PumpStatus",
    "PumpTimeout",
    "StatusBroadcast",
    "attempt_id",
    "command_label",
]

_log = logging.getLogger(__name__)

#: A2 / interfaces.md section 2: a pump with no valid contact for longer than this (wire
#: seconds) is stale.
LINK_TIMEOUT_S = 5.0
#: A3: stops acknowledged with the read-back still showing the pump moving before the stop is
#: raised as not confirmed (a first stop, and one retry).
STOP_ATTEMPTS = 2


class PumpState(StrEnum):
    """What a pump is doing, as pumpctl names it (interfaces.md section 2)."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    ALARM = "alarm"
    OFFLINE = "offline"


class Alarm(StrEnum):
    """Pump alarms, as pumpctl names them (interfaces.md section 2)."""

    OCCLUSION = "occlusion"
    AIR_IN_LINE = "air_in_line"
    DOOR_OPEN = "door_open"
    EMPTY = "empty"
    LOW_BATTERY = "low_battery"
    MALFUNCTION = "malfunction"
    COMM_TIMEOUT = "comm_timeout"


@dataclass(frozen=True, slots=True)
class PumpStatus:
    """One reading of a pump. `last_contact` is event-loop time (`loop.time()`) of the reply."""

    pump_id: str
    state: PumpState
    rate_ml_h: float
    vtbi_ml: float
    volume_infused_ml: float
    alarms: frozenset[Alarm] = field(default_factory=frozenset)
    last_contact: float = 0.0

    def to_json(self) -> dict[str, object]:
        """The status as JSON-ready values (alarms sorted, for stable output)."""
        return {
            "pump_id": self.pump_id,
            "state": self.state.value,
            "rate_ml_h": self.rate_ml_h,
            "vtbi_ml": self.vtbi_ml,
            "volume_infused_ml": self.volume_infused_ml,
            "alarms": sorted(a.value for a in self.alarms),
        }

    def same_reading(self, other: PumpStatus | None) -> bool:
        """True when `other` says the same thing (ignoring the time of contact)."""
        return other is not None and self.to_json() == other.to_json()


def command_label(command_id: str | None) -> str:
    """` [command <id>]` for log lines and messages, or "" without a ledger id."""
    return f" [command {command_id}]" if command_id else ""


def attempt_id(command_id: str | None, attempt: int) -> str | None:
    """The ledger id of attempt `attempt` (0-based) of a command sent again on purpose (a stop
    whose read-back still shows the pump moving): the id itself first, then `<id>#2`, ... A
    retry is a new command on the wire, so an idempotent pump must not take it for a duplicate."""
    if command_id is None or attempt == 0:
        return command_id
    return f"{command_id}#{attempt + 1}"


class PumpError(Exception):
    """Root of every driver error. `retryable` says whether trying again can help.

    `command_id` is the controller's ledger id of the command that failed (None without one).
    """

    retryable: bool = False

    def __init__(
        self, pump_id: str, operation: str, message: str, *, command_id: str | None = None
    ) -> None:
        self.pump_id = pump_id
        self.operation = operation
        self.message = message
        self.command_id = command_id
        super().__init__(f"pump {pump_id}: {operation}{command_label(command_id)}: {message}")


class PumpTimeout(PumpError):
    """No valid reply in time. The command may or may not have taken effect: read back."""

    retryable = True


class PumpConnectionError(PumpError):
    """The link (port, broker) is down or was lost. Reconnect, then read back."""

    retryable = True


class PumpProtocolError(PumpError):
    """A reply that could not be understood (garbled, failed its check, wrong shape)."""

    retryable = True


class PumpNotConfirmed(PumpError):
    """A3: the pump answered, but its read-back does not show the command's effect (for a stop:
    the pump is still running). Alarm; trying again may help."""

    retryable = True


class PumpCommandRejected(PumpError):
    """The pump answered and refused (`?NA`, `?OOR`, unacknowledged alarm...). Don't repeat."""

    retryable = False

    def __init__(
        self,
        pump_id: str,
        operation: str,
        message: str,
        code: str,
        *,
        command_id: str | None = None,
    ) -> None:
        super().__init__(pump_id, operation, message, command_id=command_id)
        self.code = code


class PumpConfigError(PumpError):
    """A configuration that cannot work (bad address, overloaded line). Fix the configuration."""

    retryable = False


class StatusBroadcast:
    """Fan-out of status changes to any number of subscribers (each gets its own queue)."""

    def __init__(self, maxsize: int = 256) -> None:
        self._queues: set[asyncio.Queue[PumpStatus]] = set()
        self._maxsize = maxsize
        self.last: PumpStatus | None = None

    def publish(self, status: PumpStatus) -> None:
        """Record `status`; deliver it to subscribers if it differs from the last one."""
        changed = not status.same_reading(self.last)
        self.last = status
        if not changed:
            return
        for queue in self._queues:
            if queue.full():  # a slow subscriber loses the oldest reading, never the newest
                queue.get_nowait()
            queue.put_nowait(status)

    async def subscribe(self) -> AsyncIterator[PumpStatus]:
        """Yield every change from now on, until the consumer stops iterating."""
        queue: asyncio.Queue[PumpStatus] = asyncio.Queue(self._maxsize)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)


class Pump(ABC):
    """An infusion pump reached through some transport. Use as an async context manager.

    Link health is kept here: a driver calls `_set_linked` when its link comes and goes and
    `_touch` on every valid reply, and publishes readings to `_broadcast`.
    """

    #: Whether the pump says when an alarm's cause is gone (an MQTT pump names its standing
    #: alarms in every status). A New Era pump cannot: its driver keeps an acknowledged alarm
    #: until it sees the pump infusing, and only a nurse can say the cause was dealt with.
    reports_alarm_clearance: bool = True

    def __init__(self, pump_id: str, *, link_timeout_s: float = LINK_TIMEOUT_S) -> None:
        self.pump_id = pump_id
        self.link_timeout_s = link_timeout_s
        self._broadcast = StatusBroadcast()
        self._last_contact: float | None = None
        self._linked = asyncio.Event()
        self._unlinked = asyncio.Event()
        self._unlinked.set()
        self._stops: set[asyncio.Task[PumpStatus]] = set()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the transport (each driver) --------------------------------------------------------

    @abstractmethod
    async def connect(self) -> None:
        """Open the link and make first contact. A configuration that can never work raises
        `PumpConfigError`. A pump that cannot be reached now either raises
        `PumpConnectionError` / `PumpTimeout` (an MQTT pump by default) or returns with the link
        lost (A2) and keeps trying by itself (a serial pump; an MQTT pump with
        `start_unlinked=True`, as the service opens them): `connected` says which."""

    @abstractmethod
    async def close(self) -> None:
        """Close the link (after `_finish_stops`). Never raises for an already closed link."""

    @abstractmethod
    async def read_status(self, *, command_id: str | None = None) -> PumpStatus:
        """Ask the pump for its state now."""

    async def fresh_status(self) -> PumpStatus:
        """The pump's status for a periodic look (A2's freshness), not necessarily read now.

        A pump that pushes its status (MQTT, contract 2) is answered from the last status it
        pushed while that is fresh, and asked (`read_status`) only once it is overdue; a pump
        that speaks only when spoken to (serial) is asked every time, as here. Whoever needs the
        state at this very instant (a deadline, a virtual clock's settle) calls `read_status`."""
        return await self.read_status()

    @abstractmethod
    async def set_rate(self, rate_ml_h: float, *, command_id: str | None = None) -> PumpStatus:
        """Program the rate (ml/h); allowed while running. Returns the status read after it."""

    @abstractmethod
    async def set_vtbi(self, vtbi_ml: float, *, command_id: str | None = None) -> PumpStatus:
        """Program the volume to be infused (ml). Returns the status read after it."""

    @abstractmethod
    async def run(self, *, command_id: str | None = None) -> PumpStatus:
        """Start infusing. Returns the status read after it."""

    @abstractmethod
    async def clear_volume(self, *, command_id: str | None = None) -> PumpStatus:
        """Reset the volume infused to zero. Returns the status read after it."""

    @abstractmethod
    async def _stop_once(self, command_id: str | None) -> tuple[PumpStatus, str | None]:
        """Send one stop ahead of anything queued and read back: (status, None) when the
        read-back shows the pump not moving, else (status, what shows it moving)."""

    @property
    @abstractmethod
    def stop_worst_case_s(self) -> float:
        """The longest a `stop()` takes before it returns or raises (wire seconds), computed
        from this driver's timeouts and retry counts; `stop()` enforces it as a deadline."""

    # -- the confirmed stop (A3) ------------------------------------------------------------

    async def stop(self, *, command_id: str | None = None) -> PumpStatus:
        """Stop infusing; jumps any queue. Returns the read-back showing the pump not moving.

        A3: a read-back still showing the pump moving is stopped again (`STOP_ATTEMPTS` in all,
        each with its own `attempt_id`), then raises `PumpNotConfirmed` ("pump did not stop:
        clamp the line"). Shielded: a cancelled caller does not abandon a stop half-sent (the
        stop goes on, and a failure is logged at ERROR). Bounded: after `stop_worst_case_s`
        it raises `PumpTimeout` with the same words, whatever the pump answered meanwhile.
        """
        task = asyncio.create_task(
            self._confirmed_stop(command_id), name=f"pump-stop {self.pump_id}"
        )
        self._stops.add(task)
        task.add_done_callback(self._reap_stop)
        return await asyncio.shield(task)

    async def _confirmed_stop(self, command_id: str | None) -> PumpStatus:
        bound = self.stop_worst_case_s
        deadline = asyncio.timeout(bound)
        try:
            async with deadline:
                for attempt in range(STOP_ATTEMPTS):
                    status, moving = await self._stop_once(attempt_id(command_id, attempt))
                    if moving is None:
                        return status
                    _log.error(
                        "pump %s: stop acknowledged, %s%s",
                        self.pump_id,
                        moving,
                        command_label(command_id),
                    )
        except TimeoutError:
            if not deadline.expired():
                raise
            raise PumpTimeout(
                self.pump_id,
                "stop",
                f"pump did not stop: clamp the line (A3: not confirmed within {bound:.2f} s,"
                " the stop's worst case)",
                command_id=command_id,
            ) from None
        raise PumpNotConfirmed(
            self.pump_id,
            "stop",
            f"pump did not stop: clamp the line (A3: {STOP_ATTEMPTS} stops acknowledged, {moving},"
            f" {status.rate_ml_h} ml/h)",
            command_id=command_id,
        )

    def _reap_stop(self, task: asyncio.Task[PumpStatus]) -> None:
        """Forget a finished stop; a failed one is logged at ERROR (its caller may be gone)."""
        self._stops.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error("pump %s: stop failed: %s", self.pump_id, exc)

    async def _finish_stops(self) -> None:
        """Let stops under way finish (a driver's `close` calls this first)."""
        if self._stops:
            await asyncio.gather(*self._stops, return_exceptions=True)

    # -- link health (A2) -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the link is up and the pump is established on it."""
        return self._linked.is_set()

    @property
    def last_contact(self) -> float | None:
        """Event-loop time of the last valid reply or live status from the pump, or None."""
        return self._last_contact

    def is_stale(self, now: float | None = None) -> bool:
        """A2: True when no valid contact came for longer than the link timeout (or ever)."""
        if self._last_contact is None:
            return True
        if now is None:
            now = asyncio.get_running_loop().time()
        return now - self._last_contact > self.link_timeout_s

    async def wait_linked(self) -> None:
        """Return once the link is up and the pump established on it (bound it with a timeout)."""
        await self._linked.wait()

    async def wait_unlinked(self) -> None:
        """Return once the link is down or the pump closed (bound it with a timeout)."""
        await self._unlinked.wait()

    def _set_linked(self, *, linked: bool) -> None:
        if linked:
            self._unlinked.clear()
            self._linked.set()
        else:
            self._linked.clear()
            self._unlinked.set()

    def _touch(self) -> float:
        """Record a valid contact now; returns its event-loop time."""
        self._last_contact = asyncio.get_running_loop().time()
        return self._last_contact

    # -- status -----------------------------------------------------------------------------

    @property
    def last_status(self) -> PumpStatus | None:
        """The last status read from the pump, or None before first contact."""
        return self._broadcast.last

    def status_changes(self) -> AsyncIterator[PumpStatus]:
        """Every change of status from now on (async iterator)."""
        return self._broadcast.subscribe()
