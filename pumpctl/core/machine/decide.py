"""`decide(state, event, now)`: the dispatch, catching up with deadlines, and after the end.

Running time (the table at the top of docs/clinical-rules.md) counts only while the pump is
confirmed infusing in phase `running` with no pump alarm (A1), the link up (A2) and the bag in
date (L9); a pending command (A3) or a hold (L7) do not stop it. The L1 interval counter
(`at_rate_min`) counts the same time, but only once the pump has confirmed the current rate
(A3), and is kept across alarms and link losses (A1) and zeroed by a resume after a reaction
(I2) or a release (L7). A refused event changes nothing but what the passing of time alone
would have changed, and its audit event names the rule.
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.history import ReactionRecord
from pumpctl.core.machine.bag import on_bag_replaced
from pumpctl.core.machine.context import Ctx, Refused, pump_may_run, stop_pump
from pumpctl.core.machine.deadlines import Deadline, DeadlineKind, deadlines
from pumpctl.core.machine.events import (
    BagReplaced,
    Event,
    Hold,
    LinkLost,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    ReactionReported,
    Reassessed,
    Release,
    Resolved,
    Restarted,
    ResumeRequested,
    Start,
    Stop,
    TimePassed,
)
from pumpctl.core.machine.ladder import escalate, on_hold, on_start
from pumpctl.core.machine.outputs import Decision, MachineAlarm
from pumpctl.core.machine.pump import (
    on_completed,
    on_pump_flags,
    on_reconnected,
    on_running,
    on_stopped,
)
from pumpctl.core.machine.reactions import (
    close_reaction,
    late_withdrawal_check,
    on_reaction,
    on_reassessed,
    on_resolved,
    on_resume,
    withdraw,
)
from pumpctl.core.machine.state import InfusionPhase, InfusionState

_MAX_DEADLINES_PER_CALL = 10_000  # guard: deadlines always move forward or disappear


def decide(state: InfusionState, event: Event, now: datetime) -> Decision:
    """Apply `event` at clinical time `now`: the new state, pump commands and audit events."""
    _aware_now(now)
    if state.last_event_at is not None and now < state.last_event_at:
        raise ValueError(
            f"now: {now.isoformat()} is before the last event {state.last_event_at.isoformat()}"
        )
    # I1: a reaction reported when a step falls due (or a late driver left one unprocessed)
    # stops the pump; the step is not taken first, so no rise goes out with the stop.
    reaction = isinstance(event, ReactionReported) and not state.terminal
    ctx = _caught_up(state, event, now, escalate=not reaction)
    try:
        _handle(ctx, event, now)
    except Refused as refusal:
        # Only what time alone changed (deadlines up to `now`) survives a refusal.
        ctx = _caught_up(state, event, now, escalate=True)
        ctx.log("refused", refusal.rule, now, event=event.kind, reason=refusal.reason)
        return ctx.decision()
    _catch_up(ctx, now)
    return ctx.decision()


def _caught_up(state: InfusionState, event: Event, now: datetime, *, escalate: bool) -> Ctx:
    """A context holding `state` with every deadline up to `now` processed, before `event`."""
    ctx = Ctx(state)
    if isinstance(event, Restarted) and not state.terminal:
        # A4: what happened while the controller was down is unknown: no running time for it.
        ctx.set(link_lost=True)
    _catch_up(ctx, now, escalate=escalate)
    return ctx


def _aware_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now: must be timezone-aware, got {now!r}")


def _catch_up(ctx: Ctx, now: datetime, *, escalate: bool = True) -> None:
    """Process every deadline up to `now` at its own instant, then account time up to `now`.

    With `escalate` False, L1 steps are left unprocessed (the caller is about to stop the pump).
    """
    for _ in range(_MAX_DEADLINES_PER_CALL):
        due = next(
            (d for d in deadlines(ctx.state) if escalate or d.kind is not DeadlineKind.ESCALATION),
            None,
        )
        if due is None or due.at > now:
            break
        _advance(ctx, due.at)
        _fire(ctx, due)
    else:  # pragma: no cover - a deadline that does not move is a bug, never a silent loop
        raise RuntimeError("machine: deadlines did not move forward")
    _advance(ctx, now)


def _advance(ctx: Ctx, to: datetime) -> None:
    """Account running time, the L1 interval and the estimated volume up to `to`."""
    s = ctx.state
    if s.last_event_at is not None and to <= s.last_event_at:
        return  # a deadline already behind us (an onset or a bag entered late): time stays
    if s.last_event_at is None or s.terminal:
        ctx.set(last_event_at=to)
        return
    minutes = (to - s.last_event_at).total_seconds() / 60
    if not s.counting:
        ctx.set(last_event_at=to)
        return
    infused = min(s.bag_volume_ml, s.bag_infused_ml + s.pump_rate_ml_h * minutes / 60)
    ctx.set(
        last_event_at=to,
        running_min=s.running_min + minutes,
        at_rate_min=s.at_rate_min + minutes if s.pending is None else s.at_rate_min,
        bag_infused_ml=infused,
    )


def _fire(ctx: Ctx, due: Deadline) -> None:
    s = ctx.state
    at = due.at
    if due.kind is DeadlineKind.ESCALATION:
        escalate(ctx, at)
    elif due.kind is DeadlineKind.OBSERVATION_END:
        assert s.reaction is not None
        if s.reaction.grade >= s.protocol.reactions.severe_grade:
            withdraw(ctx, "I5", f"grade {s.reaction.grade} at the end of the 2 h window", at)
        else:
            ctx.set(
                reaction=s.reaction.model_copy(update={"observation_closed": True}),
                phase=InfusionPhase.PAUSED,
            )
            ctx.log("observation_ended", "I5", at, grade=s.reaction.grade, resume_allowed=True)
    elif due.kind is DeadlineKind.BRONCHOSPASM_LIMIT:
        withdraw(ctx, "I4", "bronchospasm not resolved within 6 h of onset", at)
    elif due.kind is DeadlineKind.BAG_WARNING:
        ctx.set(bag_warned=True)
        left = s.bag_life.status(at).minutes_left
        ctx.alarm(
            MachineAlarm.BAG_EXPIRING,
            f"the bag expires in {left:g} min: prepare a new bag",
            "L9",
            at,
        )
    else:
        ctx.set(bag_expired=True, bag_warned=True)
        if pump_may_run(s):
            stop_pump(ctx)
        hours = s.bag_life.stability_min / 60
        ctx.alarm(
            MachineAlarm.BAG_EXPIRED,
            f"the bag is past its {hours:g} h stability: pump stopped, a new bag is needed",
            "L9",
            at,
        )


def _handle(ctx: Ctx, event: Event, now: datetime) -> None:
    s = ctx.state
    if s.terminal:
        _handle_terminal(ctx, event, now)
        return
    match event:
        case TimePassed():
            return
        case Start():
            on_start(ctx, event, now)
        case PumpConfirmedRunning():
            on_running(ctx, event.rate_ml_h, event.volume_infused_ml, now)
        case PumpConfirmedStopped():
            on_stopped(ctx, event.volume_infused_ml, now)
        case PumpCompleted():
            on_completed(ctx, event, now)
        case ReactionReported():
            on_reaction(ctx, event, now)
        case Reassessed():
            on_reassessed(ctx, event, now)
        case Resolved():
            on_resolved(ctx, event, now)
        case ResumeRequested():
            on_resume(ctx, event, now)
        case Hold() | Release():
            on_hold(ctx, event, now)
        case PumpAlarmRaised() | PumpAlarmCleared() | LinkLost():
            on_pump_flags(ctx, event, now)
        case LinkRestored() | Restarted():
            on_reconnected(ctx, event, now)
        case BagReplaced():
            on_bag_replaced(ctx, event, now)
        case Stop():
            if pump_may_run(s) or s.phase is not InfusionPhase.PLANNED:
                stop_pump(ctx)
            close_reaction(ctx)
            ctx.set(phase=InfusionPhase.STOPPED, stop_reason=event.reason)
            ctx.log("stopped", None, now, actor=event.actor, reason=event.reason)


def _handle_terminal(ctx: Ctx, event: Event, now: datetime) -> None:
    """Completed, withdrawn, stopped: record late reactions (I11); keep the pump stopped."""
    s = ctx.state
    match event:
        case ReactionReported():
            if event.onset_at is not None and event.onset_at > now:
                raise Refused("I10", "onset_at is after the report")
            record = ReactionRecord(
                grade=event.grade,
                max_grade=event.grade,
                signs=event.signs,
                rate_ml_h=0.0,
                running_min=s.running_min,
                infusion_number=s.infusion_number,
                after_completion=s.phase is InfusionPhase.COMPLETED,
                onset_at=event.onset_at or now,
            )
            ctx.set(reactions=(*s.reactions, record))
            ctx.log(
                "reaction", "I11", now, actor=event.actor, reaction=record.model_dump(mode="json")
            )
            late_withdrawal_check(ctx, record, now)
        case Reassessed():
            if not s.reactions or not s.reactions[-1].after_completion:
                raise Refused("I11", "no reaction reported after completion to reassess")
            last = s.reactions[-1]
            record = last.model_copy(
                update={
                    "grade": event.grade,
                    "max_grade": max(last.max_grade, event.grade),
                    "signs": last.signs | event.signs,
                }
            )
            ctx.set(reactions=(*s.reactions[:-1], record))
            ctx.log(
                "reassessed", "I11", now, actor=event.actor, reaction=record.model_dump(mode="json")
            )
            late_withdrawal_check(ctx, record, now)
        case PumpConfirmedRunning() | LinkRestored() | Restarted():
            running = not isinstance(event, LinkRestored | Restarted) or event.running
            pending_stop = s.pending is not None and s.pending.kind == "stop"
            if running and not pending_stop:
                # Safety over silence: a pump infusing after the end is stopped and alarmed.
                stop_pump(ctx)
                ctx.alarm(
                    MachineAlarm.PUMP_NOT_STOPPED,
                    f"pump running after the infusion ended ({s.phase.value}): clamp the line",
                    "A3",
                    now,
                )
            elif not running:
                ctx.set(pending=None)
        case PumpConfirmedStopped():
            ctx.set(pending=None)
        case TimePassed() | PumpCompleted() | PumpAlarmRaised() | PumpAlarmCleared() | LinkLost():
            return
        case _:
            rule = {
                InfusionPhase.WITHDRAWN: "I8",
                InfusionPhase.COMPLETED: "L3",
                InfusionPhase.STOPPED: "I9",
            }[s.phase]
            raise Refused(rule, f"the infusion is {s.phase.value}")
