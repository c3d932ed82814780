"""`decide(state, event, now)`: the entry check, the dispatch, and catching up with deadlines.

`decide` is total: every event in every state at any time gives a `Decision`. An event is
either acted on, or refused in one of two ways (the Clarifications, "All"): invalid input
naming the field (the service answers 422), or forbidden by a rule naming the rule (409). A
refused event changes nothing but what the passing of time alone would have changed. A state
the core cannot safely continue from (a fault of the core itself) stops the pump and raises the
`core_fault` alarm, which only a clinician clears; `decide` never raises.

Running time (the table at the top of docs/clinical-rules.md) counts only while the pump is
read back infusing in phase `running` with no pump alarm (A1), the link up (A2) and the bag in
date (L9); an outstanding command (A3) or a hold (L7) do not stop it. The L1 interval counter
(`at_rate_min`) counts the same time, but only once every command's fate is known (A3); it is
kept across pump alarms (A1) and zeroed by a resume after a reaction (I2), a release (L7) or
a nurse's clear of communication loss (A2: escalation waits for that clear, then a full
interval). The over-infusion bound grows over all clinical time (volumes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pumpctl.core.machine.alarms import MachineAlarm
from pumpctl.core.machine.bag import on_bag_replaced
from pumpctl.core.machine.context import BadField, Ctx, Forbidden, pump_may_run, stop_pump
from pumpctl.core.machine.deadlines import Deadline, DeadlineKind, deadlines
from pumpctl.core.machine.events import (
    AcknowledgeAlarm,
    BagReplaced,
    ClearAlarm,
    CommandConfirmed,
    CommandDenied,
    CommandUnconfirmed,
    Event,
    Hold,
    InvalidEvent,
    LinkLost,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    PumpPowerReset,
    ReactionReported,
    Reassessed,
    Release,
    Resolved,
    Restarted,
    ResumeRequested,
    SafetyEnvelopeTripped,
    Start,
    Stop,
    TimePassed,
    parse_event,
)
from pumpctl.core.machine.ladder import escalate, on_hold, on_start
from pumpctl.core.machine.outputs import (
    AuditEvent,
    AuditType,
    Decision,
    RaiseAlarm,
    Refusal,
    StopPump,
)
from pumpctl.core.machine.pump import (
    on_acknowledge_alarm,
    on_clear_alarm,
    on_completed,
    on_confirmed,
    on_envelope,
    on_failed,
    on_link_lost,
    on_power_reset,
    on_pump_alarm,
    on_reconnected,
    on_status,
)
from pumpctl.core.machine.reactions import (
    close_reaction,
    on_reaction,
    on_reassessed,
    on_resolved,
    on_resume,
    on_terminal_reaction,
    on_terminal_reassessed,
    withdraw,
)
from pumpctl.core.machine.state import EARLIEST, LATEST, InfusionPhase, InfusionState
from pumpctl.core.machine.volumes import accrue
from pumpctl.core.rules import Rule

__all__ = ["decide"]

_MAX_DEADLINES_PER_CALL = 10_000  # guard: deadlines always move forward or disappear


def decide(state: InfusionState, event: Event | Mapping[str, object], now: datetime) -> Decision:
    """Apply `event` at clinical time `now`: the new state, pump commands and audit events."""
    try:
        return _decide(state, event, now)
    except Exception as error:  # noqa: BLE001 - the last line of defence: never raise, stop safely
        # A fate is the answer to a stop already sent: stopping again would answer it forever.
        fate = getattr(event, "kind", None) in _FATE_KINDS or (
            isinstance(event, Mapping) and event.get("kind") in _FATE_KINDS
        )
        return _core_fault(state, error, now, stop_again=not fate)


_FATE_KINDS = frozenset({"command_confirmed", "command_denied", "command_unconfirmed"})

#: The rule each kind of event serves: what an audit row of its refusal names when the refusal
#: itself names none (invalid input; docs/clinical-rules.md, Clarifications "All").
EVENT_RULES: Mapping[str, Rule] = {
    "start": Rule.L3,
    "reaction": Rule.I1,
    "reassessed": Rule.I5,
    "resolved": Rule.I4,
    "resume": Rule.I9,
    "hold": Rule.L7,
    "release": Rule.L7,
    "bag_replaced": Rule.L9,
    "stop": Rule.A6,
    "clear_alarm": Rule.A1,
    "acknowledge_alarm": Rule.A8,
    "pump_running": Rule.A3,
    "pump_stopped": Rule.A3,
    "pump_completed": Rule.L3,
    "power_reset": Rule.L3,
    "alarm_raised": Rule.A1,
    "alarm_cleared": Rule.A1,
    "link_lost": Rule.A2,
    "link_restored": Rule.A2,
    "restarted": Rule.A4,
    "command_confirmed": Rule.A3,
    "command_denied": Rule.A3,
    "command_unconfirmed": Rule.A3,
    "safety_envelope": Rule.L3,
    "time_passed": Rule.L1,
}


def _event_rule(event: object) -> Rule:
    """The rule `event` serves; an event of no known kind is a fault of its sender (A3)."""
    kind = event.get("kind") if isinstance(event, Mapping) else getattr(event, "kind", None)
    return EVENT_RULES.get(kind, Rule.A3) if isinstance(kind, str) else Rule.A3


def _decide(state: InfusionState, raw: object, now: datetime) -> Decision:
    time_error = _check_now(state, now)
    if time_error is not None:
        at = state.last_event_at or EARLIEST
        audit = AuditEvent(AuditType.INVALID, _event_rule(raw), at, data={"field": "now"})
        return Decision(state, (), (audit,), Refusal("invalid", time_error, field="now"))
    parsed = parse_event(raw)
    if isinstance(parsed, InvalidEvent):
        ctx = _caught_up(state, None, now, escalate=True)
        return _refuse(ctx, Refusal("invalid", parsed.reason, field=parsed.field), now, raw)
    event = parsed
    # I1: a reaction (or a stop, or the envelope) when a step falls due (or a late driver left
    # one unprocessed) stops the pump; the step is not taken first, so no rise goes out with the
    # stop, also when the report itself is refused (the step waits for the next event).
    stopping = isinstance(event, ReactionReported | Stop | SafetyEnvelopeTripped)
    escalate = not (stopping and not state.terminal)
    ctx = _caught_up(state, event, now, escalate=escalate)
    try:
        _handle(ctx, event, now)
    except Forbidden as refused:
        ctx = _caught_up(state, event, now, escalate=escalate)
        return _refuse(ctx, Refusal("rule", refused.reason, rule=refused.rule), now, event)
    except BadField as invalid:
        ctx = _caught_up(state, event, now, escalate=escalate)
        refusal = Refusal("invalid", invalid.reason, rule=invalid.rule, field=invalid.field)
        return _refuse(ctx, refusal, now, event)
    _catch_up(ctx, now)
    return ctx.decision()


def _check_now(state: InfusionState, now: object) -> str | None:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        return f"must be a timezone-aware datetime, got {now!r}"
    if not EARLIEST <= now < LATEST:
        return f"{now.isoformat()} is not a plausible clinical time"
    if state.last_event_at is not None and now < state.last_event_at:
        return f"{now.isoformat()} is before the last event {state.last_event_at.isoformat()}"
    return None


def _refuse(ctx: Ctx, refusal: Refusal, now: datetime, event: object) -> Decision:
    """Only what time alone changed (deadlines up to `now`) survives a refusal."""
    kind = event.get("kind") if isinstance(event, Mapping) else getattr(event, "kind", None)
    data: dict[str, object] = {"event": kind, "reason": refusal.reason}
    if refusal.field is not None:
        data["field"] = refusal.field
    type_ = AuditType.REFUSED if refusal.kind == "rule" else AuditType.INVALID
    ctx.log(type_, refusal.rule or _event_rule(event), now, **data)
    return ctx.decision(refusal)


def _core_fault(
    state: InfusionState, error: Exception, now: datetime, *, stop_again: bool = True
) -> Decision:
    """A state the core cannot continue from: stop the pump, raise the alarm (clinician)."""
    message = f"the rules core cannot continue ({type(error).__name__}): pump stopped"
    at = now if isinstance(now, datetime) else (state.last_event_at or EARLIEST)
    stop = StopPump(state.next_command_id)
    alarm = RaiseAlarm(MachineAlarm.CORE_FAULT, message, MachineAlarm.CORE_FAULT.rule)
    audit = AuditEvent(AuditType.CORE_FAULT, alarm.rule, at, data={"error": repr(error)[:500]})
    try:
        ctx = Ctx(state)
        if stop_again:
            stop_pump(ctx, first=True)
        ctx.alarm(MachineAlarm.CORE_FAULT, message, at)
        ctx.audit.append(audit)
        return ctx.decision()
    except Exception:  # noqa: BLE001 - even the state cannot be changed: the commands still go
        return Decision(state, (stop, alarm) if stop_again else (alarm,), (audit,))


def _caught_up(state: InfusionState, event: Event | None, now: datetime, *, escalate: bool) -> Ctx:
    """A context holding `state` with every deadline up to `now` processed, before `event`."""
    ctx = Ctx(state)
    if isinstance(event, Restarted) and not state.terminal:
        # A4: what happened while the controller was down is unknown: no running time for it,
        # and the over-infusion bound grows as with the link lost.
        ctx.set(link_lost=True)
    _catch_up(ctx, now, escalate=escalate)
    return ctx


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
    """Account running time, the L1 interval and the volumes up to `to`."""
    s = ctx.state
    if s.last_event_at is None:
        ctx.set(last_event_at=to)
        return
    if to <= s.last_event_at:
        return  # a deadline already behind us (an onset or a bag entered late): time stays
    minutes = (to - s.last_event_at).total_seconds() / 60
    counting = s.counting and not s.terminal
    changes = accrue(s, minutes, counting=counting)
    changes["last_event_at"] = to
    if counting:
        changes["running_min"] = s.running_min + minutes
        if not s.outstanding:
            changes["at_rate_min"] = s.at_rate_min + minutes
        changes["bag_infused_ml"] = min(
            s.bag_volume_ml, s.bag_infused_ml + s.pump_rate_ml_h * minutes / 60
        )
    ctx.set(**changes)


def _fire(ctx: Ctx, due: Deadline) -> None:
    s = ctx.state
    at = due.at
    if due.kind is DeadlineKind.ESCALATION:
        escalate(ctx, at)
    elif due.kind is DeadlineKind.OBSERVATION_END:
        assert s.reaction is not None
        if s.reaction.grade >= s.protocol.reactions.severe_grade:
            withdraw(ctx, Rule.I5, f"grade {s.reaction.grade} at the end of the 2 h window", at)
            return
        ctx.set(reaction=s.reaction.model_copy(update={"observation_closed": True}))
        ctx.log(
            AuditType.OBSERVATION_ENDED,
            Rule.I5,
            at,
            grade=s.reaction.grade,
            resume_allowed=not s.terminal,
        )
        if s.terminal:
            if not ctx.state.reaction or not ctx.state.reaction.hold_open:
                close_reaction(ctx)
        else:
            ctx.set(phase=InfusionPhase.PAUSED)
    elif due.kind is DeadlineKind.BRONCHOSPASM_LIMIT:
        withdraw(ctx, Rule.I4, "bronchospasm not resolved within 6 h of onset", at)
    elif due.kind is DeadlineKind.BAG_WARNING:
        ctx.set(bag_warned=True)
        left = s.bag_life.status(at).minutes_left
        ctx.alarm(
            MachineAlarm.BAG_EXPIRING, f"the bag expires in {left:g} min: prepare a new bag", at
        )
    else:
        ctx.set(bag_expired=True, bag_warned=True)
        if pump_may_run(s):
            stop_pump(ctx, first=True)
        hours = s.bag_life.stability_min / 60
        ctx.alarm(
            MachineAlarm.BAG_EXPIRED,
            f"the bag is past its {hours:g} h stability: pump stopped, a new bag is needed",
            at,
        )


def _handle(ctx: Ctx, event: Event, now: datetime) -> None:
    if _pump_fact(ctx, event, now):
        return
    s = ctx.state
    if s.terminal:
        _handle_terminal(ctx, event, now)
        return
    match event:
        case TimePassed():
            return
        case Start():
            on_start(ctx, event, now)
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
        case BagReplaced():
            on_bag_replaced(ctx, event, now)
        case ClearAlarm() | AcknowledgeAlarm():
            _staff_on_alarm(ctx, event, now)
        case Stop():
            _stop(ctx, event, now)


def _staff_on_alarm(ctx: Ctx, event: ClearAlarm | AcknowledgeAlarm, now: datetime) -> None:
    """A1's clear or A8's acknowledgement, in any phase (an ended infusion's alarms too)."""
    if isinstance(event, ClearAlarm):
        on_clear_alarm(ctx, event, now)
    else:
        on_acknowledge_alarm(ctx, event, now)


def _pump_fact(ctx: Ctx, event: Event, now: datetime) -> bool:
    """Pump facts and command fates, in any phase (an ended infusion's pump stays watched)."""
    match event:
        case PumpConfirmedRunning():
            on_status(ctx, True, event.rate_ml_h, event.volume_infused_ml, now)
        case PumpConfirmedStopped():
            on_status(ctx, False, 0.0, event.volume_infused_ml, now)
        case CommandConfirmed():
            on_confirmed(ctx, event, now)
        case CommandDenied() | CommandUnconfirmed():
            on_failed(ctx, event, now)
        case PumpAlarmRaised() | PumpAlarmCleared():
            on_pump_alarm(ctx, event, now)
        case LinkLost():
            on_link_lost(ctx, now)
        case LinkRestored() | Restarted():
            on_reconnected(ctx, event, now)
        case PumpPowerReset():
            on_power_reset(ctx, event, now)
        case PumpCompleted():
            on_completed(ctx, event, now)
        case SafetyEnvelopeTripped():
            on_envelope(ctx, event, now)
        case _:
            return False
    return True


def _stop(ctx: Ctx, event: Stop, now: datetime) -> None:
    """Stop for good; an open I4 hold or I5 window keeps running (Clarifications I4, I5)."""
    s = ctx.state
    if pump_may_run(s) or s.phase is not InfusionPhase.PLANNED:
        stop_pump(ctx, first=True)
    reaction = s.reaction
    if reaction is not None and not (reaction.window_open or reaction.hold_open):
        close_reaction(ctx)
    ctx.set(phase=InfusionPhase.STOPPED, stop_reason=event.reason)
    rule = Rule.A6
    if reaction is not None and (reaction.window_open or reaction.hold_open):
        rule = Rule.I5 if reaction.window_open else Rule.I4
    ctx.log(AuditType.STOPPED, rule, now, actor=event.actor, reason=event.reason)


def _handle_terminal(ctx: Ctx, event: Event, now: datetime) -> None:
    """Completed, withdrawn, stopped: late reactions (I11), an open window's reassessments."""
    s = ctx.state
    match event:
        case TimePassed():
            return
        case ReactionReported():
            on_terminal_reaction(ctx, event, now)
        case Reassessed():
            on_terminal_reassessed(ctx, event, now)
        case Resolved() if s.reaction is not None:
            on_resolved(ctx, event, now)
        case ClearAlarm() | AcknowledgeAlarm():
            _staff_on_alarm(ctx, event, now)
        case _:
            rule = {
                InfusionPhase.WITHDRAWN: Rule.I8,
                InfusionPhase.COMPLETED: Rule.L3,
                InfusionPhase.STOPPED: Rule.I9,
            }[s.phase]
            raise Forbidden(rule, f"the infusion is {s.phase.value}")
