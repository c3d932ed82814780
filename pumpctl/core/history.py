"""What a course remembers: earlier infusions and their reactions (L4, L5, L8, I6, I8, I10, D3).

Values only. The planner reads them to choose a row (L4, L5); the infusion state machine writes
reactions with the facts I10 requires (grade, signs, rate, running time, infusion number); the
course counts grade >= 3 occurrences over its whole length (I6) and carries withdrawal (I8).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

__all__ = [
    "CourseState",
    "Grade",
    "InfusionRecord",
    "ReactionRecord",
    "Sign",
]

# Strict: `true` is not a grade (the Clarifications, "All").
Grade = Annotated[int, Strict(), Field(ge=1, le=4, description="CTCAE grade 1-4")]


class Sign(StrEnum):
    """Signs a nurse reports with a reaction (the ones the rules act on, and `other`)."""

    LARYNGEAL_EDEMA = "laryngeal_edema"  # I3
    BRONCHOSPASM = "bronchospasm"  # I4
    OTHER = "other"


class _Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReactionRecord(_Value):
    """One reaction (one stop of the pump, I5), as I10 records it: decided by its last grade."""

    grade: Grade  # the last recorded grade
    max_grade: Grade  # the highest grade recorded during this reaction (I6 counts >= 3)
    signs: frozenset[Sign] = frozenset()
    rate_ml_h: Annotated[float, Field(ge=0)]  # rate at onset (0 if reported while paused)
    running_min: Annotated[float, Field(ge=0)]  # running time since start at onset
    infusion_number: Annotated[int, Field(ge=1)]
    after_completion: bool = False  # I11: a delayed reaction, reported after completion
    onset_at: datetime | None = None

    @model_validator(mode="after")
    def _max_covers_last(self) -> Self:
        if self.max_grade < self.grade:
            raise ValueError("max_grade must be at least grade")
        return self


class InfusionRecord(_Value):
    """An earlier infusion: ours, or one entered by a clinician from elsewhere (L8)."""

    infusion_number: Annotated[int, Field(ge=1)]
    highest_rate_ml_h: Annotated[float, Field(ge=0, le=1000)]
    reactions: tuple[ReactionRecord, ...] = ()
    completed: bool = True
    given_elsewhere: bool = False  # L8: entered by a clinician; audited by the service
    # Split first dose variant: days 1 and 2 are each recorded, both as infusion 1; running
    # times of their reactions count from the start of that day's infusion.
    day: Literal[1, 2] | None = None

    @model_validator(mode="after")
    def _reactions_belong(self) -> Self:
        for reaction in self.reactions:
            if reaction.infusion_number != self.infusion_number:
                raise ValueError(
                    f"reactions: a reaction of infusion {reaction.infusion_number} "
                    f"cannot belong to infusion {self.infusion_number}"
                )
        return self


class CourseState(_Value):
    """A patient's course: history, the course-wide I6 count, and withdrawal (I8)."""

    infusions: tuple[InfusionRecord, ...] = ()
    withdrawn: bool = False
    withdrawn_reason: str | None = None

    def severe_occurrences(self, severe_grade: int = 3) -> int:
        """I6: reactions that reached `severe_grade` (3) at any point, over the whole course."""
        return sum(1 for i in self.infusions for r in i.reactions if r.max_grade >= severe_grade)

    @model_validator(mode="after")
    def _one_record_per_day(self) -> Self:
        seen: dict[int, list[int | None]] = {}
        for infusion in self.infusions:
            days = seen.setdefault(infusion.infusion_number, [])
            if infusion.day in days or (days and (infusion.day is None or None in days)):
                raise ValueError(
                    f"infusions: infusion {infusion.infusion_number} is recorded twice "
                    "(one record, or one per day of a split first dose)"
                )
            days.append(infusion.day)
        return self

    def infusion(self, number: int) -> tuple[InfusionRecord, ...]:
        """The records of infusion `number`: one, or one per day of a split first dose."""
        return tuple(i for i in self.infusions if i.infusion_number == number)

    @property
    def next_infusion_number(self) -> int:
        """The number the next infusion will have."""
        return max((i.infusion_number for i in self.infusions), default=0) + 1

    def record(self, infusion: InfusionRecord) -> CourseState:
        """A new course state with `infusion` added (replacing one of the same number and day)."""
        kept = tuple(
            i
            for i in self.infusions
            if i.infusion_number != infusion.infusion_number
            or (i.day is not None and infusion.day is not None and i.day != infusion.day)
        )
        ordered = sorted((*kept, infusion), key=lambda i: (i.infusion_number, i.day or 0))
        return self.model_copy(update={"infusions": tuple(ordered)})
