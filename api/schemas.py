"""Request and response bodies of the REST API (separate from the store's tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import Path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from pumpctl.core.machine import PRIORITY
from pumpctl.core.machine.events import AlarmName as CoreAlarmName
from pumpctl.core.machine.state import EARLIEST, LATEST
from pumpctl.rowid import MAX_ROW_ID

__all__ = [
    "AlarmKind",
    "AlarmName",
    "BagIn",
    "CreatedInfusionOut",
    "HistoryIn",
    "InfusionId",
    "InfusionIn",
    "InfusionOut",
    "InfusionRecordWaits",
    "Message",
    "PatientId",
    "PatientIn",
    "PremedicationIn",
    "ProblemOut",
    "ReactionId",
    "ReactionIn",
    "ReasonIn",
    "ReassessIn",
    "ResumeIn",
    "ShownState",
    "StartIn",
]

_ALARM_NAME_MAX: int = next(
    m.max_length for m in get_args(CoreAlarmName)[1:] if getattr(m, "max_length", None)
)
#: A row id in a path: 1 up to the largest the store holds (larger: 422 naming the parameter).
InfusionId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="an infusion's id")]
PatientId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="a patient's id")]
ReactionId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="a reaction's number")]
#: An alarm kind of docs/clinical-rules.md's A8 table (any other: 422 naming the parameter).
AlarmKind = Annotated[
    str,
    Path(
        pattern=f"^({'|'.join(sorted(PRIORITY))})$",
        description="an alarm kind (docs/clinical-rules.md, A8)",
    ),
]

#: An alarm's name in a path (A1's clear): an identifier no longer than the rules core takes
#: (its `AlarmName`), so no name reaches the core that it would refuse with a 500.
AlarmName = Annotated[
    str,
    Path(
        pattern=f"^[A-Za-z0-9_.-]{{1,{_ALARM_NAME_MAX}}}$",
        description="an alarm's name (docs/clinical-rules.md, A1)",
    ),
]
#: A protocol named by a request: a shipped protocol's name, never a file's path.
ProtocolName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


def _clinical(value: datetime) -> datetime:
    """A time the rules core can take (its own bounds, EARLIEST .. LATEST): year 0001 or 9999
    is refused here, naming the field, before a conversion to UTC overflows in the store (a
    500, issue 20); the words never repeat the value sent."""
    if not EARLIEST <= value < LATEST:
        raise PydanticCustomError(
            "clinical_time",
            "Input should be a time from {earliest} to before {latest} (UTC)",
            {"earliest": EARLIEST.date().isoformat(), "latest": LATEST.date().isoformat()},
        )
    return value


#: A clinical time in a request: with its offset (a time without one is 422), within the rules
#: core's bounds.
ClinicalTime = Annotated[AwareDatetime, AfterValidator(_clinical)]
Grade = Annotated[StrictInt, Field(ge=1, le=4, description="CTCAE grade 1-4")]
SignName = Literal["laryngeal_edema", "bronchospasm", "other"]
Weight = Annotated[float, Field(gt=0, le=500, allow_inf_nan=False)]


class In(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class PatientIn(In):
    mrn: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    weight_kg: Weight
    protocol: ProtocolName | None = None


class HistoryReactionIn(In):
    """A reaction of an infusion given elsewhere (I10's facts)."""

    grade: Grade
    max_grade: Grade | None = None
    signs: Annotated[list[SignName], Field(max_length=3)] = Field(default_factory=list)
    rate_ml_h: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
    running_min: Annotated[float, Field(ge=0, le=10_000, allow_inf_nan=False)]


class HistoryIn(In):
    """L8: an infusion given elsewhere."""

    infusion_number: Annotated[StrictInt, Field(ge=1, le=1000)]
    day: Literal[1, 2] | None = None
    highest_rate_ml_h: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
    completed: StrictBool = True
    reactions: list[HistoryReactionIn] = Field(default_factory=list, max_length=50)


class InfusionIn(In):
    patient_id: Annotated[StrictInt, Field(ge=1, le=MAX_ROW_ID)]
    pump_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    weight_kg: Weight | None = None
    premedication_at: ClinicalTime | None = None
    bag_prepared_at: ClinicalTime | None = None


class PremedicationIn(In):
    given_at: ClinicalTime


class StartIn(In):
    """D3's override reason (premedication) and D2's (spacing): each a clinician's, audited."""

    override_reason: Text | None = None
    schedule_override_reason: Text | None = None


class ReasonIn(In):
    reason: Text


class ReactionIn(In):
    grade: Grade
    signs: Annotated[list[SignName], Field(min_length=1, max_length=3)]
    onset_at: ClinicalTime | None = None


class ReassessIn(In):
    grade: Grade
    signs: Annotated[list[SignName], Field(min_length=1, max_length=3)]


def _bool_or_grade(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """The union's refusal as one error at the field (pydantic gives one per member, at
    `reaction.bool` and `reaction.constrained-int`)."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError(
            "bool_or_grade", "Input should be a boolean or a grade (an integer 1 to 4)"
        ) from None


class ResumeIn(In):
    """After an unexplained stop found on restart (A4): `reaction` false, or a grade."""

    reaction: Annotated[StrictBool | Grade | None, WrapValidator(_bool_or_grade)] = None


class BagIn(In):
    prepared_at: ClinicalTime


class ReactionOut(BaseModel):
    reaction_id: int
    stop: Literal["confirmed", "unconfirmed", "already_stopped", "no_pump_action"]
    stop_confirmed_ms: float | None = None
    state: str
    alarm: str | None = None
    message: str | None = None
    recorded: bool = True
    record_message: str | None = None


#: The state an infusion is shown in (docs/interfaces.md; pumpctl.core.machine.public).
ShownState = Literal[
    "planned",
    "starting",
    "running",
    "paused",
    "stopped_observation",
    "completed",
    "withdrawn",
    "stopped",
    "cancelled",
]


class Out(BaseModel):
    """A response body's schema: documentation and the contract clients (and schemathesis)
    check. The kernel builds these answers as plain dicts, never validated on its event loop
    (every stop passes through it); tests/api/test_infusion_out.py holds each view to its model
    (no field missing, none extra)."""

    model_config = ConfigDict(extra="forbid")


class StateReason(Out):
    """Why the infusion is in its state: the rule and its words."""

    rule: Annotated[str, Field(pattern=r"^[LIAD]\d+$")]
    message: str


class ReactionView(Out):
    """One reaction of the infusion (I1-I11): its number, grades, signs, when, at what rate."""

    id: int
    grade: int
    max_grade: int
    signs: list[str]
    onset_at: datetime | None
    rate_ml_h: float
    running_min: float


class AlarmView(Out):
    """An alarm raised and not yet cleared (A1, A8), highest priority first."""

    kind: str
    rule: str
    priority: str
    message: str
    raised_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class PlannedStep(Out):
    at_min: float  # minutes of running time from the start (L1)
    rate_ml_h: float


class RateChange(Out):
    at: datetime
    rate_ml_h: float


class InfusionOut(Out):
    """One infusion's public state (GET /infusions/{id}, the list, and the actions' 200)."""

    id: int
    patient_id: int
    patient_mrn: str
    course_id: int
    pump_id: str
    infusion_number: int
    day: Literal[1, 2] | None
    row: str  # the row of Table 3 the plan takes (L4, L5)
    state: ShownState
    state_reason: StateReason | None
    supervised: bool
    rate_ml_h: float  # what the pump runs at (0 when it does not run)
    step_rate_ml_h: float  # the current step's rate
    volume_infused_ml: float
    bag_ml: float
    bag_infused_ml: float
    dose_mg: float | None
    weight_kg: float | None
    premedication_at: datetime | None
    running_min: float
    time_left_min: float | None
    next_escalation_at: datetime | None
    bag_expires_at: datetime | None
    held: bool
    link_lost: bool
    stop_unconfirmed: bool
    stop_pending: bool
    latched_alarms: list[str]
    pump_alarms: list[str]
    planned_steps: list[PlannedStep]
    rate_history: list[RateChange]
    reaction: ReactionView | None
    reactions: list[ReactionView]
    alarms: list[AlarmView]
    started_at: datetime | None
    stop_reason: str | None


class CreatedInfusionOut(InfusionOut):
    """201 of a new infusion: its view and the rate its first step starts at (L1)."""

    initial_rate_ml_h: float | None


class InfusionRecordWaits(InfusionOut):
    """202 of an action: done, but its record waits for a degraded store."""

    recorded: Literal[False]
    message: str


class StoreDown(BaseModel):
    """The store does not answer within its bound (or fails): what was not done, and why."""

    store: Literal["degraded"]
    message: str


class StoreDownOut(BaseModel):
    """503: the store is degraded (nothing of the action was done, or it says what was)."""

    detail: StoreDown


class Message(BaseModel):
    """An error in words: 401 no or bad token, 403 wrong role, 404 unknown id."""

    detail: str


class Problem(BaseModel):
    """A refusal: the rule of docs/clinical-rules.md it names, and its words."""

    rule: Annotated[str, Field(pattern=r"^[LIAD]\d+$")]
    message: str


class ProblemOut(BaseModel):
    detail: Problem


class Instant(BaseModel):
    """Clinical time now; with the real clock, how the wall clock stands against it (A7)."""

    now: datetime
    mode: Literal["real", "scaled", "virtual"]
    wall_offset_s: float | None = None  # the wall clock ahead (+) or behind (-) clinical time
    wall_steps: int = 0  # steps of the wall clock seen since the start
    last_wall_step_s: float | None = None
    last_wall_step_at: datetime | None = None


Json = dict[str, Any]
