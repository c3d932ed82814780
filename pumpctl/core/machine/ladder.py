"""The rate ladder: start (L3), the step after each full interval (L1, L2, L6), hold (L7).

Every rate passes `pumpctl.core.limits.constrain`; the `RateDecision` goes with the command and
into the audit event. `continue_same_rate` runs the pump again at the current step after a
pump alarm or a new bag (A1, L9): never above the step, L6 computed again.
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.limits import (
    Limit,
    constrain,
    min_duration_cap,
    protocol_max,
)
from pumpctl.core.machine.context import EPSILON_MIN, Ctx, Forbidden, command_rate, send, tolerance
from pumpctl.core.machine.events import Hold, Release, Start
from pumpctl.core.machine.outputs import AuditType, ClearVolume, SetVtbi
from pumpctl.core.machine.state import CommandOp, InfusionPhase
from pumpctl.core.planner import (
    MissingHistoryError,
    PlanningError,
    select_row,
    start_decision,
    step_decision,
)
from pumpctl.core.rules import Rule


def on_start(ctx: Ctx, event: Start, now: datetime) -> None:
    """L3: VTBI = bag, then the initial rate, then run; the course is read again (I8, L4-L6)."""
    s = ctx.state
    if s.phase is not InfusionPhase.PLANNED:
        raise Forbidden(Rule.L3, f"the infusion is already {s.phase.value}")
    if event.course.withdrawn:
        raise Forbidden(Rule.I8, "the patient's course is withdrawn")
    if s.bag_expired:
        raise Forbidden(Rule.L9, "the bag is past its stability: prepare a new bag")
    try:
        row = select_row(s.protocol, s.infusion_number, event.course, split_day=s.day)
    except MissingHistoryError as error:
        raise Forbidden(Rule.L8, str(error)) from None
    except PlanningError as error:
        raise Forbidden(Rule.I8, str(error)) from None
    planned = (s.bag_ml, s.initial_rate_ml_h, s.min_duration_min)
    if (row.bag_ml, row.initial_rate_ml_h, row.min_duration_min) != planned:
        raise Forbidden(
            row.rules[0].rule,
            f"the course's history now gives the {row.kind}-infusion row "
            f"({row.bag_ml:g} ml at {row.initial_rate_ml_h:g} ml/h): plan the infusion again",
        )
    decision = start_decision(
        s.protocol,
        s.initial_rate_ml_h,
        bag_ml=s.bag_volume_ml,
        min_duration_min=s.min_duration_min,
        reason=f"initial rate of the row {s.initial_rate_ml_h:g}",
    )
    ctx.set(course=event.course, vtbi_programmed_ml=None, volume_read_ml=None)
    volume = s.bag_volume_ml
    # L3: the pump's volume counter still holds the last infusion given on it; it is cleared
    # first, so that volume never counts toward this one (the baseline resets at its fate).
    send(ctx, ClearVolume)
    send(ctx, lambda i: SetVtbi(i, volume))
    command_rate(ctx, decision, run=True)
    ctx.set(phase=InfusionPhase.STARTING, started_at=now, period_started_at=now)
    ctx.log(
        AuditType.STARTED,
        Rule.L3,
        now,
        actor=event.actor,
        vtbi_ml=s.bag_volume_ml,
        rate_ml_h=decision.rate_ml_h,
        decision=decision.to_json(),
    )


def escalate(ctx: Ctx, at: datetime) -> None:
    """L1/L2/L6: the step due after one full interval at the current rate."""
    s = ctx.state
    ladder = s.protocol.ladder
    if s.at_rate_min < ladder.interval_min - EPSILON_MIN:  # pragma: no cover - guarded
        raise RuntimeError("machine: escalation fired before its interval")
    if s.remaining_ml <= 0:
        ctx.set(ladder_settled=True)
        return
    try:
        decision = step_decision(
            s.protocol,
            s.rate_ml_h,
            remaining_ml=s.remaining_ml,
            running_min=s.running_min,
            min_duration_min=s.min_duration_min,
        )
    except ValueError:
        # L6 leaves no positive rate (next to nothing left to give): stay at the current step.
        ctx.set(ladder_settled=True, at_rate_min=0.0)
        ctx.log(AuditType.LADDER_SETTLED, Rule.L6, at, remaining_ml=s.remaining_ml)
        return
    settled = decision.bound_by.rule is Rule.L6
    if abs(decision.rate_ml_h - s.rate_ml_h) <= tolerance(s):
        ctx.set(ladder_settled=True, at_rate_min=0.0)
        ctx.log(AuditType.LADDER_SETTLED, decision.bound_by.rule, at, decision=decision.to_json())
        return
    command_rate(ctx, decision)
    ctx.set(ladder_settled=settled)
    ctx.log(
        AuditType.RATE_STEP,
        decision.bound_by.rule,
        at,
        from_ml_h=s.rate_ml_h,
        to_ml_h=decision.rate_ml_h,
        running_min=s.running_min,
        decision=decision.to_json(),
    )


def continue_same_rate(ctx: Ctx, rule: Rule, reason: str) -> None:
    """A1/L9: run again at the current step (L6 recomputed; never above the step).

    A pump that lost its program (a power reset) gets its VTBI again first (L3).
    """
    reprogram_vtbi(ctx)
    s = ctx.state
    ladder = s.protocol.ladder
    try:
        decision = constrain(
            [
                Limit(rule, s.rate_ml_h, reason),
                protocol_max(ladder.max_rate_ml_h),
                min_duration_cap(s.remaining_ml, s.running_min, s.min_duration_min),
            ],
            ladder.rate_resolution_ml_h,
        )
    except ValueError as error:
        raise Forbidden(Rule.L6, f"no rate is left to run at ({error})") from None
    # A pause not caused by a reaction keeps the time already run at this rate (L1).
    at_rate = s.at_rate_min
    command_rate(ctx, decision, run=True)
    if abs(decision.rate_ml_h - s.rate_ml_h) <= tolerance(s):
        ctx.set(at_rate_min=at_rate)


def reprogram_vtbi(ctx: Ctx) -> None:
    """L3: a pump that lost its program (a power reset) gets its VTBI before it runs again."""
    s = ctx.state
    vtbi_sent = any(c.op is CommandOp.SET_VTBI for c in s.outstanding)
    if s.vtbi_programmed_ml is None and not vtbi_sent and s.phase is not InfusionPhase.PLANNED:
        volume = s.bag_volume_ml
        send(ctx, lambda i: SetVtbi(i, volume))


def on_hold(ctx: Ctx, event: Hold | Release, now: datetime) -> None:
    """L7: hold escalation, or release it (a full interval from the release)."""
    s = ctx.state
    if isinstance(event, Hold):
        if s.held:
            raise Forbidden(Rule.L7, "escalation is already held")
        ctx.set(held=True)
        ctx.log(AuditType.HOLD, Rule.L7, now, actor=event.actor, rate_ml_h=s.rate_ml_h)
        return
    if not s.held:
        raise Forbidden(Rule.L7, "escalation is not held")
    ctx.set(held=False, at_rate_min=0.0)
    ctx.log(AuditType.RELEASE, Rule.L7, now, actor=event.actor, rate_ml_h=s.rate_ml_h)
