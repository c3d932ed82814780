"""Protocol files: validated models of `config/protocols/*.toml` (numbers and policies are data).

A malformed or inconsistent file is refused at load with `ProtocolError`, whose message names
the file, the field and why. Rule choices that are logic rather than numbers are enumerated
policy keys (`Grade4Policy`, `SecondRowPolicy`, `SubsequentRowPolicy`, `FirstDosePolicy`).
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "FirstDosePolicy",
    "Grade4Policy",
    "InfusionRow",
    "Protocol",
    "ProtocolError",
    "RowKind",
    "SecondRowPolicy",
    "SubsequentRowPolicy",
    "parse_protocol",
]

PositiveRate = Annotated[float, Field(gt=0, le=1000)]
PositiveVolume = Annotated[float, Field(gt=0, le=5000)]
Minutes = Annotated[int, Field(gt=0, le=7 * 24 * 60)]


class ProtocolError(ValueError):
    """A protocol file that cannot be used: names the file, the field and why."""


class RowKind(StrEnum):
    """Which row of Table 3 an infusion uses."""

    FIRST = "first"
    SECOND = "second"
    SUBSEQUENT = "subsequent"


class Grade4Policy(StrEnum):
    """I7: how a grade 4 reaction is handled."""

    OBSERVE = "observe"  # review's Table 5: grade 4 follows I5 (2 h observation)
    DISCONTINUE = "discontinue"  # label: permanent discontinuation (I8 at once)


class SecondRowPolicy(StrEnum):
    """L4: when infusion 2 may use the second-infusion row."""

    NO_REACTION_FIRST_WINDOW = "no_reaction_first_window"  # footnote a, label wording


class SubsequentRowPolicy(StrEnum):
    """L5: when infusions 3+ may use the subsequent row."""

    # Default: infusions 1 and 2 each reached the minimum rate and neither had any reaction.
    FIRST_TWO_CLEAN_AT_MIN_RATE = "first_two_clean_at_min_rate"
    # The label's later footnote wording: the previous infusion had no reaction at all.
    PREVIOUS_CLEAN = "previous_clean"


class FirstDosePolicy(StrEnum):
    """How infusion 1 is given."""

    SINGLE = "single"  # 16 mg/kg in 1000 ml
    SPLIT_TWO_DAYS = "split_two_days"  # 8 mg/kg on days 1 and 2, 500 ml each


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Ladder(_Strict):
    """L1, L2: the escalation ladder shared by every row."""

    increment_ml_h: PositiveRate
    interval_min: Minutes
    max_rate_ml_h: PositiveRate
    rate_resolution_ml_h: Annotated[float, Field(gt=0, le=10)] = 0.1


class InfusionRow(_Strict):
    """One row of Table 3 (L3: the bag volume is the VTBI)."""

    bag_ml: PositiveVolume
    initial_rate_ml_h: PositiveRate
    min_duration_min: Minutes | None = None  # L6


class Rows(_Strict):
    """The three rows of Table 3."""

    first: InfusionRow
    second: InfusionRow
    subsequent: InfusionRow

    def row(self, kind: RowKind) -> InfusionRow:
        """The row of that kind."""
        row: InfusionRow = getattr(self, kind.value)
        return row


class History(_Strict):
    """L4, L5: which earlier facts select the row."""

    second_row_policy: SecondRowPolicy = SecondRowPolicy.NO_REACTION_FIRST_WINDOW
    second_row_window_min: Minutes = 180
    subsequent_row_policy: SubsequentRowPolicy = SubsequentRowPolicy.FIRST_TWO_CLEAN_AT_MIN_RATE
    subsequent_min_rate_ml_h: PositiveRate = 100.0


class Reactions(_Strict):
    """I2-I7: numbers of Table 5."""

    restart_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    observation_window_min: Minutes = 120
    bronchospasm_limit_min: Minutes = 360
    laryngeal_edema_withdraw_grade: Annotated[int, Field(ge=1, le=4)] = 2
    bronchospasm_hold_grade: Annotated[int, Field(ge=1, le=4)] = 2
    severe_grade: Annotated[int, Field(ge=2, le=4)] = 3
    severe_occurrences_withdraw: Annotated[int, Field(ge=1, le=10)] = 3
    grade4_policy: Grade4Policy = Grade4Policy.OBSERVE


class Bag(_Strict):
    """L9: stability of the diluted bag."""

    stability_min: Minutes = 900
    warn_before_min: Minutes = 60

    @model_validator(mode="after")
    def _warn_inside(self) -> Self:
        if self.warn_before_min >= self.stability_min:
            raise ValueError("bag.warn_before_min must be shorter than bag.stability_min")
        return self


class Dose(_Strict):
    """D1: dose and concentrate."""

    mg_per_kg: Annotated[float, Field(gt=0, le=100)] = 16.0
    concentrate_mg_ml: Annotated[float, Field(gt=0, le=1000)] = 20.0
    first_dose_policy: FirstDosePolicy = FirstDosePolicy.SINGLE


class SplitFirstDose(_Strict):
    """The split first dose variant: each day on the second-infusion row."""

    mg_per_kg_per_day: Annotated[float, Field(gt=0, le=100)] = 8.0
    bag_ml: PositiveVolume = 500.0
    days: Literal[2] = 2


class Premedication(_Strict):
    """D3: the window before the start in which premedication must be recorded."""

    window_min_min: Annotated[int, Field(ge=0, le=24 * 60)] = 15
    window_max_min: Minutes = 120

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.window_min_min >= self.window_max_min:
            raise ValueError(
                "premedication.window_min_min must be below premedication.window_max_min"
            )
        return self


class SchedulePhase(_Strict):
    """D2: one phase of the schedule (`until_week` absent on the last, open-ended phase)."""

    until_week: Annotated[int, Field(gt=0, le=520)] | None = None
    every_weeks: Annotated[int, Field(gt=0, le=52)]


class Schedule(_Strict):
    """D2: weekly, then every 2 weeks, then every 4 weeks."""

    phases: Annotated[list[SchedulePhase], Field(min_length=1)]

    @model_validator(mode="after")
    def _phases_ordered(self) -> Self:
        *bounded, last = self.phases
        if last.until_week is not None:
            raise ValueError("schedule.phases: the last phase must be open-ended (no until_week)")
        weeks = [p.until_week for p in bounded if p.until_week is not None]
        if len(weeks) != len(bounded):
            raise ValueError("schedule.phases: only the last phase may omit until_week")
        if weeks != sorted(weeks) or len(set(weeks)) != len(weeks):
            raise ValueError("schedule.phases: until_week must strictly increase")
        return self


class Protocol(_Strict):
    """A whole protocol file."""

    schema_: Literal[1] = Field(alias="schema")
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    title: str
    source: str
    ladder: Ladder
    rows: Rows
    history: History = History()
    reactions: Reactions = Reactions()
    bag: Bag = Bag()
    dose: Dose = Dose()
    premedication: Premedication = Premedication()
    schedule: Schedule
    split_first_dose: SplitFirstDose | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        top = self.ladder.max_rate_ml_h
        for kind in RowKind:
            row = self.rows.row(kind)
            if row.initial_rate_ml_h > top:
                raise ValueError(
                    f"rows.{kind}.initial_rate_ml_h ({row.initial_rate_ml_h}) is above "
                    f"ladder.max_rate_ml_h ({top})"
                )
            if row.min_duration_min is not None and row.bag_ml / top * 60 > row.min_duration_min:
                # L6 can only slow an infusion down, never force one faster than the maximum.
                raise ValueError(
                    f"rows.{kind}.min_duration_min ({row.min_duration_min}) is shorter than the "
                    f"bag at the maximum rate allows ({row.bag_ml / top * 60:.1f} min)"
                )
        if self.history.subsequent_min_rate_ml_h > top:
            raise ValueError("history.subsequent_min_rate_ml_h is above ladder.max_rate_ml_h")
        split = self.dose.first_dose_policy is FirstDosePolicy.SPLIT_TWO_DAYS
        if split and self.split_first_dose is None:
            raise ValueError(
                "dose.first_dose_policy = 'split_two_days' needs a [split_first_dose] table"
            )
        if not split and self.split_first_dose is not None:
            raise ValueError(
                "[split_first_dose] is given but dose.first_dose_policy is not 'split_two_days'"
            )
        if self.split_first_dose and self.split_first_dose.bag_ml != self.rows.second.bag_ml:
            raise ValueError(
                "split_first_dose.bag_ml must equal rows.second.bag_ml (each day uses that row)"
            )
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_protocol(text: str, origin: str) -> Protocol:
    """Parse and validate protocol TOML; `origin` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"{origin}: not valid TOML: {exc}") from exc
    try:
        return Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"{origin}: {_describe(exc)}") from exc
