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
from pumpctl.core.machine.context import EPSILON_MIN, Ctx, Refused, command_rate, tolerance
from pumpctl.core.machine.events import Hold, Release, Start
from pumpctl.core.machine.outputs import SetVtbi
from pumpctl.core.machine.state import InfusionPhase
from pumpctl.core.planner import start_decision, step_decision


def on_start(ctx: Ctx, event: Start, now: datetime) -> None:
    """L3: VTBI = bag, then the initial rate, then run."""
    s = ctx.state
    if s.phase is not InfusionPhase.PLANNED:
        raise Refused("L3", f"the infusion is already {s.phase.value}")
    if s.course.withdrawn:
        raise Refused("I8", "the patient's course is withdrawn")
    if s.bag_expired:
        raise Refused("L9", "the bag is past its stability: prepare a new bag")
    decision = start_decision(
        s.protocol,
        s.initial_rate_ml_h,
        bag_ml=s.bag_volume_ml,
        min_duration_min=s.min_duration_min,
        reason=f"initial rate of the row {s.initial_rate_ml_h:g}",
    )
    ctx.emit(SetVtbi(s.bag_volume_ml))
    command_rate(ctx, decision, run=True)
    ctx.set(phase=InfusionPhase.STARTING, started_at=now)
    ctx.log(
        "started",
        "L3",
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
    decision = step_decision(
        s.protocol,
        s.rate_ml_h,
        remaining_ml=s.remaining_ml,
        running_min=s.running_min,
        min_duration_min=s.min_duration_min,
    )
    settled = decision.bound_by.rule == "L6"
    if abs(decision.rate_ml_h - s.rate_ml_h) <= tolerance(s):
        ctx.set(ladder_settled=True, at_rate_min=0.0)
        ctx.log("ladder_settled", decision.bound_by.rule, at, decision=decision.to_json())
        return
    command_rate(ctx, decision)
    ctx.set(ladder_settled=settled)
    ctx.log(
        "rate_step",
        decision.bound_by.rule,
        at,
        from_ml_h=s.rate_ml_h,
        to_ml_h=decision.rate_ml_h,
        running_min=s.running_min,
        decision=decision.to_json(),
    )


def continue_same_rate(ctx: Ctx, rule: str, reason: str) -> None:
    """A1/L9: run again at the current step (L6 recomputed; never above the step)."""
    s = ctx.state
    ladder = s.protocol.ladder
    decision = constrain(
        [
            Limit(rule, s.rate_ml_h, reason),
            protocol_max(ladder.max_rate_ml_h),
            min_duration_cap(s.remaining_ml, s.running_min, s.min_duration_min),
        ],
        ladder.rate_resolution_ml_h,
    )
    # A pause not caused by a reaction keeps the time already run at this rate (L1).
    at_rate = s.at_rate_min
    command_rate(ctx, decision, run=True)
    if abs(decision.rate_ml_h - s.rate_ml_h) <= tolerance(s):
        ctx.set(at_rate_min=at_rate)


def on_hold(ctx: Ctx, event: Hold | Release, now: datetime) -> None:
    """L7: hold escalation, or release it (a full interval from the release)."""
    s = ctx.state
    if isinstance(event, Hold):
        if s.held:
            raise Refused("L7", "escalation is already held")
        ctx.set(held=True)
        ctx.log("hold", "L7", now, actor=event.actor, rate_ml_h=s.rate_ml_h)
        return
    if not s.held:
        raise Refused("L7", "escalation is not held")
    ctx.set(held=False, at_rate_min=0.0)
    ctx.log("release", "L7", now, actor=event.actor, rate_ml_h=s.rate_ml_h)
