"""L8: a clinician's entry of an infusion given elsewhere, and the history file of `pumpctl plan`.

Both are validated here (pure: text or mappings in, values out). Errors name every bad field
(`infusions.0.reactions.1.grade: ...`). The file format is documented in config/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pumpctl.core.history import CourseState, Grade, InfusionRecord, ReactionRecord, Sign

__all__ = [
    "HistoryEntryError",
    "HistoryFile",
    "InfusionEntry",
    "ReactionEntry",
    "infusion_given_elsewhere",
    "parse_history",
]

Rate = Annotated[float, Field(ge=0, le=1000)]


class HistoryEntryError(ValueError):
    """An entry or history file that cannot be used: names each field and why."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReactionEntry(_Entry):
    """One reaction of an earlier infusion (L8, I10): grade, signs, and rate and time at onset."""

    grade: Grade
    max_grade: Grade | None = None  # highest grade during the reaction; defaults to `grade`
    signs: Annotated[frozenset[Sign], Field(min_length=1)]
    running_min: Annotated[float, Field(ge=0, le=7 * 24 * 60)]
    rate_ml_h: Rate
    after_completion: bool = False  # I11: reported after the infusion completed

    @model_validator(mode="after")
    def _max_covers_last(self) -> Self:
        if self.max_grade is not None and self.max_grade < self.grade:
            raise ValueError("max_grade must be at least grade")
        return self

    def record(self, infusion_number: int) -> ReactionRecord:
        """The course's value for this reaction."""
        return ReactionRecord(
            grade=self.grade,
            max_grade=self.max_grade or self.grade,
            signs=self.signs,
            rate_ml_h=self.rate_ml_h,
            running_min=self.running_min,
            infusion_number=infusion_number,
            after_completion=self.after_completion,
        )


class InfusionEntry(_Entry):
    """L8: an earlier infusion as a clinician enters it."""

    infusion_number: Annotated[int, Field(ge=1, le=1000)]
    highest_rate_ml_h: Annotated[float, Field(gt=0, le=1000)]
    reactions: tuple[ReactionEntry, ...] = ()
    completed: bool = True
    day: Literal[1, 2] | None = None  # split first dose: day 1 or 2 of infusion 1

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for index, reaction in enumerate(self.reactions):
            if reaction.rate_ml_h > self.highest_rate_ml_h:
                raise ValueError(
                    f"reactions.{index}.rate_ml_h ({reaction.rate_ml_h:g}) is above "
                    f"highest_rate_ml_h ({self.highest_rate_ml_h:g})"
                )
        if self.day is not None and self.infusion_number != 1:
            raise ValueError("day: only infusion 1 (a split first dose) has days")
        return self

    def record(self, *, given_elsewhere: bool) -> InfusionRecord:
        """The course's value for this infusion."""
        return InfusionRecord(
            infusion_number=self.infusion_number,
            highest_rate_ml_h=self.highest_rate_ml_h,
            reactions=tuple(r.record(self.infusion_number) for r in self.reactions),
            completed=self.completed,
            given_elsewhere=given_elsewhere,
            day=self.day,
        )


class HistoryFileInfusion(InfusionEntry):
    """An infusion in a history file: an entry, marked given elsewhere or not."""

    given_elsewhere: bool = False


class HistoryFile(_Entry):
    """The `--history` file: earlier infusions of the course, and whether it is withdrawn."""

    infusions: tuple[HistoryFileInfusion, ...] = ()
    withdrawn: bool = False
    withdrawn_reason: str | None = None


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def infusion_given_elsewhere(data: Mapping[str, object]) -> InfusionRecord:
    """L8: validate a clinician's entry of an infusion given elsewhere (the caller audits it)."""
    try:
        entry = InfusionEntry.model_validate(data)
    except ValidationError as exc:
        raise HistoryEntryError(f"L8: {_describe(exc)}") from exc
    return entry.record(given_elsewhere=True)


def parse_history(text: str, origin: str) -> CourseState:
    """Parse a history JSON document (see config/README.md); `origin` names it in errors."""
    try:
        parsed = HistoryFile.model_validate_json(text)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise HistoryEntryError(f"{origin}: not valid JSON: {exc.errors()[0]['msg']}") from exc
        raise HistoryEntryError(f"{origin}: {_describe(exc)}") from exc
    try:
        return CourseState(
            infusions=tuple(i.record(given_elsewhere=i.given_elsewhere) for i in parsed.infusions),
            withdrawn=parsed.withdrawn,
            withdrawn_reason=parsed.withdrawn_reason,
        )
    except ValidationError as exc:
        raise HistoryEntryError(f"{origin}: {_describe(exc)}") from exc
