"""Builders shared by the planner tests: history records and protocol TOML variants."""

from __future__ import annotations

from importlib import resources
from typing import Literal

from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.protocol import Protocol, parse_protocol
from pumpctl.protocols import load_protocol


def reaction(
    number: int,
    running_min: float,
    *,
    grade: int = 1,
    rate_ml_h: float = 50.0,
    after_completion: bool = False,
    sign: Sign = Sign.OTHER,
) -> ReactionRecord:
    """A reaction of infusion `number` at `running_min` of its running time."""
    return ReactionRecord(
        grade=grade,
        max_grade=grade,
        signs=frozenset({sign}),
        rate_ml_h=rate_ml_h,
        running_min=running_min,
        infusion_number=number,
        after_completion=after_completion,
    )


def infusion(
    number: int,
    *reactions: ReactionRecord,
    highest: float = 200.0,
    completed: bool = True,
    day: Literal[1, 2] | None = None,
) -> InfusionRecord:
    """A record of an earlier infusion."""
    return InfusionRecord(
        infusion_number=number,
        highest_rate_ml_h=highest,
        reactions=reactions,
        completed=completed,
        day=day,
    )


def course(*records: InfusionRecord) -> CourseState:
    """A course with these records."""
    return CourseState(infusions=records)


def clean_course(count: int) -> CourseState:
    """Infusions 1..count completed at 200 ml/h with no reaction."""
    return course(*(infusion(n) for n in range(1, count + 1)))


def protocol_variant(replace: dict[str, str], name: str = "daratumumab") -> Protocol:
    """The shipped protocol's TOML with exact text replacements, parsed."""
    text = (resources.files("config") / "protocols" / f"{name}.toml").read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_protocol(text, "variant.toml")


DEFAULT = load_protocol("daratumumab")
LABEL = load_protocol("daratumumab-label")
SPLIT = load_protocol("daratumumab-split")
