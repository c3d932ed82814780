"""The independent safety envelope: a small monitor beside `decide()` that shares no code with it.

It reads only raw inputs (a nurse's reaction reports and resume requests, the rates commanded,
the pump's read-backs) and the protocol's numbers (maximum rate, escalation interval). It trips,
and the supervisor stops the pump at once through the driver and raises the loudest alarm (only
a clinician clears it), when:

- a rate above the protocol maximum is commanded or read back (L2);
- a commanded rate rises above the highest rate the pump ran at since the last resume after a
  reaction less than one interval of clinical time after that rate was reached, or after the
  resume (L1); a return to a rate already run (after an alarm, or a pump found slower) is no
  rise;
- the pump runs after a reaction report with no resume request since, and no stop was sent
  after the report (I1, I9; a stop sent and not confirmed is A3's loudest alarm, not this);
- a read-back above the last commanded rate, but within the maximum, persists for longer than
  the command timeout (A2's reconcile sets it down first; this is the backstop).

It imports nothing of the rules core: a deliberately broken `decide()` cannot break it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["SafetyEnvelope", "Trip"]

_RATE_EPSILON = 0.05  # half the pump's rate resolution
#: The envelope sees a read-back a moment after the core confirmed it (and after a restart only
#: at the first read): a rise within this much of one interval is the core's to judge (L1 holds
#: it exactly); the envelope is the backstop for rises far too early.
TIMING_TOLERANCE = 0.05  # of the interval


@dataclass(frozen=True, slots=True)
class Trip:
    """Why the envelope tripped, and the rule id it saw broken (a plain string: no core)."""

    rule: str
    reason: str


@dataclass
class SafetyEnvelope:
    """The monitor of one pump."""

    max_rate_ml_h: float
    interval: timedelta
    command_timeout_s: float
    top_rate_ml_h: float = 0.0  # the highest rate read back running since the last resume
    last_change_at: datetime | None = None  # when it was reached (or the resume)
    commanded_ml_h: float = 0.0  # the last rate commanded
    reaction_open: bool = False  # a reaction reported and no resume requested since
    stopped_since_reaction: bool = False  # a stop was sent after the report
    above_since: float | None = None  # wire time a read-back above the command began
    tripped: Trip | None = None

    def seed(
        self,
        history: list[tuple[datetime, float]],
        *,
        commanded_ml_h: float,
        reaction_open: bool,
    ) -> None:
        """Start from recorded read-backs (a rebuilt infusion, A4): a restart is no change."""
        for at, rate in history:
            if rate > self.top_rate_ml_h + _RATE_EPSILON:
                self.top_rate_ml_h, self.last_change_at = rate, at
        self.commanded_ml_h = commanded_ml_h
        self.reaction_open = reaction_open

    def reaction_reported(self) -> None:
        """A nurse reported a reaction: the pump must not run until a resume is asked for."""
        self.reaction_open = True
        self.stopped_since_reaction = False

    def stop_sent(self) -> None:
        """A stop went to the pump."""
        self.stopped_since_reaction = True

    def resume_requested(self, at: datetime) -> None:
        """A nurse resumed: after a reaction, the ladder starts again from here (I2)."""
        if self.reaction_open:
            self.last_change_at = at
            self.top_rate_ml_h = 0.0
        self.reaction_open = False

    def command(self, rate_ml_h: float, at: datetime) -> Trip | None:
        """A rate is about to be commanded; a Trip means it must not be sent."""
        if rate_ml_h > self.max_rate_ml_h + _RATE_EPSILON:
            return self._trip("L2", f"{rate_ml_h:g} ml/h commanded, above {self.max_rate_ml_h:g}")
        rises = self.top_rate_ml_h > 0 and rate_ml_h > self.top_rate_ml_h + _RATE_EPSILON
        early = self.interval * (1 - TIMING_TOLERANCE)
        if rises and self.last_change_at is not None and at - self.last_change_at < early:
            since = (at - self.last_change_at).total_seconds() / 60
            return self._trip(
                "L1", f"a rise to {rate_ml_h:g} ml/h only {since:.1f} min after the last change"
            )
        self.commanded_ml_h = rate_ml_h
        return None

    def read_back(
        self, *, running: bool, rate_ml_h: float, at: datetime, wire: float
    ) -> Trip | None:
        """A read-back of the pump (clinical time `at`, event-loop time `wire`)."""
        if running and rate_ml_h > self.max_rate_ml_h + _RATE_EPSILON:
            return self._trip("L2", f"pump read back at {rate_ml_h:g} ml/h")
        if running and self.reaction_open and not self.stopped_since_reaction:
            return self._trip("I9", "pump running after a reaction report, never told to stop")
        if running and rate_ml_h > self.commanded_ml_h + _RATE_EPSILON:
            if self.above_since is None:
                self.above_since = wire
            elif wire - self.above_since > self.command_timeout_s:
                return self._trip(
                    "A2", f"pump at {rate_ml_h:g} ml/h above {self.commanded_ml_h:g} for too long"
                )
        else:
            self.above_since = None
        if running and rate_ml_h > self.top_rate_ml_h + _RATE_EPSILON:
            self.top_rate_ml_h = rate_ml_h
            self.last_change_at = at
        return None

    def _trip(self, rule: str, reason: str) -> Trip:
        self.tripped = Trip(rule, reason)
        return self.tripped
