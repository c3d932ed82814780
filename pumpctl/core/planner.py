"""The planner: which row of Table 3 an infusion uses (L4, L5) and its rate profile (L1-L3, L6).

Pure functions of (protocol, infusion number, course history). Every rate passes the rate-limit
chain (`pumpctl.core.limits.constrain`) and keeps the `RateDecision` saying which rule bound it.

Readings chosen where the rules leave room (the safer one, as clinical-rules.md asks):
- an earlier infusion that did not complete cannot show it was tolerated, so it never grants
  the shorter row (L4, L5);
- a reaction reported after completion (I11) counts for L4 as well as L5;
- once L6 has bound a step, later steps stay at that rate: the L6 cap already spreads the
  remaining volume over the remaining minimum duration, and recomputing it after rounding down
  would only creep up by a few tenths of a ml/h.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pumpctl.core.dose import compute_dose
from pumpctl.core.history import CourseState, InfusionRecord
from pumpctl.core.limits import (
    Limit,
    RateDecision,
    constrain,
    ladder_step,
    min_duration_cap,
    protocol_max,
)
from pumpctl.core.protocol import (
    FirstDosePolicy,
    InfusionRow,
    Protocol,
    RowKind,
    SubsequentRowPolicy,
)
from pumpctl.core.rules import Rule

__all__ = [
    "MissingHistoryError",
    "Plan",
    "PlanStep",
    "PlanningError",
    "RowChoice",
    "RuleApplied",
    "first_window_clean",
    "infusion_clean",
    "initial_decision",
    "is_split_first_dose",
    "next_step",
    "plan",
    "select_row",
    "start_decision",
    "step_decision",
]

_TIME_EPSILON_MIN = 1e-9


class PlanningError(ValueError):
    """A plan that cannot be made: the message names the rule or the argument, `rule` the
    clinical rule that refuses it when one does (else the caller's)."""

    def __init__(self, message: str, *, rule: Rule | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class MissingHistoryError(PlanningError):
    """L4/L5 need the history of earlier infusions and it is not there (L8: enter it)."""


@dataclass(frozen=True, slots=True)
class RuleApplied:
    """One rule that decided something, and why, in words a clinician can check."""

    rule: Rule
    reason: str

    def to_json(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"rule": self.rule, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RowChoice:
    """The row an infusion uses, its bag (L3) and initial rate, and the rules that chose it."""

    kind: RowKind
    bag_ml: float
    initial_rate_ml_h: float
    min_duration_min: int | None
    mg_per_kg: float
    rules: tuple[RuleApplied, ...]
    split_day: int | None = None

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Ids of the rules that chose the row, in order."""
        return tuple(dict.fromkeys(r.rule for r in self.rules))


@dataclass(frozen=True, slots=True)
class PlanStep:
    """From `start_min` of running time, the pump runs at `rate_ml_h`, bound as recorded."""

    start_min: float
    rate_ml_h: float
    decision: RateDecision

    def to_json(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "start_min": self.start_min,
            "rate_ml_h": self.rate_ml_h,
            "bound_by": self.decision.bound_by.rule,
            "why": self.decision.bound_by.reason,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The planned infusion with no reaction: bag (VTBI), steps, running time, dose, rules."""

    protocol: str
    infusion_number: int
    row: RowChoice
    steps: tuple[PlanStep, ...]
    duration_min: float
    dose_mg: float | None
    rules: tuple[str, ...]

    @property
    def bag_ml(self) -> float:
        """L3: the VTBI the pump is programmed with."""
        return self.row.bag_ml

    @property
    def initial_rate_ml_h(self) -> float:
        """The first commanded rate (after the chain)."""
        return self.steps[0].rate_ml_h

    @property
    def split_day(self) -> int | None:
        """Day 1 or 2 of a split first dose, else None."""
        return self.row.split_day


def is_split_first_dose(protocol: Protocol, infusion_number: int) -> bool:
    """True when infusion `infusion_number` is given on two days under this protocol."""
    return (
        infusion_number == 1 and protocol.dose.first_dose_policy is FirstDosePolicy.SPLIT_TWO_DAYS
    )


def _records(
    history: CourseState, number: int, protocol: Protocol, need: str
) -> Sequence[InfusionRecord]:
    records = history.infusion(number)
    if not records:
        raise MissingHistoryError(
            f"{need}: no record of infusion {number} "
            "(L8: enter it, or plan with --assume-no-reactions)"
        )
    if is_split_first_dose(protocol, number) and any(r.day is not None for r in records):
        days = sorted(r.day for r in records if r.day is not None)
        if days != [1, 2]:
            raise MissingHistoryError(
                f"{need}: the split first dose needs both days of infusion 1 recorded "
                f"(found day {', '.join(map(str, days))})"
            )
    return records


def first_window_clean(record: InfusionRecord, window_min: float) -> bool:
    """L4: no reaction (grade >= 1) in the first `window_min` of running time, and completed.

    Reactions reported while paused count at the running time they were reported at; a delayed
    reaction reported after completion (I11) counts too.
    """
    return record.completed and not any(
        r.after_completion or r.running_min <= window_min for r in record.reactions
    )


def infusion_clean(record: InfusionRecord, min_rate_ml_h: float | None = None) -> bool:
    """L5: completed with no reaction at all, and (if given) reached `min_rate_ml_h`."""
    reached = min_rate_ml_h is None or record.highest_rate_ml_h >= min_rate_ml_h
    return record.completed and not record.reactions and reached


def _split_first(protocol: Protocol, split_day: int | None) -> RowChoice:
    split = protocol.split_first_dose
    if split is None:  # the protocol model guarantees it under split_two_days
        raise PlanningError("dose.first_dose_policy: split_two_days without [split_first_dose]")
    day = 1 if split_day is None else split_day
    second = protocol.rows.second
    reason = (
        f"split first dose (protocol variant): day {day} of {split.days} of infusion 1, "
        f"{split.mg_per_kg_per_day:g} mg/kg in {split.bag_ml:g} ml on the second-infusion row"
    )
    return RowChoice(
        kind=RowKind.SECOND,
        bag_ml=split.bag_ml,
        initial_rate_ml_h=second.initial_rate_ml_h,
        min_duration_min=second.min_duration_min,
        mg_per_kg=split.mg_per_kg_per_day,
        rules=(RuleApplied(Rule.D1, reason),),
        split_day=day,
    )


def _choice(protocol: Protocol, kind: RowKind, rules: tuple[RuleApplied, ...]) -> RowChoice:
    row: InfusionRow = protocol.rows.row(kind)
    return RowChoice(
        kind=kind,
        bag_ml=row.bag_ml,
        initial_rate_ml_h=row.initial_rate_ml_h,
        min_duration_min=row.min_duration_min,
        mg_per_kg=protocol.dose.mg_per_kg,
        rules=rules,
    )


def _second_row_allowed(protocol: Protocol, history: CourseState) -> RuleApplied | None:
    """L4: None when infusion 2 may use the second row, else why it repeats the first."""
    window = protocol.history.second_row_window_min
    for record in _records(history, 1, protocol, Rule.L4):
        day = f" (day {record.day})" if record.day is not None else ""
        if not record.completed:
            return RuleApplied(
                Rule.L4, f"infusion 1{day} did not complete: infusion 2 repeats the first row"
            )
        if not first_window_clean(record, window):
            return RuleApplied(
                Rule.L4,
                f"infusion 1{day} had a reaction of grade >= 1 in its first {window} min of "
                "running time (or reported after completion): infusion 2 repeats the first row",
            )
    return None


def _subsequent_row_allowed(
    protocol: Protocol, infusion_number: int, history: CourseState
) -> RuleApplied | None:
    """L5: None when infusion 3+ may use the subsequent row, else why it uses the second."""
    policy = protocol.history.subsequent_row_policy
    if policy is SubsequentRowPolicy.PREVIOUS_CLEAN:
        previous = infusion_number - 1
        for record in _records(history, previous, protocol, Rule.L5):
            if not infusion_clean(record):
                return RuleApplied(
                    Rule.L5,
                    f"infusion {previous} (the previous one) had a reaction or did not complete "
                    "(policy previous_clean): the second-infusion row applies",
                )
        return None
    min_rate = protocol.history.subsequent_min_rate_ml_h
    for number in (1, 2):
        for record in _records(history, number, protocol, Rule.L5):
            if not infusion_clean(record, min_rate):
                return RuleApplied(
                    Rule.L5,
                    f"infusion {number} had a reaction, did not complete, or did not reach "
                    f"{min_rate:g} ml/h (highest {record.highest_rate_ml_h:g} ml/h): "
                    "the second-infusion row applies",
                )
    return None


def select_row(
    protocol: Protocol,
    infusion_number: int,
    history: CourseState,
    *,
    split_day: int | None = None,
) -> RowChoice:
    """The row of Table 3 infusion `infusion_number` uses, by L4 and L5 (and the split variant).

    Raises `PlanningError` for a bad number or day, a withdrawn course (I8), and
    `MissingHistoryError` when L4/L5 need a record that is not in `history`.
    """
    if infusion_number < 1:
        raise PlanningError(f"infusion_number: must be 1 or more, not {infusion_number}")
    if history.withdrawn:
        why = f" ({history.withdrawn_reason})" if history.withdrawn_reason else ""
        raise PlanningError(
            f"I8: the course is withdrawn{why}; no further infusion is planned", rule=Rule.I8
        )
    split = is_split_first_dose(protocol, infusion_number)
    if split_day is not None and not split:
        raise PlanningError(
            "day: only infusion 1 of a split-first-dose protocol is given on two days"
        )
    if split:
        if split_day not in (None, 1, 2):
            raise PlanningError(f"day: must be 1 or 2, not {split_day}")
        return _split_first(protocol, split_day)
    if infusion_number == 1:
        return _choice(
            protocol, RowKind.FIRST, (RuleApplied(Rule.L3, "infusion 1: the first-infusion row"),)
        )
    if infusion_number == 2:
        refusal = _second_row_allowed(protocol, history)
        if refusal is not None:
            return _choice(protocol, RowKind.FIRST, (refusal,))
        window = protocol.history.second_row_window_min
        return _choice(
            protocol,
            RowKind.SECOND,
            (
                RuleApplied(
                    Rule.L4,
                    f"infusion 1 completed with no reaction in its first {window} min of "
                    "running time: the second-infusion row",
                ),
            ),
        )
    refusal = _subsequent_row_allowed(protocol, infusion_number, history)
    if refusal is not None:
        return _choice(protocol, RowKind.SECOND, (refusal,))
    if protocol.history.subsequent_row_policy is SubsequentRowPolicy.PREVIOUS_CLEAN:
        why = f"infusion {infusion_number - 1} had no reaction (policy previous_clean)"
    else:
        why = (
            "infusions 1 and 2 each reached "
            f"{protocol.history.subsequent_min_rate_ml_h:g} ml/h with no reaction"
        )
    rules = [RuleApplied(Rule.L5, f"{why}: the subsequent-infusion row")]
    row = protocol.rows.subsequent
    if row.min_duration_min is not None:
        rules.append(
            RuleApplied(Rule.L6, f"not less than {row.min_duration_min} min of running time")
        )
    return _choice(protocol, RowKind.SUBSEQUENT, tuple(rules))


def start_decision(
    protocol: Protocol,
    initial_rate_ml_h: float,
    *,
    bag_ml: float,
    min_duration_min: int | None,
    reason: str,
) -> RateDecision:
    """The first rate of an infusion: its row's initial rate through the chain (L1, L2, L6).

    The one place the start's chain is built: the planner and the infusion machine both use it.
    """
    return constrain(
        (
            Limit(Rule.L1, initial_rate_ml_h, reason),
            protocol_max(protocol.ladder.max_rate_ml_h),
            min_duration_cap(bag_ml, 0.0, min_duration_min),
        ),
        protocol.ladder.rate_resolution_ml_h,
    )


def initial_decision(protocol: Protocol, row: RowChoice) -> RateDecision:
    """The first rate: the row's initial rate through the chain (L1 start, L2, L6)."""
    return start_decision(
        protocol,
        row.initial_rate_ml_h,
        bag_ml=row.bag_ml,
        min_duration_min=row.min_duration_min,
        reason=f"initial rate of the {row.kind}-infusion row (Table 3)",
    )


def step_decision(
    protocol: Protocol,
    current_ml_h: float,
    *,
    remaining_ml: float,
    running_min: float,
    min_duration_min: int | None,
) -> RateDecision:
    """L1/L2/L6: the rate a due step gives: min(one increment, maximum, L6 cap), rounded down.

    The one place the step's chain is built: `next_step` (the plan) and the infusion machine
    (a step falling due in clinical time) both use it; each decides on its own whether to stay.
    """
    return constrain(
        (
            ladder_step(current_ml_h, protocol.ladder.increment_ml_h),
            protocol_max(protocol.ladder.max_rate_ml_h),
            min_duration_cap(remaining_ml, running_min, min_duration_min),
        ),
        protocol.ladder.rate_resolution_ml_h,
    )


def next_step(
    protocol: Protocol,
    row: RowChoice,
    current: RateDecision,
    *,
    running_min: float,
    delivered_ml: float,
) -> RateDecision | None:
    """L1 step due after a full tolerated interval: the new decision, or None to stay.

    The rate is `step_decision`'s; None when it would not rise (at the maximum) or when L6
    bound the current rate (later steps stay there).
    """
    if current.bound_by.rule == Rule.L6:
        return None
    decision = step_decision(
        protocol,
        current.rate_ml_h,
        remaining_ml=row.bag_ml - delivered_ml,
        running_min=running_min,
        min_duration_min=row.min_duration_min,
    )
    if decision.rate_ml_h <= current.rate_ml_h:
        return None
    return decision


def _profile(protocol: Protocol, row: RowChoice) -> tuple[tuple[PlanStep, ...], float]:
    interval = protocol.ladder.interval_min
    decision = initial_decision(protocol, row)
    steps = [PlanStep(0.0, decision.rate_ml_h, decision)]
    start, delivered = 0.0, 0.0
    while True:
        rate = steps[-1].rate_ml_h
        remaining = row.bag_ml - delivered
        finish = start + remaining / rate * 60
        due = start + interval
        if finish <= due + _TIME_EPSILON_MIN:
            return tuple(steps), finish
        delivered += rate * (due - start) / 60
        start = due
        following = next_step(protocol, row, decision, running_min=start, delivered_ml=delivered)
        if following is None:
            # The rate is final: the bag runs out at it (no further step changes anything).
            return tuple(steps), start + (row.bag_ml - delivered) / rate * 60
        decision = following
        steps.append(PlanStep(start, decision.rate_ml_h, decision))


def plan(
    protocol: Protocol,
    infusion_number: int,
    history: CourseState,
    *,
    weight_kg: float | None = None,
    split_day: int | None = None,
) -> Plan:
    """Plan infusion `infusion_number` with no reaction: row (L4, L5), steps (L1, L2, L6), dose.

    `duration_min` is the running time to deliver the bag at the planned steps (unrounded).
    """
    row = select_row(protocol, infusion_number, history, split_day=split_day)
    steps, duration = _profile(protocol, row)
    dose_mg = None
    if weight_kg is not None:
        dose = compute_dose(protocol, weight_kg, mg_per_kg=row.mg_per_kg, bag_ml=row.bag_ml)
        dose_mg = dose.dose_mg
    rules = [*row.rule_ids, Rule.L3]
    for step in steps:
        rules.extend(step.decision.rules)
    if weight_kg is not None:
        rules.append(Rule.D1)
    return Plan(
        protocol=protocol.name,
        infusion_number=infusion_number,
        row=row,
        steps=steps,
        duration_min=duration,
        dose_mg=dose_mg,
        rules=tuple(dict.fromkeys(rules)),
    )
