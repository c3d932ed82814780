"""The simulated pump: volume integrates rate on the injected clinical clock; alarms; faults.

The model is transport-free. The serial and MQTT servers translate their wire protocol into
calls on it and honour its `Faults` switches (which are about the wire: no reply, late reply,
garbled reply, refuse the next command, apply a rate late, drop the connection).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from drivers.base import Alarm, PumpState, PumpStatus
from drivers.serial.codec import MAX_NUMBER
from pumpctl.clock import Clock

__all__ = ["FAULT_NAMES", "HISTORY_LIMIT", "Change", "Faults", "PumpModel", "SimulatorError"]

#: Largest rate and volume the simulated pump accepts (an NE pump's 4-digit field).
MAX_RATE_ML_H = MAX_VTBI_ML = MAX_NUMBER

#: Changes a model keeps in `history` (the oldest are dropped beyond it).
HISTORY_LIMIT = 10_000

FAULT_NAMES = (
    "no_reply",  # bool: swallow commands, answer nothing
    "late_reply_s",  # float: answer this many (wire) seconds late
    "garble_replies",  # int: garble the next N replies (a flipped bit / bad CRC)
    "refuse_next",  # int: answer the next N commands with ?NA and do nothing
    "rate_delay_s",  # float: acknowledge a rate at once, apply it this many wire seconds later
    "drop_connection",  # bool: close the link / go offline (one shot, the server resets it)
    "damage_commands",  # int: the next N commands arrive damaged (serial: ?COM, not executed)
)


class SimulatorError(ValueError):
    """A request the simulated pump refuses (names the field); the servers map it to the wire."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "NA" (not applicable now) or "OOR" (out of range)


@dataclass
class Faults:
    """Switches a test may flip at any moment; see FAULT_NAMES for what each does."""

    no_reply: bool = False
    late_reply_s: float = 0.0
    garble_replies: int = 0
    refuse_next: int = 0
    rate_delay_s: float = 0.0
    drop_connection: bool = False
    damage_commands: int = 0

    def set(self, name: str, value: float | bool) -> None:
        """Set a fault by name, coercing to the field's type (ValueError names the fault)."""
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})")
        current = getattr(self, name)
        if isinstance(current, bool):
            setattr(self, name, bool(value))
        elif isinstance(current, int):
            setattr(self, name, int(value))
        else:
            setattr(self, name, float(value))

    def take_refusal(self) -> bool:
        """Consume one `refuse_next`; True if this command must be refused."""
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return True
        return False

    def take_damage(self) -> bool:
        """Consume one `damage_commands`; True if this command arrived damaged."""
        if self.damage_commands > 0:
            self.damage_commands -= 1
            return True
        return False

    def take_garble(self) -> bool:
        """Consume one `garble_replies`; True if this reply must be garbled."""
        if self.garble_replies > 0:
            self.garble_replies -= 1
            return True
        return False


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a model's history: what changed it (the model's operation), and its state
    right after, at clinical time `at` (ISO 8601)."""

    at: str
    cause: str  # set_rate, set_vtbi, run, stop, pause, clear_volume, alarm, clear_alarm
    state: str
    rate_ml_h: float
    vtbi_ml: float
    volume_ml: float

    def to_json(self) -> dict[str, object]:
        """The entry as the control interface reports it."""
        return {
            "at": self.at,
            "cause": self.cause,
            "state": self.state,
            "rate_ml_h": self.rate_ml_h,
            "vtbi_ml": self.vtbi_ml,
            "volume_ml": self.volume_ml,
        }


class PumpModel:
    """One simulated large-volume pump on clinical time.

    `history` keeps the last `HISTORY_LIMIT` changes (one per effect of a command, an alarm or a
    clear), so a test can check what the pump really did (its rates over time, each command's
    effect once) without watching it continuously.
    """

    def __init__(self, pump_id: str, clock: Clock, *, address: int = 0) -> None:
        self.pump_id = pump_id
        self.address = address
        self.clock = clock
        self.faults = Faults()
        self._state = PumpState.STOPPED
        self._rate = 0.0
        self._vtbi = 0.0
        self._volume = 0.0  # volume infused at `_since`
        self._since = clock.now()
        self._alarms: set[Alarm] = set()
        self.completed = False  # the VTBI was delivered and the pump stopped by itself
        self.listeners: list[Callable[[], None]] = []  # called after every change
        self._pending_rate: asyncio.TimerHandle | None = None
        self.history: deque[Change] = deque(maxlen=HISTORY_LIMIT)

    # -- reading -------------------------------------------------------------------------

    def _settle(self, now: datetime) -> None:
        """Bring volume up to `now`, stopping at the VTBI (L3: the pump stops itself)."""
        if self._state is PumpState.RUNNING and now > self._since:
            hours = (now - self._since).total_seconds() / 3600
            delivered = self._volume + self._rate * hours
            if self._vtbi > 0 and delivered >= self._vtbi:
                self._volume = self._vtbi
                self._state = PumpState.STOPPED
                self.completed = True
            else:
                self._volume = delivered
        self._since = max(self._since, now)

    def completion_at(self) -> datetime | None:
        """When the running pump will have delivered its VTBI, or None."""
        self._settle(self.clock.now())
        if self._state is not PumpState.RUNNING or self._rate <= 0 or self._vtbi <= 0:
            return None
        return self._since + timedelta(hours=(self._vtbi - self._volume) / self._rate)

    def status(self, last_contact: float = 0.0) -> PumpStatus:
        """The pump's state now."""
        self._settle(self.clock.now())
        return PumpStatus(
            pump_id=self.pump_id,
            state=self._state,
            rate_ml_h=self._rate,
            vtbi_ml=self._vtbi,
            volume_infused_ml=round(self._volume, 3),
            alarms=frozenset(self._alarms),
            last_contact=last_contact,
        )

    @property
    def state(self) -> PumpState:
        """The pump's state now."""
        self._settle(self.clock.now())
        return self._state

    @property
    def alarms(self) -> frozenset[Alarm]:
        """The alarms standing now."""
        return frozenset(self._alarms)

    # -- commands ------------------------------------------------------------------------

    def set_rate(self, rate_ml_h: float) -> None:
        """Program the rate; honours the `rate_delay_s` fault (applied later on wire time)."""
        if not 0 < rate_ml_h <= MAX_RATE_ML_H:
            raise SimulatorError("OOR", f"rate_ml_h {rate_ml_h} out of range (0, {MAX_RATE_ML_H}]")
        self._refuse_while_alarmed("set rate")
        if self.faults.rate_delay_s > 0:
            if self._pending_rate is not None:
                self._pending_rate.cancel()
            loop = asyncio.get_running_loop()
            self._pending_rate = loop.call_later(
                self.faults.rate_delay_s, self._apply_rate, rate_ml_h
            )
            return
        self._apply_rate(rate_ml_h)

    def _apply_rate(self, rate_ml_h: float) -> None:
        self._pending_rate = None
        self._settle(self.clock.now())
        self._rate = rate_ml_h
        self._changed("set_rate")

    def set_vtbi(self, vtbi_ml: float) -> None:
        """Program the volume to be infused."""
        if not 0 < vtbi_ml <= MAX_VTBI_ML:
            raise SimulatorError("OOR", f"vtbi_ml {vtbi_ml} out of range (0, {MAX_VTBI_ML}]")
        self._refuse_while_alarmed("set VTBI")
        self._settle(self.clock.now())
        if self._state is PumpState.RUNNING and vtbi_ml <= self._volume:
            raise SimulatorError("NA", f"vtbi_ml {vtbi_ml} is not above the volume infused")
        self._vtbi = vtbi_ml
        self.completed = False
        self._changed("set_vtbi")

    def run(self) -> None:
        """Start infusing (refused while alarmed, with no rate, or with the VTBI delivered)."""
        self._refuse_while_alarmed("run")
        self._settle(self.clock.now())
        if self._rate <= 0:
            raise SimulatorError("NA", "run: no rate programmed")
        if self._vtbi > 0 and self._volume >= self._vtbi:
            raise SimulatorError("NA", "run: the VTBI has been delivered; clear the volume")
        if self._state is not PumpState.RUNNING:
            self._state = PumpState.RUNNING
            self.completed = False
            self._changed("run")

    def stop(self) -> None:
        """Stop infusing. Always accepted; an alarmed pump stays alarmed."""
        self._settle(self.clock.now())
        if self._state in (PumpState.RUNNING, PumpState.PAUSED):
            self._state = PumpState.STOPPED
            self._changed("stop")

    def pause(self) -> None:
        """Pause (a pump-side pause, as a nurse pressing the pump's own pause key)."""
        self._settle(self.clock.now())
        if self._state is PumpState.RUNNING:
            self._state = PumpState.PAUSED
            self._changed("pause")

    def clear_volume(self) -> None:
        """Reset the volume infused to zero (refused while running)."""
        self._settle(self.clock.now())
        if self._state is PumpState.RUNNING:
            raise SimulatorError("NA", "clear volume: the pump is running")
        self._volume = 0.0
        self.completed = False
        self._changed("clear_volume")

    def power_cycle(self) -> None:
        """The pump loses power and comes back: stopped, its program (rate, VTBI), its volume
        counter and its alarms gone, as a pump with no memory of them would be."""
        self._settle(self.clock.now())
        if self._pending_rate is not None:
            self._pending_rate.cancel()
            self._pending_rate = None
        self._state = PumpState.STOPPED
        self._rate = self._vtbi = self._volume = 0.0
        self._alarms.clear()
        self.completed = False
        self._changed("power_cycle")

    # -- alarms --------------------------------------------------------------------------

    def raise_alarm(self, alarm: Alarm) -> None:
        """Raise an alarm: the pump stops at once and keeps its rate and volume."""
        self._settle(self.clock.now())
        self._alarms.add(alarm)
        self._state = PumpState.ALARM
        self._changed("alarm")

    def clear_alarm(self, alarm: Alarm) -> None:
        """Clear an alarm; with none left the pump is stopped and restarts only when told."""
        self._settle(self.clock.now())
        if alarm not in self._alarms:
            raise SimulatorError("NA", f"alarm {alarm.value!r} is not raised")
        self._alarms.discard(alarm)
        if not self._alarms:
            self._state = PumpState.STOPPED
        self._changed("clear_alarm")

    def _refuse_while_alarmed(self, what: str) -> None:
        if self._alarms:
            names = ", ".join(sorted(a.value for a in self._alarms))
            raise SimulatorError("NA", f"{what}: refused while alarmed ({names})")

    def _changed(self, cause: str) -> None:
        # every caller settled the volume at the instant of its change (`_since`) first
        self.history.append(
            Change(
                at=self._since.isoformat(),
                cause=cause,
                state=self._state.value,
                rate_ml_h=self._rate,
                vtbi_ml=self._vtbi,
                volume_ml=round(self._volume, 3),
            )
        )
        for listener in list(self.listeners):
            listener()
