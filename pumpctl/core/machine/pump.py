"""Pump facts: read-backs (A3), pump alarms (A1), the link (A2), restarts (A4), completion (L3).

The machine never starts or speeds up a pump because a fact arrived: a pump found faster than
its step is set back down, one found slower or stopped is an alarm left for a nurse.
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.limits import (
    Limit,
    constrain,
    protocol_max,
)
from pumpctl.core.machine.context import (
    Ctx,
    seen_running,
    should_be_stopped,
    stop_pump,
    take_volume,
    tolerance,
)
from pumpctl.core.machine.events import (
    LinkLost,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    Restarted,
)
from pumpctl.core.machine.outputs import MachineAlarm, SetRate
from pumpctl.core.machine.state import InfusionPhase, PendingCommand


def on_pump_flags(
    ctx: Ctx, event: PumpAlarmRaised | PumpAlarmCleared | LinkLost, now: datetime
) -> None:
    """A1: pump alarms in force; A2: the link lost (both suspend escalation and running time)."""
    s = ctx.state
    if isinstance(event, PumpAlarmRaised):
        if event.alarm not in s.alarms:
            ctx.set(alarms=s.alarms | {event.alarm})
            ctx.log("pump_alarm", "A1", now, alarm=event.alarm, running_min=s.running_min)
    elif isinstance(event, PumpAlarmCleared):
        if event.alarm in s.alarms:
            ctx.set(alarms=s.alarms - {event.alarm})
            ctx.log("pump_alarm_cleared", "A1", now, alarm=event.alarm)
    elif not s.link_lost:
        ctx.set(link_lost=True)
        ctx.alarm(MachineAlarm.COMM_LOSS, "no valid status from the pump", "A2", now)


def on_running(ctx: Ctx, rate: float, volume: float, now: datetime) -> None:
    """A3: a read-back of the pump running; confirm, or find it too fast or too slow (A2)."""
    take_volume(ctx, volume)
    s = ctx.state
    tol = tolerance(s)
    if should_be_stopped(s):
        if s.pending is not None and s.pending.kind == "stop":
            # The stop is still on its way; the ledger's timeout raises A3 if it never lands.
            seen_running(ctx, rate)
            return
        seen_running(ctx, rate)
        stop_pump(ctx)
        ctx.alarm(
            MachineAlarm.PUMP_NOT_STOPPED,
            f"pump running at {rate:g} ml/h while it must be stopped: clamp the line",
            "A3",
            now,
        )
        return
    expected = s.rate_ml_h
    was = s.pump_rate_ml_h if s.pump_running else 0.0
    ceiling = max(expected, was) if s.pending is not None else expected
    if s.pending is not None and s.pending.kind == "run" and abs(rate - expected) <= tol:
        seen_running(
            ctx,
            rate,
            pending=None,
            highest_rate_ml_h=max(s.highest_rate_ml_h, rate),
            phase=InfusionPhase.RUNNING,
        )
        ctx.log("confirmed_running", "A3", now, rate_ml_h=rate, volume_infused_ml=volume)
    elif abs(rate - expected) <= tol:
        seen_running(
            ctx,
            rate,
            highest_rate_ml_h=max(s.highest_rate_ml_h, rate),
        )
    elif rate > ceiling + tol:
        seen_running(ctx, rate)
        _set_back_down(ctx, rate, now)
    elif s.pending is not None:
        seen_running(ctx, rate)
    else:
        seen_running(
            ctx,
            rate,
            pending=PendingCommand(kind="run", rate_ml_h=expected),
        )
        ctx.alarm(
            MachineAlarm.RATE_LOWER,
            f"pump at {rate:g} ml/h, {expected:g} ml/h expected: left as is until a nurse acts",
            "A2",
            now,
        )


def _set_back_down(ctx: Ctx, found: float, now: datetime) -> None:
    """A2: a pump running faster than expected is an alarm and is set back down."""
    s = ctx.state
    decision = constrain(
        [
            Limit("A2", s.rate_ml_h, f"the current step {s.rate_ml_h:g} ml/h"),
            protocol_max(s.protocol.ladder.max_rate_ml_h),
        ],
        s.protocol.ladder.rate_resolution_ml_h,
    )
    ctx.emit(SetRate(decision.rate_ml_h, decision))
    ctx.set(pending=PendingCommand(kind="run", rate_ml_h=decision.rate_ml_h))
    ctx.alarm(
        MachineAlarm.RATE_TOO_HIGH,
        f"pump at {found:g} ml/h, faster than {s.rate_ml_h:g} ml/h: set back down",
        "A2",
        now,
    )


def on_stopped(ctx: Ctx, volume: float, now: datetime) -> None:
    """A3: a read-back of the pump stopped."""
    take_volume(ctx, volume)
    s = ctx.state
    if s.pending is not None and s.pending.kind == "stop":
        ctx.set(pending=None, pump_running=False, pump_rate_ml_h=0.0)
        ctx.log("confirmed_stopped", "A3", now, volume_infused_ml=volume)
        return
    if s.pending is not None and not s.pump_running:
        return  # a run on its way: the pump has not started yet
    was_running = s.pump_running
    ctx.set(pump_running=False, pump_rate_ml_h=0.0)
    if was_running and not should_be_stopped(s) and not s.alarms:
        ctx.alarm(
            MachineAlarm.PUMP_STOPPED,
            "the pump stopped on its own: left stopped until a nurse resumes",
            "A1",
            now,
        )


def on_completed(ctx: Ctx, event: PumpCompleted, now: datetime) -> None:
    """L3: complete when the pump reports the VTBI delivered."""
    s = ctx.state
    if s.phase not in {InfusionPhase.RUNNING, InfusionPhase.STARTING}:
        ctx.alarm(
            MachineAlarm.PUMP_INCONSISTENT,
            f"the pump reported the VTBI delivered while the infusion is {s.phase.value}",
            "L3",
            now,
        )
        return
    take_volume(ctx, event.volume_infused_ml)
    ctx.set(phase=InfusionPhase.COMPLETED, pending=None, pump_running=False, pump_rate_ml_h=0.0)
    s = ctx.state
    ctx.log(
        "completed",
        "L3",
        now,
        running_min=s.running_min,
        delivered_ml=s.delivered_ml,
        highest_rate_ml_h=s.highest_rate_ml_h,
    )


def on_reconnected(ctx: Ctx, event: LinkRestored | Restarted, now: datetime) -> None:
    """A2/A4: read the pump's real state; never start or speed up because the link came back."""
    rule = "A4" if isinstance(event, Restarted) else "A2"
    ctx.set(link_lost=False)
    ctx.log(
        "restarted" if rule == "A4" else "link_restored",
        rule,
        now,
        running=event.running,
        rate_ml_h=event.rate_ml_h,
        volume_infused_ml=event.volume_infused_ml,
    )
    take_volume(ctx, event.volume_infused_ml)
    s = ctx.state
    if not event.running:
        if s.pending is not None and s.pending.kind == "stop":
            ctx.set(pending=None, pump_running=False, pump_rate_ml_h=0.0)
            return
        ctx.set(pump_running=False, pump_rate_ml_h=0.0, pending=None)
        if not should_be_stopped(s):
            ctx.alarm(
                MachineAlarm.PUMP_STOPPED,
                f"pump found stopped ({rule}): left stopped until a nurse resumes",
                rule,
                now,
            )
        return
    tol = tolerance(s)
    if should_be_stopped(s):
        seen_running(ctx, event.rate_ml_h)
        stop_pump(ctx)
        ctx.alarm(
            MachineAlarm.PUMP_NOT_STOPPED,
            f"pump found running at {event.rate_ml_h:g} ml/h while it must be stopped",
            "A3",
            now,
        )
        return
    expected = s.rate_ml_h
    seen_running(ctx, event.rate_ml_h)
    if abs(event.rate_ml_h - expected) <= tol:
        ctx.set(
            pending=None,
            phase=InfusionPhase.RUNNING,
            highest_rate_ml_h=max(s.highest_rate_ml_h, event.rate_ml_h),
        )
    elif event.rate_ml_h > expected:
        _set_back_down(ctx, event.rate_ml_h, now)
    else:
        ctx.set(pending=PendingCommand(kind="run", rate_ml_h=expected))
        ctx.alarm(
            MachineAlarm.RATE_LOWER,
            f"pump found at {event.rate_ml_h:g} ml/h, {expected:g} ml/h expected: "
            "left as is until a nurse acts",
            rule,
            now,
        )
