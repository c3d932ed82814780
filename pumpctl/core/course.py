"""I8: reinstating a withdrawn course. Only a clinician, with a reason; the service never does.

A pure decision: `reinstate` returns either a `Reinstated` (the new course state and the audit
fact to record) or a `Refused` naming I8 and why. Nothing changes on refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from pumpctl.core.history import CourseState
from pumpctl.core.rules import Rule

__all__ = ["CLINICIAN", "AuditFact", "Refused", "Reinstated", "reinstate"]

CLINICIAN = "clinician"


@dataclass(frozen=True, slots=True)
class AuditFact:
    """An audit event the caller records: type, rule, actor and data."""

    type: str
    rule: Rule
    actor: str
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class Reinstated:
    """The course is no longer withdrawn; `audit` is to be recorded with it."""

    course: CourseState
    audit: AuditFact


@dataclass(frozen=True, slots=True)
class Refused:
    """A refusal naming the rule and why; the course is unchanged."""

    rule: Rule
    reason: str


def reinstate(
    course: CourseState, *, actor: str, role: str, reason: str | None
) -> Reinstated | Refused:
    """I8: a clinician reinstates a withdrawn course with a non-empty reason (audited)."""
    if not course.withdrawn:
        return Refused(Rule.I8, "the course is not withdrawn: nothing to reinstate")
    if role != CLINICIAN:
        return Refused(Rule.I8, f"only a clinician can reinstate a withdrawn course (not {role!r})")
    if reason is None or not reason.strip():
        return Refused(Rule.I8, "reinstating a withdrawn course needs a non-empty reason")
    if not actor.strip():
        return Refused(Rule.I8, "reinstating a withdrawn course needs the clinician's name")
    new = course.model_copy(update={"withdrawn": False, "withdrawn_reason": None})
    fact = AuditFact(
        type="course_reinstated",
        rule=Rule.I8,
        actor=actor,
        data={"reason": reason.strip(), "withdrawn_reason": course.withdrawn_reason},
    )
    return Reinstated(course=new, audit=fact)
