"""The infusion's state: a validated value, stored and rebuilt as is (A4).

Phases (interfaces.md's `state` of an infusion, plus `starting`), the open reaction of the
current stop (I5, I10), the command not yet confirmed (A3), and the flags that stop running time
(A1 alarms, A2 link, L9 bag). `initial_state` builds a planned infusion; `infusion_record` is
what the course keeps of it (L4, L5, I6, D3 of later infusions).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from pumpctl.core.bag import BagLife
from pumpctl.core.history import CourseState, Grade, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.protocol import Protocol


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (clinical time is UTC)")
    return value


Instant = Annotated[datetime, AfterValidator(_aware)]


Rate = Annotated[float, Field(ge=0, le=1000)]


Volume = Annotated[float, Field(ge=0, le=5000)]


class Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


REACTION_PHASES = frozenset({InfusionPhase.PAUSED, InfusionPhase.STOPPED_OBSERVATION})


class PendingCommand(Value):
    """A3: what the machine has commanded and the pump has not yet confirmed."""

    kind: Literal["run", "stop"]
    rate_ml_h: Rate | None = None  # the rate a `run` expects


class OpenReaction(Value):
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
