"""The one async pump interface both drivers implement, its values and its error root.

States and alarms are the vocabulary of interfaces.md section 2. Times of contact are wire time
(the event loop's monotonic clock), because link freshness (A2) is about real bytes on real links.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self

__all__ = [
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
]


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


class PumpError(Exception):
    """Root of every driver error. `retryable` says whether trying again can help."""

    retryable: bool = False

    def __init__(self, pump_id: str, operation: str, message: str) -> None:
        self.pump_id = pump_id
        self.operation = operation
        self.message = message
        super().__init__(f"pump {pump_id}: {operation}: {message}")


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

    def __init__(self, pump_id: str, operation: str, message: str, code: str) -> None:
        super().__init__(pump_id, operation, message)
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
    """An infusion pump reached through some transport. Use as an async context manager."""

    pump_id: str

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

    @abstractmethod
    async def connect(self) -> None:
        """Open the link and make first contact (raises `PumpConnectionError` / `PumpTimeout`)."""

    @abstractmethod
    async def close(self) -> None:
        """Close the link. Never raises for an already closed link."""

    @abstractmethod
    async def read_status(self) -> PumpStatus:
        """Ask the pump for its state now."""

    @abstractmethod
    async def set_rate(self, rate_ml_h: float) -> PumpStatus:
        """Program the rate (ml/h); allowed while running. Returns the status read after it."""

    @abstractmethod
    async def set_vtbi(self, vtbi_ml: float) -> PumpStatus:
        """Program the volume to be infused (ml). Returns the status read after it."""

    @abstractmethod
    async def run(self) -> PumpStatus:
        """Start infusing. Returns the status read after it."""

    @abstractmethod
    async def stop(self) -> PumpStatus:
        """Stop infusing; jumps any queue. Returns the status read after it."""

    @abstractmethod
    async def clear_volume(self) -> PumpStatus:
        """Reset the volume infused to zero. Returns the status read after it."""

    @property
    @abstractmethod
    def last_status(self) -> PumpStatus | None:
        """The last status read from the pump, or None before first contact."""

    @abstractmethod
    def status_changes(self) -> AsyncIterator[PumpStatus]:
        """Every change of status from now on (async iterator)."""
