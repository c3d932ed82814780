"""What the controller feeds `decide()`: nurse and clinician actions, pump facts, time passing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pumpctl.core.history import Grade, Sign
from pumpctl.core.machine.state import Instant, Rate, Value, Volume


class EventBase(Value):
    pass


class Start(EventBase):
    """L3: program VTBI = bag and the initial rate, then run."""

    kind: Literal["start"] = "start"
    actor: str | None = None


class PumpConfirmedRunning(EventBase):
    """A3: the pump reads back running at `rate_ml_h`; volume is from the bag in use."""

    kind: Literal["pump_running"] = "pump_running"
    rate_ml_h: Rate
    volume_infused_ml: Volume


class PumpConfirmedStopped(EventBase):
    """A3: the pump reads back stopped; volume is from the bag in use."""

    kind: Literal["pump_stopped"] = "pump_stopped"
    volume_infused_ml: Volume


class PumpCompleted(EventBase):
    """L3: the pump reports the VTBI delivered."""

    kind: Literal["pump_completed"] = "pump_completed"
    volume_infused_ml: Volume


class TimePassed(EventBase):
    """Clinical time reached `now` (normally the instant of `next_deadline`)."""

    kind: Literal["time_passed"] = "time_passed"


class ReactionReported(EventBase):
    """I1: a nurse reports a reaction (grade 1-4 and signs; onset if earlier than the report)."""

    kind: Literal["reaction"] = "reaction"
    grade: Grade
    signs: frozenset[Sign] = frozenset({Sign.OTHER})
    onset_at: Instant | None = None
    actor: str | None = None


class Reassessed(EventBase):
    """I5: a new grade and signs for the reaction of the current stop (or, I11, after it)."""

    kind: Literal["reassessed"] = "reassessed"
    grade: Grade
    signs: frozenset[Sign] = frozenset({Sign.OTHER})
    actor: str | None = None


class Resolved(EventBase):
    """I4: a nurse states the reaction's symptoms are gone."""

    kind: Literal["resolved"] = "resolved"
    actor: str | None = None


class ResumeRequested(EventBase):
    """I9: a nurse asks to resume (after a reaction: her statement that the patient is stable)."""

    kind: Literal["resume"] = "resume"
    actor: str | None = None


class Hold(EventBase):
    """L7: a clinician holds escalation."""

    kind: Literal["hold"] = "hold"
    actor: str | None = None


class Release(EventBase):
    """L7: a clinician releases the hold; the next step is a full interval away."""

    kind: Literal["release"] = "release"
    actor: str | None = None


class PumpAlarmRaised(EventBase):
    """A1: the pump raised an alarm (occlusion, air_in_line, door_open, empty, ...)."""

    kind: Literal["alarm_raised"] = "alarm_raised"
    alarm: Annotated[str, Field(min_length=1)]


class PumpAlarmCleared(EventBase):
    """A1: the pump's alarm is cleared."""

    kind: Literal["alarm_cleared"] = "alarm_cleared"
    alarm: Annotated[str, Field(min_length=1)]


class LinkLost(EventBase):
    """A2: no valid status for longer than the link timeout."""

    kind: Literal["link_lost"] = "link_lost"


class LinkRestored(EventBase):
    """A2: the link is back; the pump's real state as read."""

    kind: Literal["link_restored"] = "link_restored"
    running: bool
    rate_ml_h: Rate
    volume_infused_ml: Volume


class Restarted(EventBase):
    """A4: the controller restarted from the stored state; the pump's real state as read."""

    kind: Literal["restarted"] = "restarted"
    running: bool
    rate_ml_h: Rate
    volume_infused_ml: Volume


class BagReplaced(EventBase):
    """L9: a new bag holding the volume still to give, prepared at `prepared_at`."""

    kind: Literal["bag_replaced"] = "bag_replaced"
    prepared_at: Instant
    actor: str | None = None


class Stop(EventBase):
    """Stop for good, with a reason."""

    kind: Literal["stop"] = "stop"
    reason: Annotated[str, Field(min_length=1)]
    actor: str | None = None


Event = Annotated[
    Start
    | PumpConfirmedRunning
    | PumpConfirmedStopped
    | PumpCompleted
    | TimePassed
    | ReactionReported
    | Reassessed
    | Resolved
    | ResumeRequested
    | Hold
    | Release
    | PumpAlarmRaised
    | PumpAlarmCleared
    | LinkLost
    | LinkRestored
    | Restarted
    | BagReplaced
    | Stop,
    Field(discriminator="kind"),
]
