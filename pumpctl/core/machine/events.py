"""What the controller feeds `decide()`: staff actions, pump facts, command fates, time passing.

Every event is a validated value; `decide()` checks it once more at its entry (`parse_event`),
so a mapping from a request body or a hostile value is refused naming the field, never acted on:
a grade is a strict integer 1-4 (`true` is not a grade), a report names at least one known
sign, a reason and an actor are not blank, times are aware and plausible, rates and volumes are
finite numbers (not the string '70').
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, Strict, StringConstraints, TypeAdapter, ValidationError

from pumpctl.core.history import CourseState, Grade, Sign
from pumpctl.core.machine.state import Instant, Rate, Value, Volume
from pumpctl.core.rules import Rule

__all__ = [
    "AcknowledgeAlarm",
    "Actor",
    "BagReplaced",
    "ClearAlarm",
    "CommandConfirmed",
    "CommandDenied",
    "CommandUnconfirmed",
    "Event",
    "Hold",
    "InvalidEvent",
    "LinkLost",
    "LinkRestored",
    "PumpAlarmCleared",
    "PumpAlarmRaised",
    "PumpCompleted",
    "PumpConfirmedRunning",
    "PumpConfirmedStopped",
    "PumpPowerReset",
    "ReactionReported",
    "Reassessed",
    "Release",
    "Resolved",
    "Restarted",
    "ResumeRequested",
    "SafetyEnvelopeTripped",
    "Start",
    "Stop",
    "TimePassed",
    "parse_event",
]

Actor = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Signs = Annotated[frozenset[Sign], Field(min_length=1)]
AlarmName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
CommandId = Annotated[int, Strict(), Field(ge=1)]
# Strict: `1` or "yes" is not a yes (a truthy value from a request body is not a statement).
Flag = Annotated[bool, Strict()]


class EventBase(Value):
    """Common base of every event."""


# --- staff actions (each names its actor) -------------------------------------------------


class Start(EventBase):
    """L3: program VTBI = bag and the initial rate, then run; `course` as read now (I8, L4)."""

    kind: Literal["start"] = "start"
    actor: Actor
    course: CourseState


class ReactionReported(EventBase):
    """I1: a nurse reports a reaction (grade 1-4 and signs; onset if earlier than the report)."""

    kind: Literal["reaction"] = "reaction"
    grade: Grade
    signs: Signs
    onset_at: Instant | None = None
    actor: Actor


class Reassessed(EventBase):
    """I5: a new grade and signs for the reaction of the current stop (or, I11, after it)."""

    kind: Literal["reassessed"] = "reassessed"
    grade: Grade
    signs: Signs
    actor: Actor


class Resolved(EventBase):
    """I4: a nurse states the reaction's symptoms are gone."""

    kind: Literal["resolved"] = "resolved"
    actor: Actor


class ResumeRequested(EventBase):
    """I9: a nurse asks to resume (after a reaction: her statement that the patient is stable).

    `no_reaction` answers A4's question after a stop found on restart with no record behind it
    (a reaction is reported as a `ReactionReported` instead).
    """

    kind: Literal["resume"] = "resume"
    actor: Actor
    no_reaction: Flag = False


class Hold(EventBase):
    """L7: a clinician holds escalation."""

    kind: Literal["hold"] = "hold"
    actor: Actor


class Release(EventBase):
    """L7: a clinician releases the hold; the next step is a full interval away."""

    kind: Literal["release"] = "release"
    actor: Actor


class BagReplaced(EventBase):
    """L9: a new bag holding the volume still to give, prepared at `prepared_at`."""

    kind: Literal["bag_replaced"] = "bag_replaced"
    prepared_at: Instant
    actor: Actor


class Stop(EventBase):
    """Stop for good, with a reason."""

    kind: Literal["stop"] = "stop"
    reason: Reason
    actor: Actor


class ClearAlarm(EventBase):
    """A1: a nurse or clinician acknowledges a latched alarm; it never starts the pump."""

    kind: Literal["clear_alarm"] = "clear_alarm"
    alarm: AlarmName
    actor: Actor
    role: Literal["nurse", "clinician"]


class AcknowledgeAlarm(EventBase):
    """A8: a nurse or clinician acknowledges an alarm: its sound stops; nothing else changes."""

    kind: Literal["acknowledge_alarm"] = "acknowledge_alarm"
    alarm: AlarmName
    actor: Actor


# --- pump facts ------------------------------------------------------------------------------


class PumpConfirmedRunning(EventBase):
    """A plain status read: the pump runs at `rate_ml_h`; volume is from the bag in use."""

    kind: Literal["pump_running"] = "pump_running"
    rate_ml_h: Rate
    volume_infused_ml: Volume


class PumpConfirmedStopped(EventBase):
    """A plain status read: the pump is stopped; volume is from the bag in use."""

    kind: Literal["pump_stopped"] = "pump_stopped"
    volume_infused_ml: Volume


class PumpCompleted(EventBase):
    """L3: the pump stopped by itself, reporting the VTBI delivered."""

    kind: Literal["pump_completed"] = "pump_completed"
    volume_infused_ml: Volume


class PumpPowerReset(EventBase):
    """The pump reports a power reset: it lost its program and its volume counter (A1)."""

    kind: Literal["power_reset"] = "power_reset"
    volume_infused_ml: Volume


class PumpAlarmRaised(EventBase):
    """A1: the pump raised an alarm (occlusion, air_in_line, door_open, empty, ...)."""

    kind: Literal["alarm_raised"] = "alarm_raised"
    alarm: AlarmName


class PumpAlarmCleared(EventBase):
    """A1: the pump no longer reports the alarm (still latched until staff clear it)."""

    kind: Literal["alarm_cleared"] = "alarm_cleared"
    alarm: AlarmName


class LinkLost(EventBase):
    """A2: no valid status for longer than the link timeout."""

    kind: Literal["link_lost"] = "link_lost"


class LinkRestored(EventBase):
    """A2: the link is back; the pump's real state as read."""

    kind: Literal["link_restored"] = "link_restored"
    running: Flag
    rate_ml_h: Rate
    volume_infused_ml: Volume


class Restarted(EventBase):
    """A4: the controller restarted from the stored state; the pump's real state as read."""

    kind: Literal["restarted"] = "restarted"
    running: Flag
    rate_ml_h: Rate
    volume_infused_ml: Volume


# --- command fates (A3) ----------------------------------------------------------------------


class CommandConfirmed(EventBase):
    """A3: the read-back shows command `command_id` carried out; the read-back itself."""

    kind: Literal["command_confirmed"] = "command_confirmed"
    command_id: CommandId
    running: Flag
    rate_ml_h: Rate
    volume_infused_ml: Volume
    vtbi_ml: Volume | None = None  # L3: the VTBI read back as programmed


class CommandDenied(EventBase):
    """A3: the pump refused command `command_id` (or, `dropped`, the controller never sent it:
    an escalation decided under an older state, cancelled by a stop; or, `unsent`, the
    controller never sent it because its decision's record was not written in time)."""

    kind: Literal["command_denied"] = "command_denied"
    command_id: CommandId
    reason: Reason
    dropped: Flag = False
    unsent: Flag = False


class CommandUnconfirmed(EventBase):
    """A3: no confirmation of command `command_id` within the command timeout (and a retry)."""

    kind: Literal["command_unconfirmed"] = "command_unconfirmed"
    command_id: CommandId


class SafetyEnvelopeTripped(EventBase):
    """The independent safety envelope stopped the pump (it shares no code with `decide`)."""

    kind: Literal["safety_envelope"] = "safety_envelope"
    reason: Reason
    rule: Rule  # the rule the envelope saw broken (L2 maximum, L1 rise too soon, I1/I9)


class TimePassed(EventBase):
    """Clinical time reached `now` (normally the instant of `next_deadline`)."""

    kind: Literal["time_passed"] = "time_passed"


Event = Annotated[
    Start
    | ReactionReported
    | Reassessed
    | Resolved
    | ResumeRequested
    | Hold
    | Release
    | BagReplaced
    | Stop
    | ClearAlarm
    | AcknowledgeAlarm
    | PumpConfirmedRunning
    | PumpConfirmedStopped
    | PumpCompleted
    | PumpPowerReset
    | PumpAlarmRaised
    | PumpAlarmCleared
    | LinkLost
    | LinkRestored
    | Restarted
    | CommandConfirmed
    | CommandDenied
    | CommandUnconfirmed
    | SafetyEnvelopeTripped
    | TimePassed,
    Field(discriminator="kind"),
]

_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


class InvalidEvent(Value):
    """An event that failed validation: the field and what is wrong with it."""

    field: str
    reason: str


def parse_event(raw: object) -> Event | InvalidEvent:
    """Validate `raw` (an event, or a mapping with its `kind`) once, at the core's entry."""
    data = raw.model_dump() if isinstance(raw, EventBase) else raw
    if not isinstance(data, Mapping):
        return InvalidEvent(field="event", reason=f"not an event: {type(raw).__name__}")
    try:
        return _EVENT.validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            return InvalidEvent(field="kind", reason=str(first["msg"]))
        loc = [str(part) for part in first["loc"]]
        # The discriminated union puts the kind first: `reaction.grade` -> `grade`.
        name = ".".join(loc[1:] if len(loc) > 1 else loc) or "event"
        return InvalidEvent(field=name, reason=str(first["msg"]))
