"""D1-D6: dose and preparation, schedule, pre- and post-medication, blood profile, eligibility.

Pure values and decisions. There is deliberately no function that reduces a dose: 5.3.1 says
"dose modification of daratumumab is not recommended"; side effects delay a dose (a later
infusion date), they never change it (D1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from pumpctl.core.history import CourseState
from pumpctl.core.protocol import Protocol, Schedule
from pumpctl.core.rules import Rule

__all__ = [
    "MAJOR_REACTION_GRADE",
    "MAX_WEIGHT_KG",
    "PREPARATION_FACTS",
    "AsthmaSeverity",
    "BloodProfile",
    "BloodProfileReminder",
    "DoseCalculation",
    "DoseError",
    "EligibilityDecision",
    "GateDecision",
    "LungHistory",
    "Medication",
    "blood_profile_reminder",
    "compute_dose",
    "earliest_start",
    "eligibility",
    "infusion_weeks",
    "postmedication",
    "premedication",
    "premedication_gate",
    "round_weight_kg",
    "schedule_dates",
    "schedule_gate",
    "week_of_infusion",
]

MAX_WEIGHT_KG = 500.0
# D4 leaves "major" undefined; grade >= 2 (moderate or worse) keeps the post-medication longer,
# the safer reading.
MAJOR_REACTION_GRADE = 2

PREPARATION_FACTS = (
    "D1: prepare the dilution in 0.9 % NaCl on the day of the infusion",
    "D1: give through a 0.2 µm in-line filter",
    "D1: use an infusion set with a flow regulator to control the rate",
    "D1: the dose is never reduced for side effects (delay the dose instead, 5.3.1)",
)


class DoseError(ValueError):
    """A dose that cannot be computed: names the field and why."""


# ---------------------------------------------------------------------------------- D1: dose


def round_weight_kg(weight_kg: float) -> int:
    """D1: weight rounded to the nearest kilogram, halves up (70.5 -> 71), not banker's rounding."""
    if not math.isfinite(weight_kg) or weight_kg <= 0:
        raise DoseError(f"weight_kg: must be a positive number of kilograms, not {weight_kg}")
    if weight_kg > MAX_WEIGHT_KG:
        raise DoseError(f"weight_kg: {weight_kg:g} kg is above {MAX_WEIGHT_KG:g} kg")
    rounded = int(Decimal(str(weight_kg)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if rounded < 1:
        raise DoseError(f"weight_kg: {weight_kg:g} kg rounds to 0 kg")
    return rounded


@dataclass(frozen=True, slots=True)
class DoseCalculation:
    """D1: the dose and how the bag is made up (the bag volume stays the VTBI, L3)."""

    weight_kg: float
    rounded_weight_kg: int
    mg_per_kg: float
    dose_mg: float
    concentrate_mg_ml: float
    concentrate_ml: float
    bag_ml: float

    @property
    def saline_ml(self) -> float:
        """0.9 % NaCl left in the bag once the concentrate replaced an equal volume."""
        return round(self.bag_ml - self.concentrate_ml, 2)

    def sheet(self) -> tuple[str, ...]:
        """The preparation sheet: the dose, the make-up of the bag, and the D1 facts."""
        return (
            f"D1: dose {self.dose_mg:g} mg = {self.rounded_weight_kg} kg "
            f"({self.weight_kg:g} kg to the nearest kg, halves up) x {self.mg_per_kg:g} mg/kg",
            f"D1: {self.concentrate_ml:g} ml of concentrate ({self.concentrate_mg_ml:g} mg/ml) "
            f"replaces {self.concentrate_ml:g} ml of saline: the bag stays {self.bag_ml:g} ml "
            f"(L3: VTBI {self.bag_ml:g} ml)",
            *PREPARATION_FACTS,
        )


def compute_dose(
    protocol: Protocol, weight_kg: float, *, mg_per_kg: float | None = None, bag_ml: float
) -> DoseCalculation:
    """D1: dose for `weight_kg` (split first dose: pass that day's `mg_per_kg`) in `bag_ml`."""
    per_kg = protocol.dose.mg_per_kg if mg_per_kg is None else mg_per_kg
    rounded = round_weight_kg(weight_kg)
    dose = Decimal(rounded) * Decimal(str(per_kg))
    concentrate = dose / Decimal(str(protocol.dose.concentrate_mg_ml))
    concentrate_ml = float(concentrate.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    if concentrate_ml >= bag_ml:
        raise DoseError(
            f"weight_kg: {concentrate_ml:g} ml of concentrate does not fit a {bag_ml:g} ml bag"
        )
    return DoseCalculation(
        weight_kg=weight_kg,
        rounded_weight_kg=rounded,
        mg_per_kg=per_kg,
        dose_mg=float(dose),
        concentrate_mg_ml=protocol.dose.concentrate_mg_ml,
        concentrate_ml=concentrate_ml,
        bag_ml=bag_ml,
    )


# ------------------------------------------------------------------------------ D2: schedule


def infusion_weeks(schedule: Schedule, count: int) -> list[int]:
    """D2: the treatment week (1-based) of each of the first `count` infusions."""
    if count < 0:
        raise ValueError(f"count: must be 0 or more, not {count}")
    weeks: list[int] = []
    week = 1
    for phase in schedule.phases:
        while len(weeks) < count and (phase.until_week is None or week <= phase.until_week):
            weeks.append(week)
            week += phase.every_weeks
    return weeks


def week_of_infusion(schedule: Schedule, infusion_number: int) -> int:
    """D2: the treatment week of infusion `infusion_number` (1 -> week 1, 9 -> week 9, 17 -> 25)."""
    if infusion_number < 1:
        raise ValueError(f"infusion_number: must be 1 or more, not {infusion_number}")
    return infusion_weeks(schedule, infusion_number)[-1]


def schedule_dates(start: date, count: int, schedule: Schedule) -> list[date]:
    """D2: the date of each of the first `count` infusions, week 1 starting on `start`.

    Under the split first dose, infusion 1 is `start` and the day after. A delayed dose (5.3.1)
    moves the later dates: plan again from the date actually given.
    """
    return [start + timedelta(weeks=week - 1) for week in infusion_weeks(schedule, count)]


#: D2: a start this much before the scheduled instant is still on the scheduled day.
SCHEDULE_MARGIN = timedelta(hours=12)


def earliest_start(
    schedule: Schedule, infusion_number: int, day: int | None, previous_start: datetime
) -> datetime:
    """D2: the earliest instant infusion `infusion_number` (`day` 2 of a split first dose) may
    start, given when the one before it started (infusion n - 1's first day, or day 1).

    The scheduled instant less `SCHEDULE_MARGIN`, so a start earlier in the day than the last
    one is not refused: weekly in weeks 1-8, every 2 weeks in 9-24, every 4 weeks from 25,
    and the split first dose's day 2 on the day after day 1."""
    if day == 2:
        interval = timedelta(days=1)
    else:
        weeks = infusion_weeks(schedule, max(2, infusion_number))
        interval = timedelta(weeks=weeks[-1] - weeks[-2])
    return previous_start + interval - SCHEDULE_MARGIN


def schedule_gate(
    schedule: Schedule,
    infusion_number: int,
    day: int | None,
    *,
    previous_start: datetime | None,
    start_at: datetime,
    override_reason: str | None = None,
) -> GateDecision:
    """D2: may the infusion start now, given when the one before it started?

    Allowed when nothing earlier of the course is dated here (infusion 1, or history entered
    from elsewhere, L8: said in the reason) or when the schedule's interval has passed (less
    `SCHEDULE_MARGIN`); otherwise refused, unless a clinician overrides with a non-empty reason
    (the caller checks the role), marked for audit, as D3's gate."""
    if previous_start is None:
        return GateDecision(
            allowed=True,
            reason="no earlier infusion of the course is dated here: spacing not checked",
            rule=Rule.D2,
        )
    earliest = earliest_start(schedule, infusion_number, day, previous_start)
    what = f"infusion {infusion_number}" + (f" day {day}" if day is not None else "")
    if start_at >= earliest:
        on_time = f"{what} is on schedule (from {earliest.isoformat()})"
        return GateDecision(allowed=True, reason=on_time, rule=Rule.D2)
    problem = (
        f"{what} is sooner than the schedule allows: not before {earliest.isoformat()} "
        f"(the one before started {previous_start.isoformat()})"
    )
    return _refused_unless_overridden(Rule.D2, problem, override_reason)


def _refused_unless_overridden(
    rule: Rule, problem: str, override_reason: str | None
) -> GateDecision:
    """D2, D3: a gate that refuses for `problem`, unless a clinician gave a non-empty reason."""
    if override_reason is not None and override_reason.strip():
        return GateDecision(
            allowed=True,
            reason=f"{problem}; clinician override",
            rule=rule,
            overridden=True,
            override_reason=override_reason.strip(),
        )
    if override_reason is not None:
        problem += "; an override needs a non-empty reason"
    return GateDecision(allowed=False, reason=problem, rule=rule)


# --------------------------------------------------------------------- D3, D4: medication


class Route(StrEnum):
    """How a medication is given."""

    IV = "iv"
    ORAL = "oral"
    ORAL_OR_IV = "oral_or_iv"
    INHALED = "inhaled"


@dataclass(frozen=True, slots=True)
class Medication:
    """One line of a pre- or post-medication list."""

    rule: Rule
    drug: str
    dose: str
    route: Route
    when: str
    optional: bool = False
    note: str = ""

    def to_json(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "rule": self.rule,
            "drug": self.drug,
            "dose": self.dose,
            "route": self.route.value,
            "when": self.when,
            "optional": self.optional,
            "note": self.note,
        }


def _any_reaction(history: CourseState, before: int) -> bool:
    return any(i.reactions for i in history.infusions if i.infusion_number < before)


def premedication(infusion_number: int, history: CourseState) -> tuple[Medication, ...]:
    """D3: premedication about 1 h before infusion `infusion_number`.

    Methylprednisolone 100 mg for infusions 1-2 and after any reaction in the course; 60 mg from
    infusion 3 only when infusions 1 and 2 are on record and no earlier infusion had a reaction.
    """
    if infusion_number < 1:
        raise ValueError(f"infusion_number: must be 1 or more, not {infusion_number}")
    when = "about 1 h before the start"
    first_two_recorded = bool(history.infusion(1)) and bool(history.infusion(2))
    if infusion_number <= 2:
        steroid, note = "100 mg", "infusions 1 and 2"
    elif _any_reaction(history, infusion_number):
        steroid, note = "100 mg", "a reaction earlier in the course"
    elif not first_two_recorded:
        steroid, note = "100 mg", "no record of infusions 1 and 2 (L8)"
    else:
        steroid, note = "60 mg", "infusions 1 and 2 had no reaction (5.3.1 lists 100 mg)"
    return (
        Medication(
            Rule.D3,
            "methylprednisolone (or an equivalent long-acting corticosteroid)",
            steroid,
            Route.IV,
            when,
            note=note,
        ),
        Medication(Rule.D3, "paracetamol", "650-1000 mg", Route.ORAL, when),
        Medication(
            Rule.D3,
            "diphenhydramine (or an equivalent antihistamine)",
            "25-50 mg",
            Route.ORAL_OR_IV,
            when,
        ),
        Medication(Rule.D3, "montelukast", "10 mg", Route.ORAL, when, optional=True),
    )


@dataclass(frozen=True, slots=True)
class GateDecision:
    """D2, D3: may the infusion start (its spacing, its premedication)? Overrides are audited."""

    allowed: bool
    reason: str
    rule: Rule = Rule.D3
    overridden: bool = False
    override_reason: str | None = None

    def audit(self) -> dict[str, object]:
        """The facts the audit event of this decision carries."""
        return {
            "rule": self.rule,
            "allowed": self.allowed,
            "reason": self.reason,
            "overridden": self.overridden,
            "override_reason": self.override_reason,
        }


def premedication_gate(
    protocol: Protocol,
    premedication_at: datetime | None,
    start_at: datetime,
    override_reason: str | None = None,
) -> GateDecision:
    """D3: allowed when premedication was recorded window_min..window_max min before the start.

    Otherwise refused, unless a clinician overrides with a non-empty reason (the caller checks
    the role); the override is marked for audit.
    """
    low = protocol.premedication.window_min_min
    high = protocol.premedication.window_max_min
    if premedication_at is None:
        problem = "no premedication is recorded"
    else:
        if (premedication_at.tzinfo is None) != (start_at.tzinfo is None):
            raise ValueError("premedication_at: must be timezone-aware like the start time")
        before_min = (start_at - premedication_at).total_seconds() / 60
        if low <= before_min <= high:
            return GateDecision(
                allowed=True,
                reason=f"premedication recorded {before_min:g} min before the start "
                f"(window {low}-{high} min)",
            )
        problem = (
            f"premedication recorded {before_min:g} min before the start, "
            f"outside the {low}-{high} min window"
        )
    return _refused_unless_overridden(Rule.D3, problem, override_reason)


def postmedication(
    infusion_number: int, history: CourseState, *, obstructive_lung_disease: bool = False
) -> tuple[Medication, ...]:
    """D4: post-medication after infusion `infusion_number` (shown in the infusion summary).

    From infusion 5 the corticosteroid becomes optional if infusions 1-4 are on record with no
    reaction of grade >= MAJOR_REACTION_GRADE.
    """
    if infusion_number < 1:
        raise ValueError(f"infusion_number: must be 1 or more, not {infusion_number}")
    first_four = [history.infusion(n) for n in range(1, 5)]
    may_stop = (
        infusion_number > 4
        and all(first_four)
        and not any(
            r.max_grade >= MAJOR_REACTION_GRADE
            for i in history.infusions
            if i.infusion_number < infusion_number
            for r in i.reactions
        )
    )
    note = (
        "may stop: infusions 1-4 done with no major reaction"
        if may_stop
        else "to prevent delayed reactions"
    )
    items = [
        Medication(
            Rule.D4,
            "methylprednisolone (or an equivalent oral corticosteroid)",
            "20 mg",
            Route.ORAL,
            "day 1 and day 2 after the infusion",
            optional=may_stop,
            note=note,
        )
    ]
    if obstructive_lung_disease:
        items += [
            Medication(
                Rule.D4,
                "short- and long-acting bronchodilators",
                "as prescribed",
                Route.INHALED,
                "after the infusion",
                optional=True,
                note="obstructive lung disease",
            ),
            Medication(
                Rule.D4,
                "inhaled corticosteroid",
                "as prescribed",
                Route.INHALED,
                "after the infusion",
                optional=True,
                note="obstructive lung disease; consider monitoring in hospital up to 2 nights",
            ),
        ]
    return tuple(items)


# ---------------------------------------------------------------------- D5: blood profile


class BloodProfile(BaseModel):
    """D5: which pre-treatment blood tests are on record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    abo: bool = False
    rhd: bool = False
    iat: bool = False  # indirect antiglobulin test (antibody screen)


@dataclass(frozen=True, slots=True)
class BloodProfileReminder:
    """D5: what the infusion summary says about blood typing."""

    missing: tuple[str, ...]
    lines: tuple[str, ...]
    rule: Rule = Rule.D5

    @property
    def complete(self) -> bool:
        """True when ABO, RhD and IAT are all on record."""
        return not self.missing


def blood_profile_reminder(
    infusion_number: int, profile: BloodProfile | None
) -> BloodProfileReminder:
    """D5: before infusion 1, ABO, RhD and IAT should be on record; the IAT facts, always."""
    profile = profile or BloodProfile()
    missing = tuple(
        name
        for name, present in (("ABO", profile.abo), ("RhD", profile.rhd), ("IAT", profile.iat))
        if not present
    )
    lines = [
        "D5: daratumumab makes the indirect antiglobulin test (IAT) falsely positive, in vitro "
        "for up to 5 months; ABO/RhD typing is not affected",
        "D5: the patient carries the wallet card for at least 6 months after treatment ends",
    ]
    if missing and infusion_number == 1:
        lines.insert(0, f"D5: before the first infusion, put on record: {', '.join(missing)}")
    return BloodProfileReminder(missing=missing, lines=tuple(lines))


# ------------------------------------------------------------------------ D6: eligibility


class AsthmaSeverity(StrEnum):
    """The worst asthma within the past 2 years."""

    NONE = "none"
    INTERMITTENT = "intermittent"
    MILD_PERSISTENT = "mild_persistent"
    MODERATE_PERSISTENT = "moderate_persistent"
    SEVERE_PERSISTENT = "severe_persistent"


class LungHistory(BaseModel):
    """D6: the lung facts eligibility depends on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    copd: bool = False
    fev1_pct_predicted: Annotated[float, Field(gt=0, le=200)] | None = None
    asthma_past_2_years: AsthmaSeverity = AsthmaSeverity.NONE

    @property
    def obstructive(self) -> bool:
        """Obstructive lung disease (D4 additions)."""
        return self.copd or self.asthma_past_2_years is not AsthmaSeverity.NONE


@dataclass(frozen=True, slots=True)
class EligibilityDecision:
    """D6: may a course be created? Refusal reasons, and an audited clinician override."""

    allowed: bool
    reasons: tuple[str, ...]
    rule: Rule = Rule.D6
    overridden: bool = False
    override_reason: str | None = None
    notes: tuple[str, ...] = field(default=())

    def audit(self) -> dict[str, object]:
        """The facts the audit event of this decision carries."""
        return {
            "rule": self.rule,
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "overridden": self.overridden,
            "override_reason": self.override_reason,
        }


def eligibility(lung: LungHistory, override_reason: str | None = None) -> EligibilityDecision:
    """D6: COPD with FEV1 < 50 % predicted, or moderate/severe persistent asthma in the past
    2 years, refuses the course unless a clinician overrides with a non-empty reason.

    COPD without an FEV1 on record is refused too (5.3.1: FEV1 testing should be performed).
    """
    reasons: list[str] = []
    if lung.copd and lung.fev1_pct_predicted is None:
        reasons.append("COPD with no FEV1 on record: measure FEV1 (% of predicted)")
    elif lung.copd and lung.fev1_pct_predicted is not None and lung.fev1_pct_predicted < 50:
        reasons.append(f"COPD with FEV1 {lung.fev1_pct_predicted:g} % of predicted (< 50 %)")
    if lung.asthma_past_2_years in (
        AsthmaSeverity.MODERATE_PERSISTENT,
        AsthmaSeverity.SEVERE_PERSISTENT,
    ):
        severity = lung.asthma_past_2_years.value.replace("_", " ")
        reasons.append(f"{severity} asthma within the past 2 years")
    notes = (
        ("D4: obstructive lung disease: see post-medication additions",) if lung.obstructive else ()
    )
    if not reasons:
        return EligibilityDecision(allowed=True, reasons=(), notes=notes)
    if override_reason is not None and override_reason.strip():
        return EligibilityDecision(
            allowed=True,
            reasons=tuple(reasons),
            overridden=True,
            override_reason=override_reason.strip(),
            notes=notes,
        )
    if override_reason is not None:
        reasons.append("an override needs a non-empty reason")
    return EligibilityDecision(allowed=False, reasons=tuple(reasons), notes=notes)
