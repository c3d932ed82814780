"""The infusion's state: a validated value, stored and rebuilt as is (A4).

Phases (interfaces.md's `state` of an infusion, plus `starting`), the open reaction of the
current stop (I5, I10), the commands sent whose fate is not yet known (A3), the confirmed rate
history (I10, I2), the volume bounds (L3, A1, A2), latched alarms (A1) with when each was raised
and who acknowledged it (A8), and the flags that stop running time (A1 alarms, A2 link, L9
bag). `initial_state` builds a planned infusion from the course (L4, L5, L6, L8);
`infusion_record` is what the course keeps of it (L4, L5, I6, D3).

Every change goes through `updated`, which validates each changed field against its declared
type and bounds: a rate of -5 or a misspelt field name is an error, never a silent copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, TypeAdapter

from pumpctl.core.bag import BagLife
from pumpctl.core.history import CourseState, Grade, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.machine.alarms import SUSPENDING, MachineAlarm
from pumpctl.core.planner import select_row
from pumpctl.core.protocol import Protocol
from pumpctl.core.rules import Rule

__all__ = [
    "REACTION_PHASES",
    "TERMINAL_PHASES",
    "AlarmMark",
    "CommandOp",
    "InfusionPhase",
    "InfusionState",
    "Instant",
    "OpenReaction",
    "Rate",
    "RatePoint",
    "SentCommand",
    "Value",
    "Volume",
    "infusion_record",
    "initial_state",
]

# Clinical time this service can meaningfully see: anything outside is a wrong clock or a typo.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _plausible(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (clinical time is UTC)")
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"{value.isoformat()} is not a plausible clinical time")
    return value


Instant = Annotated[datetime, AfterValidator(_plausible)]
# Strict: a bool or the string '70' is not a rate (an int is, as 50 ml/h).
Rate = Annotated[float, Strict(), Field(ge=0, le=1000, allow_inf_nan=False)]
Volume = Annotated[float, Strict(), Field(ge=0, le=5000, allow_inf_nan=False)]
Minutes = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Value(BaseModel):
    """A frozen value that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InfusionPhase(StrEnum):
    """Where an infusion is (interfaces.md's `state` of an infusion, plus `starting`)."""

    PLANNED = "planned"  # created, not started
    STARTING = "starting"  # L3: VTBI, rate and run sent; the pump has not yet confirmed running
    RUNNING = "running"  # infusing (or stopped by an alarm, link loss or bag expiry: see flags)
    PAUSED = "paused"  # I2/I4: stopped for a reaction, waiting for a nurse's resume
    STOPPED_OBSERVATION = "stopped_observation"  # I5: stopped, 2 h observation window open
    COMPLETED = "completed"  # L3: the pump delivered the VTBI (terminal)
    WITHDRAWN = "withdrawn"  # I8: the patient is withdrawn (terminal)
    STOPPED = "stopped"  # stopped for good by a nurse, with a reason (terminal)


TERMINAL_PHASES = frozenset(
    {InfusionPhase.COMPLETED, InfusionPhase.WITHDRAWN, InfusionPhase.STOPPED}
)
REACTION_PHASES = frozenset({InfusionPhase.PAUSED, InfusionPhase.STOPPED_OBSERVATION})


class CommandOp(StrEnum):
    """What a pump command does (the MQTT `op` names, interfaces.md section 2)."""

    SET_RATE = "set_rate"
    SET_VTBI = "set_vtbi"
    CLEAR_VOLUME = "clear_volume"
    RUN = "start"
    STOP = "stop"


class SentCommand(Value):
    """A3: a command sent to the pump whose fate (confirmed, denied, unconfirmed) is not known."""

    id: Annotated[int, Field(ge=1)]
    op: CommandOp
    rate_ml_h: Rate | None = None  # the rate a set_rate or run expects


class RatePoint(Value):
    """From `at`, the pump was confirmed running at `rate_ml_h` (0: confirmed stopped)."""

    at: Instant
    rate_ml_h: Rate


class AlarmMark(Value):
    """A8: one alarm raised and not yet cleared (latched, or reported by the pump): since when,
    under which rule, who acknowledged it, and whether its cause has ended (a raise after that
    is a new alarm)."""

    kind: Annotated[str, Field(min_length=1, max_length=64)]
    rule: Rule
    raised_at: Instant
    acknowledged_by: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    acknowledged_at: Instant | None = None
    ended: bool = False  # its cause no longer stands (A8's clarification)


class OpenReaction(Value):
    """The reaction of the current stop (I5: every grade change in one stop is a reassessment)."""

    grade: Grade  # the last recorded grade
    max_grade: Grade
    signs: frozenset[Sign]  # every sign recorded during this reaction
    onset_at: Instant  # I10: the earliest onset entered
    rate_ml_h: Rate  # I10: the confirmed rate at onset
    rate_before_ml_h: Rate  # I2: the last non-zero rate before this interruption
    running_min: Minutes  # I10: running time since start at onset
    observation_started_at: Instant | None = None  # I5: the window's start
    observation_closed: bool = False  # I5: the window ended with the last grade <= 2
    bronchospasm_seen_at: Instant | None = None  # onset of the first report naming it (I4)
    bronchospasm_onset_at: Instant | None = None  # I4: grade >= 2; the 6 h count from here
    resolved: bool = False  # a nurse's statement that symptoms are gone (lifts I4)

    @property
    def window_open(self) -> bool:
        """I5's window is running."""
        return self.observation_started_at is not None and not self.observation_closed

    @property
    def hold_open(self) -> bool:
        """I4's hold is running (bronchospasm grade >= 2, not yet resolved)."""
        return self.bronchospasm_onset_at is not None and not self.resolved

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


class InfusionState(Value):
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
    period_started_at: Instant | None = None  # I10: the start, or the last resume
    last_change_at: Instant | None = None  # the last confirmed change of rate (L1 floor)
    running_min: Minutes = 0.0
    at_rate_min: Minutes = 0.0  # L1: running time at the current rate
    rate_ml_h: Rate = 0.0  # the current step: what the pump runs at when it runs
    confirmed_rate_ml_h: Rate = 0.0  # A3: the rate last confirmed by a command's fate
    pump_running: bool = False  # the pump's last read-back
    pump_rate_ml_h: Rate = 0.0  # the rate of the last read-back
    rate_history: tuple[RatePoint, ...] = ()  # I10: confirmed rates over time
    next_command_id: Annotated[int, Field(ge=1)] = 1
    outstanding: tuple[SentCommand, ...] = ()  # A3: commands whose fate is not known
    stop_unconfirmed: bool = False  # A3: sent again on every contact until the pump is stopped
    # A3: the id of the last stop the pump confirmed: a rate sent before it can no longer be
    # what a running pump shows (0: none confirmed)
    stopped_after_id: Annotated[int, Field(ge=0)] = 0
    held: bool = False  # L7
    alarms: frozenset[str] = frozenset()  # A1: pump alarms the pump reports now
    latched: frozenset[str] = frozenset()  # A1: alarms raised and not yet cleared
    # A8: one mark per alarm in `latched` or `alarms`, oldest first (kept by `Ctx.decision`)
    alarm_marks: tuple[AlarmMark, ...] = ()
    link_lost: bool = False  # A2
    unexplained_stop: bool = False  # A4: found stopped on restart with no record of why
    ladder_settled: bool = False  # L6 bound a step (or nothing is left): no more steps
    bag_warned: bool = False  # L9
    bag_expired: bool = False  # L9
    bag_volume_ml: Volume = 0.0  # L9: the VTBI of the bag in use
    vtbi_programmed_ml: Volume | None = None  # L3: the VTBI the pump read back as programmed
    delivered_before_bag_ml: Volume = 0.0  # L9: given from earlier bags
    bag_infused_ml: Volume = 0.0  # from the bag in use: the pump's figure, or estimated
    volume_read_ml: Volume | None = None  # the last valid volume the pump read back
    volume_bound_ml: Annotated[float, Field(ge=0)] = 0.0  # over-infusion: the upper bound
    volume_expected_ml: Annotated[float, Field(ge=0)] = 0.0  # under-infusion: confirmed rates
    # L3, A4: the most the pump may have given from the bag in use: the last volume read back
    # plus the highest rate it may have run at since (None in a state stored before it was kept)
    volume_most_ml: Annotated[float, Field(ge=0)] | None = None
    under_since_min: Minutes | None = None  # running time when the shortfall was first seen
    highest_rate_ml_h: Rate = 0.0  # highest rate the pump confirmed (L5 of later infusions)
    reaction: OpenReaction | None = None
    reactions: tuple[ReactionRecord, ...] = ()  # closed reactions of this infusion (I10, I11)
    stop_reason: str | None = None

    def updated(self, changes: Mapping[str, object]) -> InfusionState:
        """A copy with `changes`, each validated against its field (unknown names refused)."""
        clean = {name: _field_adapter(name).validate_python(v) for name, v in changes.items()}
        return self.model_copy(update=clean)

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
    def supervised(self) -> bool:
        """The controller keeps it: not ended, or an I4/I5 window of it still open."""
        return not self.terminal or self.reaction is not None

    @property
    def ran_at_ml_h(self) -> float:
        """I2: the last non-zero rate the pump was confirmed running at (0 if never)."""
        return next((p.rate_ml_h for p in reversed(self.rate_history) if p.rate_ml_h > 0), 0.0)

    @property
    def stop_outstanding(self) -> bool:
        """A3: a stop was sent and the pump has not yet been confirmed stopped."""
        return self.stop_unconfirmed or any(c.op is CommandOp.STOP for c in self.outstanding)

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
        """L1 may fire: counting, all confirmed (A3), not held (L7), ladder not at its end.

        A communication loss (A2) holds escalation until a nurse clears it, also once the link
        is back: the link coming back alone never resumes the ladder.
        """
        return (
            self.counting
            and not self.outstanding
            and not self.stop_unconfirmed
            and not (self.latched & SUSPENDING)
            and MachineAlarm.COMM_LOSS.value not in self.latched
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

    def rate_at(self, instant: datetime) -> float:
        """I10: the last non-zero confirmed rate at or before `instant` (0 if none)."""
        rate = 0.0
        for point in self.rate_history:
            if point.at > instant:
                break
            if point.rate_ml_h > 0:
                rate = point.rate_ml_h
        return rate


@cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = InfusionState.model_fields.get(name)
    if field is None:
        raise KeyError(f"InfusionState has no field {name!r}")
    annotated: Any = (
        Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    )
    return TypeAdapter(annotated)


def initial_state(
    protocol: Protocol,
    *,
    infusion_number: int,
    course: CourseState,
    bag_prepared_at: datetime,
    day: Literal[1, 2] | None = None,
) -> InfusionState:
    """A planned infusion whose row, bag and rates the planner takes from the course (L4-L8).

    Never from a caller: the row is `select_row(protocol, infusion_number, course)`. Raises
    `ValueError` naming the field or rule: a withdrawn course (I8), missing history (L8), an
    infusion number (and split-dose day) the course already holds.
    """
    taken = {(i.infusion_number, i.day) for i in course.infusions}
    if (infusion_number, day) in taken:
        which = f"infusion {infusion_number}" + (f" day {day}" if day else "")
        raise ValueError(f"infusion_number: the course already holds {which}")
    row = select_row(protocol, infusion_number, course, split_day=day)
    return InfusionState(
        protocol=protocol,
        infusion_number=infusion_number,
        day=day,
        bag_ml=row.bag_ml,
        initial_rate_ml_h=row.initial_rate_ml_h,
        min_duration_min=row.min_duration_min,
        course=course,
        bag_prepared_at=bag_prepared_at,
        bag_volume_ml=row.bag_ml,
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
