"""The infusion state machine: `decide(state, event, now) -> Decision` (pure; L, I and A rules).

The controller feeds it events (nurse actions, pump facts, the passing of clinical time) and
carries out the commands it returns; the audit events go to the store. The machine never reads
a clock: `now` is an argument, and `next_deadline(state)` tells the time driver when to call
again with `TimePassed`. A deadline that passed unnoticed is processed at its own instant on the
next call, so a late driver changes nothing but the moment the commands leave.

Running time (clinical-rules.md, the table at the top) counts only while the pump is confirmed
infusing in phase `running` with no pump alarm (A1), the link up (A2) and the bag in date (L9);
a pending command (A3) or a hold (L7) do not stop it. The L1 interval counter (`at_rate_min`)
counts the same time, but only once the pump has confirmed the current rate (A3), and is kept
across alarms and link losses (A1) and zeroed by a resume after a reaction (I2) or a release (L7).

Every rate the machine commands passes `pumpctl.core.limits.constrain`; the `RateDecision` goes
with the command and into the audit event. A refused event changes nothing but what the passing
of time alone would have changed, and its audit event names the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pumpctl.core.bag import BagLife, BagState, replace_bag
from pumpctl.core.history import CourseState, Grade, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.limits import (
    Limit,
    RateDecision,
    constrain,
    half_rate,
    min_duration_cap,
    protocol_max,
)
from pumpctl.core.planner import start_decision, step_decision
from pumpctl.core.protocol import Grade4Policy, Protocol

__all__ = [
    "AuditEvent",
    "BagReplaced",
    "Command",
    "Deadline",
    "DeadlineKind",
    "Decision",
    "Event",
    "Hold",
    "InfusionPhase",
    "InfusionState",
    "LinkLost",
    "LinkRestored",
    "MachineAlarm",
    "OpenReaction",
    "PendingCommand",
    "PumpAlarmCleared",
    "PumpAlarmRaised",
    "PumpCompleted",
    "PumpConfirmedRunning",
    "PumpConfirmedStopped",
    "RaiseAlarm",
    "ReactionReported",
    "Reassessed",
    "Release",
    "Resolved",
    "Restarted",
    "ResumeRequested",
    "Run",
    "SetRate",
    "SetVtbi",
    "Start",
    "Stop",
    "StopPump",
    "TimePassed",
    "deadlines",
    "decide",
    "infusion_record",
    "initial_state",
    "next_deadline",
]

_EPSILON_MIN = 1e-6  # running-time comparisons (60 microseconds)
_MAX_DEADLINES_PER_CALL = 10_000  # guard: deadlines always move forward or disappear


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (clinical time is UTC)")
    return value


Instant = Annotated[datetime, AfterValidator(_aware)]
Rate = Annotated[float, Field(ge=0, le=1000)]
Volume = Annotated[float, Field(ge=0, le=5000)]


class _Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- phases and state


class InfusionPhase(StrEnum):
    """Where an infusion is (interfaces.md's `state` of an infusion, plus `starting`)."""

    PLANNED = "planned"  # created, not started
    STARTING = "starting"  # L3: VTBI, rate and run sent; the pump has not yet confirmed running
    RUNNING = "running"  # infusing (or stopped by an alarm, link loss or bag expiry: see flags)
    PAUSED = "paused"  # I2/I4: stopped for a reaction, waiting for a nurse's resume
    STOPPED_OBSERVATION = "stopped_observation"  # I5: stopped, 2 h observation window open
    COMPLETED = "completed"  # L3: the pump reported the VTBI delivered (terminal)
    WITHDRAWN = "withdrawn"  # I8: the patient is withdrawn (terminal)
    STOPPED = "stopped"  # stopped for good by a nurse, with a reason (terminal)


TERMINAL_PHASES = frozenset(
    {InfusionPhase.COMPLETED, InfusionPhase.WITHDRAWN, InfusionPhase.STOPPED}
)
_REACTION_PHASES = frozenset({InfusionPhase.PAUSED, InfusionPhase.STOPPED_OBSERVATION})


class PendingCommand(_Value):
    """A3: what the machine has commanded and the pump has not yet confirmed."""

    kind: Literal["run", "stop"]
    rate_ml_h: Rate | None = None  # the rate a `run` expects


class OpenReaction(_Value):
    """The reaction of the current stop (I5: every grade change in one stop is a reassessment)."""

    grade: Grade  # the last recorded grade
    max_grade: Grade
    signs: frozenset[Sign]  # every sign recorded during this reaction
    onset_at: Instant
    rate_ml_h: Rate  # I2: the last non-zero rate before this interruption
    running_min: Annotated[float, Field(ge=0)]  # I10: running time since start at onset
    observation_started_at: Instant | None = None  # I5: the window's start
    observation_closed: bool = False  # I5: the window ended with the last grade <= 2
    bronchospasm_seen_at: Instant | None = None  # onset of the first report naming it (I4)
    bronchospasm_onset_at: Instant | None = None  # I4: grade >= 2; the 6 h count from here
    resolved: bool = False  # a nurse's statement that symptoms are gone (lifts I4)

    def record(self, infusion_number: int) -> ReactionRecord:
        """I10: this reaction as the course records it."""
        return ReactionRecord(
            grade=self.grade,
            max_grade=self.max_grade,
            signs=self.signs,
            rate_ml_h=self.rate_ml_h,
            running_min=self.running_min,
            infusion_number=infusion_number,
            onset_at=self.onset_at,
        )


class InfusionState(_Value):
    """Everything the machine knows about one infusion: a value, stored and rebuilt as is (A4)."""

    protocol: Protocol
    infusion_number: Annotated[int, Field(ge=1)]
    day: Literal[1, 2] | None = None  # split first dose: day 1 or 2 of infusion 1
    bag_ml: Annotated[float, Field(gt=0, le=5000)]  # L3: the whole infusion's volume
    initial_rate_ml_h: Annotated[float, Field(gt=0, le=1000)]
    min_duration_min: Annotated[int, Field(gt=0)] | None  # L6
    course: CourseState  # the patient's course (earlier infusions; I6, I8)
    bag_prepared_at: Instant  # L9: when the bag in use was prepared
    phase: InfusionPhase = InfusionPhase.PLANNED
    last_event_at: Instant | None = None
    started_at: Instant | None = None
    running_min: Annotated[float, Field(ge=0)] = 0.0
    at_rate_min: Annotated[float, Field(ge=0)] = 0.0  # L1: running time at the current rate
    rate_ml_h: Rate = 0.0  # the current step: what the pump runs at when it runs
    pump_running: bool = False  # the pump's last confirmed state
    pump_rate_ml_h: Rate = 0.0  # the rate it last confirmed
    ran_at_ml_h: Rate = 0.0  # I2: the last non-zero rate the pump confirmed running at
    pending: PendingCommand | None = None  # A3: a command not yet confirmed
    held: bool = False  # L7
    alarms: frozenset[str] = frozenset()  # A1: pump alarms in force
    link_lost: bool = False  # A2
    ladder_settled: bool = False  # L6 bound a step (or nothing is left): no more steps
    bag_warned: bool = False  # L9
    bag_expired: bool = False  # L9
    bag_volume_ml: Volume = 0.0  # L9: the VTBI of the bag in use
    delivered_before_bag_ml: Volume = 0.0  # L9: given from earlier bags
    bag_infused_ml: Volume = 0.0  # from the bag in use: the pump's figure, or estimated
    highest_rate_ml_h: Rate = 0.0  # highest rate the pump confirmed (L5 of later infusions)
    reaction: OpenReaction | None = None
    reactions: tuple[ReactionRecord, ...] = ()  # closed reactions of this infusion (I10, I11)
    stop_reason: str | None = None

    def to_json(self) -> str:
        """The stored form (A4); aliases kept, so `from_json` rebuilds the same value."""
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, text: str) -> InfusionState:
        """Rebuild a stored state (A4)."""
        return cls.model_validate_json(text)

    @property
    def delivered_ml(self) -> float:
        """Volume given so far, over every bag."""
        return self.delivered_before_bag_ml + self.bag_infused_ml

    @property
    def remaining_ml(self) -> float:
        """Volume still to give (L6, L9)."""
        return max(0.0, self.bag_ml - self.delivered_ml)

    @property
    def bag_life(self) -> BagLife:
        """L9: the life of the bag in use (its warning and expiry instants)."""
        return BagLife.from_protocol(self.protocol.bag, self.bag_prepared_at)

    @property
    def terminal(self) -> bool:
        """Completed, withdrawn or stopped for good."""
        return self.phase in TERMINAL_PHASES

    @property
    def counting(self) -> bool:
        """Running time is accruing (the table at the top of clinical-rules.md)."""
        return (
            self.phase is InfusionPhase.RUNNING
            and self.pump_running
            and not self.alarms
            and not self.link_lost
            and not self.bag_expired
        )

    @property
    def escalation_eligible(self) -> bool:
        """L1 may fire: counting, confirmed (A3), not held (L7), ladder not settled or at top."""
        return (
            self.counting
            and self.pending is None
            and not self.held
            and not self.ladder_settled
            and self.rate_ml_h < self.protocol.ladder.max_rate_ml_h
        )

    @property
    def reaction_records(self) -> tuple[ReactionRecord, ...]:
        """I10: every reaction of this infusion, the open one last."""
        if self.reaction is None:
            return self.reactions
        return (*self.reactions, self.reaction.record(self.infusion_number))


def initial_state(
    protocol: Protocol,
    *,
    infusion_number: int,
    bag_ml: float,
    initial_rate_ml_h: float,
    min_duration_min: int | None,
    course: CourseState,
    bag_prepared_at: datetime,
    day: Literal[1, 2] | None = None,
) -> InfusionState:
    """A planned infusion with the chosen row's numbers (validated; errors name the field).

    `day` is 1 or 2 for the two days of a split first dose (both are infusion 1).
    """
    if initial_rate_ml_h > protocol.ladder.max_rate_ml_h:
        raise ValueError(
            f"initial_rate_ml_h: {initial_rate_ml_h:g} is above the protocol maximum "
            f"{protocol.ladder.max_rate_ml_h:g} ml/h (L2)"
        )
    return InfusionState(
        protocol=protocol,
        infusion_number=infusion_number,
        day=day,
        bag_ml=bag_ml,
        initial_rate_ml_h=initial_rate_ml_h,
        min_duration_min=min_duration_min,
        course=course,
        bag_prepared_at=bag_prepared_at,
        bag_volume_ml=bag_ml,
    )


def infusion_record(state: InfusionState) -> InfusionRecord:
    """What the course keeps of this infusion (L4, L5, I6, D3 of later infusions)."""
    return InfusionRecord(
        infusion_number=state.infusion_number,
        highest_rate_ml_h=state.highest_rate_ml_h,
        reactions=state.reaction_records,
        completed=state.phase is InfusionPhase.COMPLETED,
        day=state.day,
    )


# --------------------------------------------------------------------------- events


class _Event(_Value):
    pass


class Start(_Event):
    """L3: program VTBI = bag and the initial rate, then run."""

    kind: Literal["start"] = "start"
    actor: str | None = None


class PumpConfirmedRunning(_Event):
    """A3: the pump reads back running at `rate_ml_h`; volume is from the bag in use."""

    kind: Literal["pump_running"] = "pump_running"
    rate_ml_h: Rate
    volume_infused_ml: Volume


class PumpConfirmedStopped(_Event):
    """A3: the pump reads back stopped; volume is from the bag in use."""

    kind: Literal["pump_stopped"] = "pump_stopped"
    volume_infused_ml: Volume


class PumpCompleted(_Event):
    """L3: the pump reports the VTBI delivered."""

    kind: Literal["pump_completed"] = "pump_completed"
    volume_infused_ml: Volume


class TimePassed(_Event):
    """Clinical time reached `now` (normally the instant of `next_deadline`)."""

    kind: Literal["time_passed"] = "time_passed"


class ReactionReported(_Event):
    """I1: a nurse reports a reaction (grade 1-4 and signs; onset if earlier than the report)."""

    kind: Literal["reaction"] = "reaction"
    grade: Grade
    signs: frozenset[Sign] = frozenset({Sign.OTHER})
    onset_at: Instant | None = None
    actor: str | None = None


class Reassessed(_Event):
    """I5: a new grade and signs for the reaction of the current stop (or, I11, after it)."""

    kind: Literal["reassessed"] = "reassessed"
    grade: Grade
    signs: frozenset[Sign] = frozenset({Sign.OTHER})
    actor: str | None = None


class Resolved(_Event):
    """I4: a nurse states the reaction's symptoms are gone."""

    kind: Literal["resolved"] = "resolved"
    actor: str | None = None


class ResumeRequested(_Event):
    """I9: a nurse asks to resume (after a reaction: her statement that the patient is stable)."""

    kind: Literal["resume"] = "resume"
    actor: str | None = None


class Hold(_Event):
    """L7: a clinician holds escalation."""

    kind: Literal["hold"] = "hold"
    actor: str | None = None


class Release(_Event):
    """L7: a clinician releases the hold; the next step is a full interval away."""

    kind: Literal["release"] = "release"
    actor: str | None = None


class PumpAlarmRaised(_Event):
    """A1: the pump raised an alarm (occlusion, air_in_line, door_open, empty, ...)."""

    kind: Literal["alarm_raised"] = "alarm_raised"
    alarm: Annotated[str, Field(min_length=1)]


class PumpAlarmCleared(_Event):
    """A1: the pump's alarm is cleared."""

    kind: Literal["alarm_cleared"] = "alarm_cleared"
    alarm: Annotated[str, Field(min_length=1)]


class LinkLost(_Event):
    """A2: no valid status for longer than the link timeout."""

    kind: Literal["link_lost"] = "link_lost"


class LinkRestored(_Event):
    """A2: the link is back; the pump's real state as read."""

    kind: Literal["link_restored"] = "link_restored"
    running: bool
    rate_ml_h: Rate
    volume_infused_ml: Volume


class Restarted(_Event):
    """A4: the controller restarted from the stored state; the pump's real state as read."""

    kind: Literal["restarted"] = "restarted"
    running: bool
    rate_ml_h: Rate
    volume_infused_ml: Volume


class BagReplaced(_Event):
    """L9: a new bag holding the volume still to give, prepared at `prepared_at`."""

    kind: Literal["bag_replaced"] = "bag_replaced"
    prepared_at: Instant
    actor: str | None = None


class Stop(_Event):
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


# --------------------------------------------------------------------------- commands and audit


class MachineAlarm(StrEnum):
    """Alarms the machine itself raises (pump alarms are the pump's own names)."""

    COMM_LOSS = "comm_loss"  # A2
    PUMP_NOT_STOPPED = "pump_not_stopped"  # A3: the loudest: clamp the line
    RATE_TOO_HIGH = "rate_too_high"  # A2: set back down
    RATE_LOWER = "rate_lower_than_expected"  # A2: left as is until a nurse acts
    PUMP_STOPPED = "pump_stopped_unexpectedly"  # A1/A2: left as is until a nurse acts
    PUMP_INCONSISTENT = "pump_inconsistent"  # L3: completion reported while stopped
    BAG_EXPIRING = "bag_expiring"  # L9: one hour left
    BAG_EXPIRED = "bag_expired"  # L9: pump stopped, a new bag is needed


@dataclass(frozen=True, slots=True)
class SetRate:
    """Program the rate; `decision` records the limit chain that produced it."""

    rate_ml_h: float
    decision: RateDecision


@dataclass(frozen=True, slots=True)
class SetVtbi:
    """L3: program the volume to be infused."""

    volume_ml: float


@dataclass(frozen=True, slots=True)
class Run:
    """Start the pump at the programmed rate."""


@dataclass(frozen=True, slots=True)
class StopPump:
    """Stop the pump (I1: at the head of the pump's queue)."""


@dataclass(frozen=True, slots=True)
class RaiseAlarm:
    """Raise an alarm to the staff."""

    kind: MachineAlarm
    message: str
    rule: str


Command = SetRate | SetVtbi | Run | StopPump | RaiseAlarm


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit trail: what happened, under which rule, when, with which facts."""

    type: str
    rule: str | None
    at: datetime
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one event: the new state, commands for the pump, audit events."""

    state: InfusionState
    commands: tuple[Command, ...] = ()
    audit: tuple[AuditEvent, ...] = ()

    @property
    def refusal(self) -> AuditEvent | None:
        """The refusal, if the event was refused (its `rule` names why)."""
        return next((a for a in self.audit if a.type == "refused"), None)


# --------------------------------------------------------------------------- deadlines


class DeadlineKind(StrEnum):
    """What falls due at a deadline (listed in the order ties are processed)."""

    BRONCHOSPASM_LIMIT = "bronchospasm_limit"  # I4: 6 h from onset
    OBSERVATION_END = "observation_end"  # I5: 2 h window
    BAG_EXPIRY = "bag_expiry"  # L9: 15 h
    BAG_WARNING = "bag_warning"  # L9: 1 h before
    ESCALATION = "escalation"  # L1: one full interval at the current rate


_DEADLINE_ORDER = {kind: i for i, kind in enumerate(DeadlineKind)}
_DEADLINE_RULE = {
    DeadlineKind.BRONCHOSPASM_LIMIT: "I4",
    DeadlineKind.OBSERVATION_END: "I5",
    DeadlineKind.BAG_EXPIRY: "L9",
    DeadlineKind.BAG_WARNING: "L9",
    DeadlineKind.ESCALATION: "L1",
}


@dataclass(frozen=True, slots=True)
class Deadline:
    """An instant at which the machine must be called with `TimePassed`."""

    at: datetime
    kind: DeadlineKind

    @property
    def rule(self) -> str:
        """The rule that sets this deadline."""
        return _DEADLINE_RULE[self.kind]


def _after(instant: datetime, minutes: float) -> datetime:
    # Rounded up to the microsecond, so the interval is complete at the deadline.
    return instant + timedelta(microseconds=math.ceil(minutes * 60_000_000 - 1e-3))


def deadlines(state: InfusionState) -> tuple[Deadline, ...]:
    """Every pending deadline, earliest first."""
    if state.terminal:
        return ()
    found: list[Deadline] = []
    if not state.bag_expired:
        life = state.bag_life
        found.append(Deadline(life.expires_at, DeadlineKind.BAG_EXPIRY))
        if not state.bag_warned:
            found.append(Deadline(life.warn_at, DeadlineKind.BAG_WARNING))
    reaction = state.reaction
    rules = state.protocol.reactions
    if reaction is not None:
        if reaction.bronchospasm_onset_at is not None and not reaction.resolved:
            found.append(
                Deadline(
                    _after(reaction.bronchospasm_onset_at, rules.bronchospasm_limit_min),
                    DeadlineKind.BRONCHOSPASM_LIMIT,
                )
            )
        if reaction.observation_started_at is not None and not reaction.observation_closed:
            found.append(
                Deadline(
                    _after(reaction.observation_started_at, rules.observation_window_min),
                    DeadlineKind.OBSERVATION_END,
                )
            )
    if state.escalation_eligible and state.last_event_at is not None:
        left = max(0.0, state.protocol.ladder.interval_min - state.at_rate_min)
        found.append(Deadline(_after(state.last_event_at, left), DeadlineKind.ESCALATION))
    return tuple(sorted(found, key=lambda d: (d.at, _DEADLINE_ORDER[d.kind])))


def next_deadline(state: InfusionState) -> Deadline | None:
    """The earliest deadline, or None when nothing is due on time alone."""
    pending = deadlines(state)
    return pending[0] if pending else None


# --------------------------------------------------------------------------- the machine


class _Ctx:
    """Accumulates one call's state changes, commands and audit events (local to `decide`)."""

    def __init__(self, state: InfusionState) -> None:
        self.state = state
        self.commands: list[Command] = []
        self.audit: list[AuditEvent] = []

    def set(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)

    def emit(self, *commands: Command) -> None:
        self.commands.extend(commands)

    def emit_first(self, command: Command) -> None:
        """Put `command` at the head of this decision's commands (I1: the stop goes first)."""
        self.commands.insert(0, command)

    def log(self, type_: str, rule: str | None, at: datetime, **data: object) -> None:
        self.audit.append(AuditEvent(type=type_, rule=rule, at=at, data=data))

    def alarm(self, kind: MachineAlarm, message: str, rule: str, at: datetime) -> None:
        self.emit(RaiseAlarm(kind, message, rule))
        self.log("alarm", rule, at, kind=kind.value, message=message)

    def decision(self) -> Decision:
        return Decision(self.state, tuple(self.commands), tuple(self.audit))


class _Refused(Exception):  # noqa: N818 - control flow inside decide(), never escapes it
    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


def decide(state: InfusionState, event: Event, now: datetime) -> Decision:
    """Apply `event` at clinical time `now`: the new state, pump commands and audit events."""
    _aware_now(now)
    if state.last_event_at is not None and now < state.last_event_at:
        raise ValueError(
            f"now: {now.isoformat()} is before the last event {state.last_event_at.isoformat()}"
        )
    # I1: a reaction reported when a step falls due (or a late driver left one unprocessed)
    # stops the pump; the step is not taken first, so no rise goes out with the stop.
    reaction = isinstance(event, ReactionReported) and not state.terminal
    ctx = _caught_up(state, event, now, escalate=not reaction)
    try:
        _handle(ctx, event, now)
    except _Refused as refusal:
        # Only what time alone changed (deadlines up to `now`) survives a refusal.
        ctx = _caught_up(state, event, now, escalate=True)
        ctx.log("refused", refusal.rule, now, event=event.kind, reason=refusal.reason)
        return ctx.decision()
    _catch_up(ctx, now)
    return ctx.decision()


def _caught_up(state: InfusionState, event: Event, now: datetime, *, escalate: bool) -> _Ctx:
    """A context holding `state` with every deadline up to `now` processed, before `event`."""
    ctx = _Ctx(state)
    if isinstance(event, Restarted) and not state.terminal:
        # A4: what happened while the controller was down is unknown: no running time for it.
        ctx.set(link_lost=True)
    _catch_up(ctx, now, escalate=escalate)
    return ctx


def _aware_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now: must be timezone-aware, got {now!r}")


def _catch_up(ctx: _Ctx, now: datetime, *, escalate: bool = True) -> None:
    """Process every deadline up to `now` at its own instant, then account time up to `now`.

    With `escalate` False, L1 steps are left unprocessed (the caller is about to stop the pump).
    """
    for _ in range(_MAX_DEADLINES_PER_CALL):
        due = next(
            (d for d in deadlines(ctx.state) if escalate or d.kind is not DeadlineKind.ESCALATION),
            None,
        )
        if due is None or due.at > now:
            break
        _advance(ctx, due.at)
        _fire(ctx, due)
    else:  # pragma: no cover - a deadline that does not move is a bug, never a silent loop
        raise RuntimeError("machine: deadlines did not move forward")
    _advance(ctx, now)


def _advance(ctx: _Ctx, to: datetime) -> None:
    """Account running time, the L1 interval and the estimated volume up to `to`."""
    s = ctx.state
    if s.last_event_at is not None and to <= s.last_event_at:
        return  # a deadline already behind us (an onset or a bag entered late): time stays
    if s.last_event_at is None or s.terminal:
        ctx.set(last_event_at=to)
        return
    minutes = (to - s.last_event_at).total_seconds() / 60
    if not s.counting:
        ctx.set(last_event_at=to)
        return
    infused = min(s.bag_volume_ml, s.bag_infused_ml + s.pump_rate_ml_h * minutes / 60)
    ctx.set(
        last_event_at=to,
        running_min=s.running_min + minutes,
        at_rate_min=s.at_rate_min + minutes if s.pending is None else s.at_rate_min,
        bag_infused_ml=infused,
    )


def _fire(ctx: _Ctx, due: Deadline) -> None:
    s = ctx.state
    at = due.at
    if due.kind is DeadlineKind.ESCALATION:
        _step(ctx, at)
    elif due.kind is DeadlineKind.OBSERVATION_END:
        assert s.reaction is not None
        if s.reaction.grade >= s.protocol.reactions.severe_grade:
            _withdraw(ctx, "I5", f"grade {s.reaction.grade} at the end of the 2 h window", at)
        else:
            ctx.set(
                reaction=s.reaction.model_copy(update={"observation_closed": True}),
                phase=InfusionPhase.PAUSED,
            )
            ctx.log("observation_ended", "I5", at, grade=s.reaction.grade, resume_allowed=True)
    elif due.kind is DeadlineKind.BRONCHOSPASM_LIMIT:
        _withdraw(ctx, "I4", "bronchospasm not resolved within 6 h of onset", at)
    elif due.kind is DeadlineKind.BAG_WARNING:
        ctx.set(bag_warned=True)
        left = s.bag_life.status(at).minutes_left
        ctx.alarm(
            MachineAlarm.BAG_EXPIRING,
            f"the bag expires in {left:g} min: prepare a new bag",
            "L9",
            at,
        )
    else:
        ctx.set(bag_expired=True, bag_warned=True)
        if _pump_may_run(s):
            _stop_pump(ctx)
        hours = s.bag_life.stability_min / 60
        ctx.alarm(
            MachineAlarm.BAG_EXPIRED,
            f"the bag is past its {hours:g} h stability: pump stopped, a new bag is needed",
            "L9",
            at,
        )


def _step(ctx: _Ctx, at: datetime) -> None:
    """L1/L2/L6: the step due after one full interval at the current rate."""
    s = ctx.state
    ladder = s.protocol.ladder
    if s.at_rate_min < ladder.interval_min - _EPSILON_MIN:  # pragma: no cover - guarded
        raise RuntimeError("machine: escalation fired before its interval")
    if s.remaining_ml <= 0:
        ctx.set(ladder_settled=True)
        return
    decision = step_decision(
        s.protocol,
        s.rate_ml_h,
        remaining_ml=s.remaining_ml,
        running_min=s.running_min,
        min_duration_min=s.min_duration_min,
    )
    settled = decision.bound_by.rule == "L6"
    if abs(decision.rate_ml_h - s.rate_ml_h) <= _tolerance(s):
        ctx.set(ladder_settled=True, at_rate_min=0.0)
        ctx.log("ladder_settled", decision.bound_by.rule, at, decision=decision.to_json())
        return
    _command_rate(ctx, decision)
    ctx.set(ladder_settled=settled)
    ctx.log(
        "rate_step",
        decision.bound_by.rule,
        at,
        from_ml_h=s.rate_ml_h,
        to_ml_h=decision.rate_ml_h,
        running_min=s.running_min,
        decision=decision.to_json(),
    )


def _tolerance(s: InfusionState) -> float:
    return s.protocol.ladder.rate_resolution_ml_h / 2


def _command_rate(ctx: _Ctx, decision: RateDecision, *, run: bool = False) -> None:
    """Command a new current step (and run); the L1 interval restarts at the confirmation."""
    ctx.emit(SetRate(decision.rate_ml_h, decision))
    if run:
        ctx.emit(Run())
    ctx.set(
        rate_ml_h=decision.rate_ml_h,
        at_rate_min=0.0,
        pending=PendingCommand(kind="run", rate_ml_h=decision.rate_ml_h),
    )


def _stop_pump(ctx: _Ctx, *, first: bool = False) -> None:
    if first:
        ctx.emit_first(StopPump())
    else:
        ctx.emit(StopPump())
    ctx.set(pending=PendingCommand(kind="stop"))


def _pump_may_run(s: InfusionState) -> bool:
    """The pump is, or may soon be, infusing (so a stop is needed)."""
    if s.pending is not None:
        return s.pending.kind == "run" or s.pump_running
    return s.pump_running


def _should_be_stopped(s: InfusionState) -> bool:
    return (
        s.phase in _REACTION_PHASES
        or s.phase in TERMINAL_PHASES
        or s.phase is InfusionPhase.PLANNED
        or s.bag_expired
    )


def _handle(ctx: _Ctx, event: Event, now: datetime) -> None:
    s = ctx.state
    if s.terminal:
        _handle_terminal(ctx, event, now)
        return
    match event:
        case TimePassed():
            return
        case Start():
            _start(ctx, event, now)
        case PumpConfirmedRunning():
            _pump_running(ctx, event.rate_ml_h, event.volume_infused_ml, now)
        case PumpConfirmedStopped():
            _pump_stopped(ctx, event.volume_infused_ml, now)
        case PumpCompleted():
            _completed(ctx, event, now)
        case ReactionReported():
            _reaction(ctx, event, now)
        case Reassessed():
            _reassessed(ctx, event, now)
        case Resolved():
            _resolved(ctx, event, now)
        case ResumeRequested():
            _resume(ctx, event, now)
        case Hold() | Release():
            _hold(ctx, event, now)
        case PumpAlarmRaised() | PumpAlarmCleared() | LinkLost():
            _pump_flags(ctx, event, now)
        case LinkRestored() | Restarted():
            _reconnected(ctx, event, now)
        case BagReplaced():
            _bag_replaced(ctx, event, now)
        case Stop():
            if _pump_may_run(s) or s.phase is not InfusionPhase.PLANNED:
                _stop_pump(ctx)
            _close_reaction(ctx)
            ctx.set(phase=InfusionPhase.STOPPED, stop_reason=event.reason)
            ctx.log("stopped", None, now, actor=event.actor, reason=event.reason)


def _hold(ctx: _Ctx, event: Hold | Release, now: datetime) -> None:
    """L7: hold escalation, or release it (a full interval from the release)."""
    s = ctx.state
    if isinstance(event, Hold):
        if s.held:
            raise _Refused("L7", "escalation is already held")
        ctx.set(held=True)
        ctx.log("hold", "L7", now, actor=event.actor, rate_ml_h=s.rate_ml_h)
        return
    if not s.held:
        raise _Refused("L7", "escalation is not held")
    ctx.set(held=False, at_rate_min=0.0)
    ctx.log("release", "L7", now, actor=event.actor, rate_ml_h=s.rate_ml_h)


def _pump_flags(
    ctx: _Ctx, event: PumpAlarmRaised | PumpAlarmCleared | LinkLost, now: datetime
) -> None:
    """A1: pump alarms in force; A2: the link lost (both suspend escalation and running time)."""
    s = ctx.state
    if isinstance(event, PumpAlarmRaised):
        if event.alarm not in s.alarms:
            ctx.set(alarms=s.alarms | {event.alarm})
            ctx.log("pump_alarm", "A1", now, alarm=event.alarm, running_min=s.running_min)
    elif isinstance(event, PumpAlarmCleared):
        if event.alarm in s.alarms:
            ctx.set(alarms=s.alarms - {event.alarm})
            ctx.log("pump_alarm_cleared", "A1", now, alarm=event.alarm)
    elif not s.link_lost:
        ctx.set(link_lost=True)
        ctx.alarm(MachineAlarm.COMM_LOSS, "no valid status from the pump", "A2", now)


# --- start, pump facts ----------------------------------------------------------------------


def _start(ctx: _Ctx, event: Start, now: datetime) -> None:
    """L3: VTBI = bag, then the initial rate, then run."""
    s = ctx.state
    if s.phase is not InfusionPhase.PLANNED:
        raise _Refused("L3", f"the infusion is already {s.phase.value}")
    if s.course.withdrawn:
        raise _Refused("I8", "the patient's course is withdrawn")
    if s.bag_expired:
        raise _Refused("L9", "the bag is past its stability: prepare a new bag")
    decision = start_decision(
        s.protocol,
        s.initial_rate_ml_h,
        bag_ml=s.bag_volume_ml,
        min_duration_min=s.min_duration_min,
        reason=f"initial rate of the row {s.initial_rate_ml_h:g}",
    )
    ctx.emit(SetVtbi(s.bag_volume_ml))
    _command_rate(ctx, decision, run=True)
    ctx.set(phase=InfusionPhase.STARTING, started_at=now)
    ctx.log(
        "started",
        "L3",
        now,
        actor=event.actor,
        vtbi_ml=s.bag_volume_ml,
        rate_ml_h=decision.rate_ml_h,
        decision=decision.to_json(),
    )


def _seen_running(ctx: _Ctx, rate: float, **changes: object) -> None:
    """A read-back of the pump running at `rate` (kept as I2's last non-zero rate)."""
    if rate > 0:
        changes["ran_at_ml_h"] = rate
    ctx.set(pump_running=True, pump_rate_ml_h=rate, **changes)


def _take_volume(ctx: _Ctx, volume: float) -> None:
    s = ctx.state
    ctx.set(bag_infused_ml=min(volume, s.bag_volume_ml))


def _pump_running(ctx: _Ctx, rate: float, volume: float, now: datetime) -> None:
    """A3: a read-back of the pump running; confirm, or find it too fast or too slow (A2)."""
    _take_volume(ctx, volume)
    s = ctx.state
    tol = _tolerance(s)
    if _should_be_stopped(s):
        if s.pending is not None and s.pending.kind == "stop":
            # The stop is still on its way; the ledger's timeout raises A3 if it never lands.
            _seen_running(ctx, rate)
            return
        _seen_running(ctx, rate)
        _stop_pump(ctx)
        ctx.alarm(
            MachineAlarm.PUMP_NOT_STOPPED,
            f"pump running at {rate:g} ml/h while it must be stopped: clamp the line",
            "A3",
            now,
        )
        return
    expected = s.rate_ml_h
    was = s.pump_rate_ml_h if s.pump_running else 0.0
    ceiling = max(expected, was) if s.pending is not None else expected
    if s.pending is not None and s.pending.kind == "run" and abs(rate - expected) <= tol:
        _seen_running(
            ctx,
            rate,
            pending=None,
            highest_rate_ml_h=max(s.highest_rate_ml_h, rate),
            phase=InfusionPhase.RUNNING,
        )
        ctx.log("confirmed_running", "A3", now, rate_ml_h=rate, volume_infused_ml=volume)
    elif abs(rate - expected) <= tol:
        _seen_running(
            ctx,
            rate,
            highest_rate_ml_h=max(s.highest_rate_ml_h, rate),
        )
    elif rate > ceiling + tol:
        _seen_running(ctx, rate)
        _set_back_down(ctx, rate, now)
    elif s.pending is not None:
        _seen_running(ctx, rate)
    else:
        _seen_running(
            ctx,
            rate,
            pending=PendingCommand(kind="run", rate_ml_h=expected),
        )
        ctx.alarm(
            MachineAlarm.RATE_LOWER,
            f"pump at {rate:g} ml/h, {expected:g} ml/h expected: left as is until a nurse acts",
            "A2",
            now,
        )


def _set_back_down(ctx: _Ctx, found: float, now: datetime) -> None:
    """A2: a pump running faster than expected is an alarm and is set back down."""
    s = ctx.state
    decision = constrain(
        [
            Limit("A2", s.rate_ml_h, f"the current step {s.rate_ml_h:g} ml/h"),
            protocol_max(s.protocol.ladder.max_rate_ml_h),
        ],
        s.protocol.ladder.rate_resolution_ml_h,
    )
    ctx.emit(SetRate(decision.rate_ml_h, decision))
    ctx.set(pending=PendingCommand(kind="run", rate_ml_h=decision.rate_ml_h))
    ctx.alarm(
        MachineAlarm.RATE_TOO_HIGH,
        f"pump at {found:g} ml/h, faster than {s.rate_ml_h:g} ml/h: set back down",
        "A2",
        now,
    )


def _pump_stopped(ctx: _Ctx, volume: float, now: datetime) -> None:
    """A3: a read-back of the pump stopped."""
    _take_volume(ctx, volume)
    s = ctx.state
    if s.pending is not None and s.pending.kind == "stop":
        ctx.set(pending=None, pump_running=False, pump_rate_ml_h=0.0)
        ctx.log("confirmed_stopped", "A3", now, volume_infused_ml=volume)
        return
    if s.pending is not None and not s.pump_running:
        return  # a run on its way: the pump has not started yet
    was_running = s.pump_running
    ctx.set(pump_running=False, pump_rate_ml_h=0.0)
    if was_running and not _should_be_stopped(s) and not s.alarms:
        ctx.alarm(
            MachineAlarm.PUMP_STOPPED,
            "the pump stopped on its own: left stopped until a nurse resumes",
            "A1",
            now,
        )


def _completed(ctx: _Ctx, event: PumpCompleted, now: datetime) -> None:
    """L3: complete when the pump reports the VTBI delivered."""
    s = ctx.state
    if s.phase not in {InfusionPhase.RUNNING, InfusionPhase.STARTING}:
        ctx.alarm(
            MachineAlarm.PUMP_INCONSISTENT,
            f"the pump reported the VTBI delivered while the infusion is {s.phase.value}",
            "L3",
            now,
        )
        return
    _take_volume(ctx, event.volume_infused_ml)
    ctx.set(phase=InfusionPhase.COMPLETED, pending=None, pump_running=False, pump_rate_ml_h=0.0)
    s = ctx.state
    ctx.log(
        "completed",
        "L3",
        now,
        running_min=s.running_min,
        delivered_ml=s.delivered_ml,
        highest_rate_ml_h=s.highest_rate_ml_h,
    )


def _reconnected(ctx: _Ctx, event: LinkRestored | Restarted, now: datetime) -> None:
    """A2/A4: read the pump's real state; never start or speed up because the link came back."""
    rule = "A4" if isinstance(event, Restarted) else "A2"
    ctx.set(link_lost=False)
    ctx.log(
        "restarted" if rule == "A4" else "link_restored",
        rule,
        now,
        running=event.running,
        rate_ml_h=event.rate_ml_h,
        volume_infused_ml=event.volume_infused_ml,
    )
    _take_volume(ctx, event.volume_infused_ml)
    s = ctx.state
    if not event.running:
        if s.pending is not None and s.pending.kind == "stop":
            ctx.set(pending=None, pump_running=False, pump_rate_ml_h=0.0)
            return
        ctx.set(pump_running=False, pump_rate_ml_h=0.0, pending=None)
        if not _should_be_stopped(s):
            ctx.alarm(
                MachineAlarm.PUMP_STOPPED,
                f"pump found stopped ({rule}): left stopped until a nurse resumes",
                rule,
                now,
            )
        return
    tol = _tolerance(s)
    if _should_be_stopped(s):
        _seen_running(ctx, event.rate_ml_h)
        _stop_pump(ctx)
        ctx.alarm(
            MachineAlarm.PUMP_NOT_STOPPED,
            f"pump found running at {event.rate_ml_h:g} ml/h while it must be stopped",
            "A3",
            now,
        )
        return
    expected = s.rate_ml_h
    _seen_running(ctx, event.rate_ml_h)
    if abs(event.rate_ml_h - expected) <= tol:
        ctx.set(
            pending=None,
            phase=InfusionPhase.RUNNING,
            highest_rate_ml_h=max(s.highest_rate_ml_h, event.rate_ml_h),
        )
    elif event.rate_ml_h > expected:
        _set_back_down(ctx, event.rate_ml_h, now)
    else:
        ctx.set(pending=PendingCommand(kind="run", rate_ml_h=expected))
        ctx.alarm(
            MachineAlarm.RATE_LOWER,
            f"pump found at {event.rate_ml_h:g} ml/h, {expected:g} ml/h expected: "
            "left as is until a nurse acts",
            rule,
            now,
        )


def _bag_replaced(ctx: _Ctx, event: BagReplaced, now: datetime) -> None:
    """L9: a new bag continues at the current step with the volume still to give."""
    s = ctx.state
    if event.prepared_at > now:
        raise _Refused("L9", "prepared_at is in the future")
    life = BagLife.from_protocol(s.protocol.bag, event.prepared_at)
    if life.status(now).state is BagState.EXPIRED:
        raise _Refused(
            "L9", f"the new bag is past its {life.stability_min / 60:g} h stability already"
        )
    if s.phase is InfusionPhase.PLANNED:
        ctx.set(bag_prepared_at=event.prepared_at, bag_warned=False, bag_expired=False)
        ctx.log("bag_replaced", "L9", now, actor=event.actor, volume_ml=s.bag_volume_ml)
        return
    if s.pump_running or (s.pending is not None and s.pending.kind == "run"):
        raise _Refused("L9", "the pump is running: a bag is changed only while it is stopped")
    if s.remaining_ml <= 0:
        raise _Refused("L3", "nothing is left to give")
    new = replace_bag(s.protocol.bag, event.prepared_at, s.remaining_ml, s.rate_ml_h)
    ctx.set(
        bag_prepared_at=new.bag.prepared_at,
        bag_warned=False,
        bag_expired=False,
        delivered_before_bag_ml=s.delivered_ml,
        bag_infused_ml=0.0,
        bag_volume_ml=new.vtbi_ml,
    )
    ctx.emit(SetVtbi(new.vtbi_ml))
    ctx.log("bag_replaced", "L9", now, actor=event.actor, volume_ml=new.vtbi_ml)
    s = ctx.state
    if s.phase in {InfusionPhase.RUNNING, InfusionPhase.STARTING} and not (s.alarms or s.link_lost):
        _continue_same_rate(ctx, "L9", "continue at the current step with a new bag")


def _continue_same_rate(ctx: _Ctx, rule: str, reason: str) -> None:
    """A1/L9: run again at the current step (L6 recomputed; never above the step)."""
    s = ctx.state
    ladder = s.protocol.ladder
    decision = constrain(
        [
            Limit(rule, s.rate_ml_h, reason),
            protocol_max(ladder.max_rate_ml_h),
            min_duration_cap(s.remaining_ml, s.running_min, s.min_duration_min),
        ],
        ladder.rate_resolution_ml_h,
    )
    # A pause not caused by a reaction keeps the time already run at this rate (L1).
    at_rate = s.at_rate_min
    _command_rate(ctx, decision, run=True)
    if abs(decision.rate_ml_h - s.rate_ml_h) <= _tolerance(s):
        ctx.set(at_rate_min=at_rate)


# --- reactions ------------------------------------------------------------------------------


def _severe_count(s: InfusionState) -> int:
    """I6: grade >= 3 occurrences over the whole course, this infusion included.

    A course record of this very infusion (same number and split-first-dose day) is not counted
    twice; the other day of a split first dose is another record and counts.
    """
    severe = s.protocol.reactions.severe_grade
    earlier = sum(
        1
        for i in s.course.infusions
        if (i.infusion_number, i.day) != (s.infusion_number, s.day)
        for r in i.reactions
        if r.max_grade >= severe
    )
    return earlier + sum(1 for r in s.reaction_records if r.max_grade >= severe)


def _rate_before_interruption(s: InfusionState) -> float:
    """I2: the last non-zero rate the pump ran at before this interruption (the safer reading).

    The current step, unless the pump last confirmed a lower non-zero rate: a step commanded but
    not yet confirmed (the pump is only known to have run at the rate before it), or a pump left
    running slower under A2. Never above the step: a pump found faster is set back down (L2).
    """
    if s.ran_at_ml_h > 0:
        return min(s.rate_ml_h, s.ran_at_ml_h)
    return s.rate_ml_h


def _running_at(s: InfusionState, onset: datetime, now: datetime) -> float:
    """I10: running time at an onset entered earlier than the report (L4 counts from it).

    Running time grows at most as fast as clinical time, so `now - onset` taken off the running
    time now is a lower bound: exact if the pump ran throughout, earlier (stricter for L4) if not.
    """
    elapsed_min = (now - onset).total_seconds() / 60
    return max(0.0, s.running_min - elapsed_min)


def _reaction(ctx: _Ctx, event: ReactionReported, now: datetime) -> None:
    """I1: any reaction stops the pump at once; then I3-I7 decide what follows."""
    s = ctx.state
    if event.onset_at is not None and event.onset_at > now:
        raise _Refused("I10", "onset_at is after the report")
    if s.phase is InfusionPhase.PLANNED:
        raise _Refused("I1", "the infusion has not started: no pump to stop")
    if _pump_may_run(s) or s.phase in {InfusionPhase.RUNNING, InfusionPhase.STARTING}:
        _stop_pump(ctx, first=True)
    if s.reaction is not None:
        # I5: within one stop a further report is a reassessment of the same reaction.
        _regrade(
            ctx,
            grade=event.grade,
            signs=event.signs,
            onset_at=event.onset_at,
            now=now,
            actor=event.actor,
            type_="reaction",
        )
        return
    onset = event.onset_at or now
    reaction = OpenReaction(
        grade=event.grade,
        max_grade=event.grade,
        signs=event.signs,
        onset_at=onset,
        rate_ml_h=_rate_before_interruption(s),
        running_min=_running_at(s, onset, now),
        bronchospasm_seen_at=onset if Sign.BRONCHOSPASM in event.signs else None,
    )
    ctx.set(reaction=reaction)
    ctx.log(
        "reaction",
        "I1",
        now,
        actor=event.actor,
        reaction=reaction.record(s.infusion_number).model_dump(mode="json"),
    )
    _judge(ctx, event.grade, event.signs, event.onset_at, now)


def _regrade(
    ctx: _Ctx,
    *,
    grade: int,
    signs: frozenset[Sign],
    onset_at: datetime | None,
    now: datetime,
    actor: str | None,
    type_: str,
) -> None:
    s = ctx.state
    assert s.reaction is not None
    changes: dict[str, object] = {
        "grade": grade,
        "max_grade": max(s.reaction.max_grade, grade),
        "signs": s.reaction.signs | signs,
    }
    if Sign.BRONCHOSPASM in signs and s.reaction.bronchospasm_seen_at is None:
        changes["bronchospasm_seen_at"] = onset_at or now
    reaction = s.reaction.model_copy(update=changes)
    ctx.set(reaction=reaction)
    ctx.log(
        type_,
        "I5",
        now,
        actor=actor,
        reaction=reaction.record(s.infusion_number).model_dump(mode="json"),
    )
    _judge(ctx, grade, signs, onset_at, now)


def _judge(
    ctx: _Ctx, grade: int, signs: frozenset[Sign], onset_at: datetime | None, now: datetime
) -> None:
    """The stricter outcome wins, in the order I3, I6, I7 (discontinue), I4, I5, I2.

    I3 and I4 look at every sign recorded during this reaction (one stop, I5), not only the
    latest report's: a grade 1 laryngeal edema or bronchospasm reassessed at grade 2 with no
    sign repeated is a grade 2 reaction with that sign (the safer reading). The I4 clock starts
    at the onset of the first report naming bronchospasm in this reaction.
    """
    s = ctx.state
    rules = s.protocol.reactions
    reaction = s.reaction
    assert reaction is not None
    recorded = reaction.signs
    if grade >= rules.laryngeal_edema_withdraw_grade and Sign.LARYNGEAL_EDEMA in recorded:
        _withdraw(ctx, "I3", f"grade {grade} laryngeal edema", now)
        return
    count = _severe_count(s)
    if count >= rules.severe_occurrences_withdraw:
        _withdraw(ctx, "I6", f"occurrence {count} of grade >= {rules.severe_grade}", now)
        return
    if grade == 4 and rules.grade4_policy is Grade4Policy.DISCONTINUE:
        _withdraw(ctx, "I7", "grade 4: permanent discontinuation (protocol policy)", now)
        return
    changes: dict[str, object] = {}
    if grade >= rules.bronchospasm_hold_grade and Sign.BRONCHOSPASM in recorded:
        if reaction.bronchospasm_onset_at is None:
            start = reaction.bronchospasm_seen_at or now
            changes["bronchospasm_onset_at"] = start
            # A resolution stated before the bronchospasm reached grade 2 does not lift I4.
            changes["resolved"] = False
            ctx.log("bronchospasm_hold", "I4", now, onset_at=start.isoformat())
        if Sign.BRONCHOSPASM in signs:
            changes["resolved"] = False
    if grade >= rules.severe_grade:
        if reaction.observation_closed:
            # The window has ended, and the same reaction is back at grade >= 3: it did not
            # settle within 2 h (safer reading than a window with no end).
            _withdraw(ctx, "I5", f"grade {grade} after the 2 h window ended", now)
            return
        if reaction.observation_started_at is None:
            start = min(onset_at, now) if onset_at is not None else now
            changes["observation_started_at"] = start
            ctx.log("observation_started", "I5", now, window_start=start.isoformat())
    reaction = reaction.model_copy(update=changes)
    observing = reaction.observation_started_at is not None and not reaction.observation_closed
    phase = InfusionPhase.STOPPED_OBSERVATION if observing else InfusionPhase.PAUSED
    if phase is not s.phase:
        ctx.log(phase.value, "I5" if observing else "I2", now, grade=grade)
    ctx.set(reaction=reaction, phase=phase)


def _reassessed(ctx: _Ctx, event: Reassessed, now: datetime) -> None:
    s = ctx.state
    if s.reaction is None:
        raise _Refused("I5", "no reaction is open: report a new reaction instead")
    _regrade(
        ctx,
        grade=event.grade,
        signs=event.signs,
        onset_at=None,
        now=now,
        actor=event.actor,
        type_="reassessed",
    )


def _resolved(ctx: _Ctx, event: Resolved, now: datetime) -> None:
    s = ctx.state
    if s.reaction is None:
        raise _Refused("I4", "no reaction is open")
    if s.reaction.resolved:
        raise _Refused("I4", "the reaction is already marked resolved")
    ctx.set(reaction=s.reaction.model_copy(update={"resolved": True}))
    rule = "I4" if s.reaction.bronchospasm_onset_at is not None else "I2"
    ctx.log("resolved", rule, now, actor=event.actor)


def _resume(ctx: _Ctx, event: ResumeRequested, now: datetime) -> None:
    """I9: only a nurse resumes, and only when I2-I6 allow it; else a refusal naming the rule."""
    s = ctx.state
    if s.phase is InfusionPhase.PLANNED:
        raise _Refused("L3", "the infusion has not started")
    if s.link_lost:
        raise _Refused("A2", "no link to the pump")
    if s.bag_expired:
        raise _Refused("L9", "the bag is past its stability: replace it first")
    if s.alarms:
        raise _Refused("A1", f"clear the pump alarm first ({', '.join(sorted(s.alarms))})")
    reaction = s.reaction
    if reaction is None:
        if s.pump_running and s.pending is None:
            raise _Refused("I9", "the pump is already running at the current step")
        # A1/A2: after an alarm or an unexpected stop, continue at the same rate.
        _continue_same_rate(ctx, "A1", "continue at the same rate after the pump stopped")
        ctx.log("resumed", "A1", now, actor=event.actor, rate_ml_h=ctx.state.rate_ml_h)
        return
    rules = s.protocol.reactions
    if reaction.bronchospasm_onset_at is not None and not reaction.resolved:
        raise _Refused("I4", "bronchospasm grade >= 2: no resume until it is marked resolved")
    observing = reaction.observation_started_at is not None and not reaction.observation_closed
    if observing and reaction.grade >= rules.severe_grade:
        raise _Refused(
            "I5", f"grade {reaction.grade} inside the observation window: resume only at <= 2"
        )
    ladder = s.protocol.ladder
    decision = constrain(
        [
            half_rate(reaction.rate_ml_h, rules.restart_fraction),
            protocol_max(ladder.max_rate_ml_h),
            min_duration_cap(s.remaining_ml, s.running_min, s.min_duration_min),
        ],
        ladder.rate_resolution_ml_h,
    )
    never_ran = s.highest_rate_ml_h == 0
    _close_reaction(ctx)
    # I2: the interval starts from zero; L6 is computed again at each later step.
    _command_rate(ctx, decision, run=True)
    ctx.set(
        phase=InfusionPhase.STARTING if never_ran else InfusionPhase.RUNNING,
        ladder_settled=False,
    )
    ctx.log(
        "resumed",
        "I5" if reaction.observation_started_at is not None else "I2",
        now,
        actor=event.actor,
        rate_ml_h=decision.rate_ml_h,
        decision=decision.to_json(),
    )


def _close_reaction(ctx: _Ctx) -> None:
    s = ctx.state
    if s.reaction is not None:
        ctx.set(reactions=s.reaction_records, reaction=None)


def _withdraw(ctx: _Ctx, rule: str, reason: str, at: datetime) -> None:
    """I8: stop the pump, end the infusion `withdrawn`, mark the course withdrawn."""
    if not any(isinstance(c, StopPump) for c in ctx.commands):
        _stop_pump(ctx)
    _close_reaction(ctx)
    ctx.set(phase=InfusionPhase.WITHDRAWN)
    ctx.log("withdrawn", rule, at, reason=reason)
    _withdraw_course(ctx, rule, reason, at)


def _withdraw_course(ctx: _Ctx, rule: str, reason: str, at: datetime) -> None:
    s = ctx.state
    if s.course.withdrawn:
        return
    ctx.set(
        course=s.course.model_copy(
            update={"withdrawn": True, "withdrawn_reason": f"{rule}: {reason}"}
        )
    )
    ctx.log("course_withdrawn", "I8", at, cause=rule, reason=reason)


# --- after the end ----------------------------------------------------------------------------


def _handle_terminal(ctx: _Ctx, event: Event, now: datetime) -> None:
    """Completed, withdrawn, stopped: record late reactions (I11); keep the pump stopped."""
    s = ctx.state
    match event:
        case ReactionReported():
            if event.onset_at is not None and event.onset_at > now:
                raise _Refused("I10", "onset_at is after the report")
            record = ReactionRecord(
                grade=event.grade,
                max_grade=event.grade,
                signs=event.signs,
                rate_ml_h=0.0,
                running_min=s.running_min,
                infusion_number=s.infusion_number,
                after_completion=s.phase is InfusionPhase.COMPLETED,
                onset_at=event.onset_at or now,
            )
            ctx.set(reactions=(*s.reactions, record))
            ctx.log(
                "reaction", "I11", now, actor=event.actor, reaction=record.model_dump(mode="json")
            )
            _late_withdrawal_check(ctx, record, now)
        case Reassessed():
            if not s.reactions or not s.reactions[-1].after_completion:
                raise _Refused("I11", "no reaction reported after completion to reassess")
            last = s.reactions[-1]
            record = last.model_copy(
                update={
                    "grade": event.grade,
                    "max_grade": max(last.max_grade, event.grade),
                    "signs": last.signs | event.signs,
                }
            )
            ctx.set(reactions=(*s.reactions[:-1], record))
            ctx.log(
                "reassessed", "I11", now, actor=event.actor, reaction=record.model_dump(mode="json")
            )
            _late_withdrawal_check(ctx, record, now)
        case PumpConfirmedRunning() | LinkRestored() | Restarted():
            running = not isinstance(event, LinkRestored | Restarted) or event.running
            pending_stop = s.pending is not None and s.pending.kind == "stop"
            if running and not pending_stop:
                # Safety over silence: a pump infusing after the end is stopped and alarmed.
                _stop_pump(ctx)
                ctx.alarm(
                    MachineAlarm.PUMP_NOT_STOPPED,
                    f"pump running after the infusion ended ({s.phase.value}): clamp the line",
                    "A3",
                    now,
                )
            elif not running:
                ctx.set(pending=None)
        case PumpConfirmedStopped():
            ctx.set(pending=None)
        case TimePassed() | PumpCompleted() | PumpAlarmRaised() | PumpAlarmCleared() | LinkLost():
            return
        case _:
            rule = {
                InfusionPhase.WITHDRAWN: "I8",
                InfusionPhase.COMPLETED: "L3",
                InfusionPhase.STOPPED: "I9",
            }[s.phase]
            raise _Refused(rule, f"the infusion is {s.phase.value}")


def _late_withdrawal_check(ctx: _Ctx, record: ReactionRecord, now: datetime) -> None:
    """I11: a late reaction withdraws the course (no pump action) where I3, I6 or I7 would.

    I3 (grade >= 2 laryngeal edema) and the label's I7 (grade 4 = permanent discontinuation)
    withdraw the patient whenever the reaction happens; a late grade >= 3 counts for I6 over
    the course. I4 and I5 need a stopped infusion to act on and do not apply after the end.
    """
    s = ctx.state
    if s.course.withdrawn:
        return
    rules = s.protocol.reactions
    grade = record.grade
    count = _severe_count(s)
    if grade >= rules.laryngeal_edema_withdraw_grade and Sign.LARYNGEAL_EDEMA in record.signs:
        _withdraw_course(ctx, "I3", f"grade {grade} laryngeal edema (after the end, I11)", now)
    elif count >= rules.severe_occurrences_withdraw:
        _withdraw_course(ctx, "I6", f"occurrence {count} of grade >= {rules.severe_grade}", now)
    elif grade == 4 and rules.grade4_policy is Grade4Policy.DISCONTINUE:
        _withdraw_course(ctx, "I7", "grade 4: permanent discontinuation (protocol policy)", now)
