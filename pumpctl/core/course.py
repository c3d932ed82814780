"""I8: what withdraws a course from its history, and reinstating a withdrawn course.

Pure decisions. `entry_withdrawal` judges a history entry's reactions as a live report is
judged (I3, I6, and the label's I7): history a clinician enters (L8) withdraws the course at
once, as the same reactions reported live would have. `reinstate` returns either a
`Reinstated` (the new course state and the audit fact to record) or a `NotReinstated` naming I8 and
why; only a clinician reinstates, with a reason, and the service never does. Nothing changes
on refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

from pumpctl.core.history import CourseState, InfusionRecord, Sign
from pumpctl.core.protocol import Grade4Policy, Reactions
from pumpctl.core.rules import Rule

__all__ = [
    "CLINICIAN",
    "AuditFact",
    "NotReinstated",
    "Reinstated",
    "Withdrawal",
    "entry_withdrawal",
    "reinstate",
]

CLINICIAN = "clinician"


@dataclass(frozen=True, slots=True)
class AuditFact:
    """An audit event the caller records: type, rule, actor and data."""

    type: str
    rule: Rule
    actor: str
    data: dict[str, object]


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """The rule that withdraws a course (I3, I6, I7) and why, in words."""

    rule: Rule
    reason: str

    @property
    def course_reason(self) -> str:
        """The course's `withdrawn_reason`: the rule id, then why."""
        return f"{self.rule}: {self.reason}"


def entry_withdrawal(
    before: CourseState, entry: InfusionRecord, rules: Reactions
) -> Withdrawal | None:
    """The withdrawal a history entry brings, or None (I3, I6, I7; L8).

    Entered history counts as a live report does, and like a report it is the entry that
    withdraws: one of its reactions that reached grade >= 2 with laryngeal edema among its
    signs (I3); one that reached grade >= 3 and makes the course's count of such reactions
    three or more (I6); under the label's policy, one of grade 4 (I7). A record holds a
    reaction's highest grade and every sign recorded during it, so the highest grade is judged
    (the safer reading). The stricter outcome wins in the order I3, I6, I7. An entry that
    brings none of these leaves a course as it is, also one a clinician reinstated (I8).
    """
    reactions = entry.reactions
    for r in reactions:
        if r.max_grade >= rules.laryngeal_edema_withdraw_grade and Sign.LARYNGEAL_EDEMA in r.signs:
            return Withdrawal(
                Rule.I3,
                f"grade {r.max_grade} laryngeal edema in infusion {r.infusion_number}",
            )
    if any(r.max_grade >= rules.severe_grade for r in reactions):
        count = before.severe_occurrences(rules.severe_grade) + sum(
            1 for r in reactions if r.max_grade >= rules.severe_grade
        )
        if count >= rules.severe_occurrences_withdraw:
            return Withdrawal(Rule.I6, f"occurrence {count} of grade >= {rules.severe_grade}")
    if rules.grade4_policy is Grade4Policy.DISCONTINUE:
        for r in reactions:
            if r.max_grade == 4:
                return Withdrawal(
                    Rule.I7,
                    f"grade 4 in infusion {r.infusion_number}: permanent discontinuation "
                    "(protocol policy)",
                )
    return None


@dataclass(frozen=True, slots=True)
class Reinstated:
    """The course is no longer withdrawn; `audit` is to be recorded with it."""

    course: CourseState
    audit: AuditFact


@dataclass(frozen=True, slots=True)
class NotReinstated:
    """A refusal naming the rule and why; the course is unchanged."""

    rule: Rule
    reason: str


def reinstate(
    course: CourseState, *, actor: str, role: str, reason: str | None
) -> Reinstated | NotReinstated:
    """I8: a clinician reinstates a withdrawn course with a non-empty reason (audited)."""
    if not course.withdrawn:
        return NotReinstated(Rule.I8, "the course is not withdrawn: nothing to reinstate")
    if role != CLINICIAN:
        return NotReinstated(
            Rule.I8, f"only a clinician can reinstate a withdrawn course (not {role!r})"
        )
    if reason is None or not reason.strip():
        return NotReinstated(Rule.I8, "reinstating a withdrawn course needs a non-empty reason")
    if not actor.strip():
        return NotReinstated(Rule.I8, "reinstating a withdrawn course needs the clinician's name")
    new = course.model_copy(update={"withdrawn": False, "withdrawn_reason": None})
    fact = AuditFact(
        type="course_reinstated",
        rule=Rule.I8,
        actor=actor,
        data={"reason": reason.strip(), "withdrawn_reason": course.withdrawn_reason},
    )
    return Reinstated(course=new, audit=fact)
