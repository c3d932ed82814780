"""Pump facts: statuses and the one reconcile (A2, A3, A4), command fates (A3), alarms (A1),
completion (L3) and power resets.

A plain status is judged against the expectation: while commands are outstanding, anything
between the last confirmed rate and the commanded one; once every fate is known, the step.
The machine never starts or speeds up a pump because a fact arrived: a pump found faster is set
back down, one found slower or stopped is an alarm left for a nurse, one running while it must
be stopped is stopped again (on every contact while the stop is unconfirmed) and is the loudest
alarm (A3).
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.limits import Limit, constrain, protocol_max
from pumpctl.core.machine.alarms import CLINICIAN_ONLY, MachineAlarm, priority_of
from pumpctl.core.machine.context import (
    Ctx,
    Forbidden,
    pump_may_run,
    record_confirmed_rate,
    send,
    should_be_stopped,
    stop_pump,
    tolerance,
)
from pumpctl.core.machine.events import (
    AcknowledgeAlarm,
    ClearAlarm,
    CommandConfirmed,
    CommandDenied,
    CommandUnconfirmed,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    PumpPowerReset,
    Restarted,
    SafetyEnvelopeTripped,
)
from pumpctl.core.machine.outputs import AuditType, SetRate
from pumpctl.core.machine.state import CommandOp, InfusionPhase, InfusionState, SentCommand
from pumpctl.core.machine.volumes import (
    COMPLETION_TOLERANCE_ML,
    goes_backwards,
    keep_on_restart,
    most_given,
    reset_baseline,
    take_volume,
)
from pumpctl.core.rules import Rule

__all__ = [
    "REFUSED_RUN_WORDS",
    "lost_program",
    "on_acknowledge_alarm",
    "on_clear_alarm",
    "on_completed",
    "on_confirmed",
    "on_envelope",
    "on_failed",
    "on_link_lost",
    "on_power_reset",
    "on_pump_alarm",
    "on_reconnected",
    "on_status",
]

_MACHINE_ALARMS = frozenset(a.value for a in MachineAlarm)
#: What the staff are told when the pump refuses to run (A1; docs/clinical-rules.md).
REFUSED_RUN_WORDS = "the pump refused to run: clear the alarm at the pump, then resume"
VTBI_TOLERANCE_ML = 0.5  # a VTBI read back within this of the programmed one is the same


def lost_program(state: InfusionState, volume_ml: float, vtbi_ml: float) -> bool:
    """L3/A1: a read whose volume counter went back and whose VTBI is no longer the one
    programmed is a pump that lost its program and its counter (a power reset), not a bad
    read: the controller feeds it to the machine as `PumpPowerReset`. A counter that went back
    under the programmed VTBI stays a bad read (A2)."""
    programmed = state.vtbi_programmed_ml
    if programmed is None or not goes_backwards(state, volume_ml):
        return False  # no program to lose, or a counter that did not go back
    return abs(vtbi_ml - programmed) > VTBI_TOLERANCE_ML


def on_status(
    ctx: Ctx, running: bool, rate: float, volume: float, now: datetime, *, rule: Rule = Rule.A3
) -> None:
    """A status read: take its volume (unless a bad read), then reconcile its state.

    A bad read (a volume going backwards) is not taken; only its safe part is acted on: a pump
    read running while it must be stopped is stopped (again)."""
    if not take_volume(ctx, volume, now):
        s = ctx.state
        must_stop = should_be_stopped(s) or s.stop_unconfirmed
        if running and must_stop and not any(c.op is CommandOp.STOP for c in s.outstanding):
            stop_pump(ctx, first=True)
        return
    reconcile(ctx, running, rate, now, rule)


def reconcile(ctx: Ctx, running: bool, rate: float, now: datetime, rule: Rule) -> None:
    """The one reconciliation of a read-back with what the machine expects (A2, A3, A4)."""
    s = ctx.state
    tol = tolerance(s)
    was_running = s.pump_running
    ctx.set(pump_running=running, pump_rate_ml_h=rate if running else 0.0)
    if running and (should_be_stopped(s) or s.stop_unconfirmed):
        if any(c.op is CommandOp.STOP for c in s.outstanding):
            return  # the stop is on its way; its fate decides
        stop_pump(ctx, first=True)
        if s.stop_unconfirmed:
            ctx.log(AuditType.STOP_RESENT, Rule.A3, now, rate_ml_h=rate)
            return
        ctx.set(stop_unconfirmed=True)
        ctx.alarm(
            MachineAlarm.PUMP_NOT_STOPPED,
            f"pump running at {rate:g} ml/h while it must be stopped: clamp the line",
            now,
        )
        return
    if not running:
        if s.stop_unconfirmed:
            ctx.set(stop_unconfirmed=False)
            record_confirmed_rate(ctx, 0.0, now)
            ctx.log(AuditType.CONFIRMED_STOPPED, Rule.A3, now, late=True)
            return
        on_its_way = bool(s.outstanding) and rule is not Rule.A4  # after a restart: unknown
        if should_be_stopped(s) or on_its_way or s.alarms:
            return  # stopped as it should be, a run on its way, or the pump's alarm says why
        if was_running or (rule is not Rule.A3 and s.confirmed_rate_ml_h > 0):
            ctx.set(unexplained_stop=rule is Rule.A4)
            ctx.alarm(
                MachineAlarm.PUMP_STOPPED,
                f"the pump is stopped ({rule}): left stopped until a nurse resumes",
                now,
                rule,
            )
        return
    low, high = _expected(ctx)
    if rate > high + tol:
        _set_back_down(ctx, rate, now)
    elif rate < low - tol and MachineAlarm.RATE_LOWER.value not in s.latched:
        ctx.alarm(
            MachineAlarm.RATE_LOWER,
            f"pump at {rate:g} ml/h, {low:g} ml/h expected: left as is until a nurse acts",
            now,
            rule if rule is not Rule.A3 else Rule.A2,
        )


def _expected(ctx: Ctx) -> tuple[float, float]:
    """The rates a running pump may read back now: (lowest, highest)."""
    s = ctx.state
    # a rate sent before the last confirmed stop is not one the pump may show now: the stop
    # came after it on the same line and was read back as carried out
    pending = [
        c.rate_ml_h for c in s.outstanding if c.rate_ml_h is not None and c.id > s.stopped_after_id
    ]
    if not pending:
        return s.rate_ml_h, s.rate_ml_h
    # A3: before the fate, the last confirmed rate is still the expectation; never above the
    # higher of it and what was commanded.
    return 0.0, max(s.confirmed_rate_ml_h, s.rate_ml_h, *pending)


def _set_back_down(ctx: Ctx, found: float, now: datetime) -> None:
    """A2: a pump running faster than expected is an alarm and is set back down."""
    s = ctx.state
    decision = constrain(
        [
            Limit(Rule.A2, s.rate_ml_h, f"the current step {s.rate_ml_h:g} ml/h"),
            protocol_max(s.protocol.ladder.max_rate_ml_h),
        ],
        s.protocol.ladder.rate_resolution_ml_h,
    )
    rate = decision.rate_ml_h
    send(ctx, lambda i: SetRate(i, rate, decision), rate=rate, first=True)
    ctx.alarm(
        MachineAlarm.RATE_TOO_HIGH,
        f"pump at {found:g} ml/h, faster than {s.rate_ml_h:g} ml/h: set back down",
        now,
    )


def _settle(ctx: Ctx, command_id: int) -> SentCommand | None:
    """Take command `command_id` off the outstanding list (None if it is not there)."""
    s = ctx.state
    sent = next((c for c in s.outstanding if c.id == command_id), None)
    if sent is not None:
        ctx.set(outstanding=tuple(c for c in s.outstanding if c.id != command_id))
    return sent


def on_confirmed(ctx: Ctx, event: CommandConfirmed, now: datetime) -> None:
    """A3: command `command_id` read back as carried out; then its read-back as a status."""
    sent = _settle(ctx, event.command_id)
    s = ctx.state
    tol = tolerance(s)
    if sent is None:
        ctx.log(AuditType.CONFIRMED, Rule.A3, now, command_id=event.command_id, known=False)
    elif sent.op is CommandOp.SET_VTBI:
        vtbi = event.vtbi_ml
        if vtbi is None or abs(vtbi - s.bag_volume_ml) > VTBI_TOLERANCE_ML:
            ctx.log(AuditType.CONFIRMED, Rule.L3, now, command_id=sent.id, vtbi_ml=vtbi)
            if pump_may_run(s):
                stop_pump(ctx, first=True)
            ctx.alarm(
                MachineAlarm.PUMP_INCONSISTENT,
                f"the pump reads back a VTBI of {vtbi} ml, {s.bag_volume_ml:g} ml was programmed",
                now,
            )
        else:
            ctx.set(vtbi_programmed_ml=vtbi)
            reset_baseline(ctx, event.volume_infused_ml, now, "new VTBI")
    elif sent.op is CommandOp.CLEAR_VOLUME:
        reset_baseline(ctx, event.volume_infused_ml, now, "volume cleared")
    elif sent.op is CommandOp.STOP:
        if not event.running:
            ctx.set(stop_unconfirmed=False, stopped_after_id=max(s.stopped_after_id, sent.id))
            record_confirmed_rate(ctx, 0.0, now)
            ctx.log(AuditType.CONFIRMED_STOPPED, Rule.A3, now, command_id=sent.id)
    elif (
        sent.op is CommandOp.SET_RATE
        and not event.running
        and s.confirmed_rate_ml_h > 0
        and abs(s.rate_ml_h - s.confirmed_rate_ml_h) > tol
    ):
        # A rate change the pump took while stopped (an alarm) was never run: the step stays
        # the rate last confirmed running (A1: same rate after an alarm, never a jump).
        ctx.set(rate_ml_h=s.confirmed_rate_ml_h)
        ctx.log(AuditType.CONFIRMED, Rule.A1, now, command_id=sent.id, while_stopped=True)
    elif (
        event.running
        and sent.rate_ml_h is not None
        and abs(event.rate_ml_h - sent.rate_ml_h) <= tol
    ):
        record_confirmed_rate(ctx, event.rate_ml_h, now)
        if s.phase is InfusionPhase.STARTING:
            ctx.set(phase=InfusionPhase.RUNNING)
        ctx.log(
            AuditType.CONFIRMED_RUNNING,
            Rule.A3,
            now,
            command_id=sent.id,
            rate_ml_h=event.rate_ml_h,
            volume_infused_ml=event.volume_infused_ml,
        )
    on_status(ctx, event.running, event.rate_ml_h, event.volume_infused_ml, now)


def on_failed(ctx: Ctx, event: CommandDenied | CommandUnconfirmed, now: datetime) -> None:
    """A3: a command the pump refused, or whose confirmation never came within the timeout."""
    sent = _settle(ctx, event.command_id)
    if sent is None:
        raise Forbidden(Rule.A3, f"command {event.command_id} is not awaiting its fate")
    denied = isinstance(event, CommandDenied)
    s = ctx.state
    why = event.reason if isinstance(event, CommandDenied) else "no confirmation in time"
    kind = AuditType.COMMAND_DENIED if denied else AuditType.COMMAND_UNCONFIRMED
    ctx.log(kind, Rule.A3, now, command_id=sent.id, op=sent.op.value, reason=why)
    if sent.op is CommandOp.STOP:
        ctx.set(stop_unconfirmed=True)
        ctx.alarm(
            MachineAlarm.PUMP_NOT_STOPPED,
            f"pump did not stop ({why}): clamp the line",
            now,
        )
        return
    if sent.op in {CommandOp.SET_RATE, CommandOp.RUN} and s.confirmed_rate_ml_h > 0:
        # The pump never jumps to a step it never ran (a step refused during an alarm).
        ctx.set(rate_ml_h=s.confirmed_rate_ml_h)
    if sent.op is CommandOp.SET_VTBI and pump_may_run(s):
        stop_pump(ctx, first=True)  # never infuse without the programmed VTBI (L3)
    if denied and (s.alarms or (isinstance(event, CommandDenied) and event.dropped)):
        return  # the pump's own alarm explains the refusal (A1), or it was never sent
    unsent = isinstance(event, CommandDenied) and event.unsent  # the pump never saw it
    if denied and sent.op in {CommandOp.SET_RATE, CommandOp.RUN} and not s.pump_running:
        if unsent:
            ctx.alarm(MachineAlarm.COMMAND_DENIED, f"{sent.op.value} was {why}", now)
            return
        # A1: a pump that refuses to run stands in an alarm of its own; a New Era pump cannot
        # say when its alarm's cause is gone, so the nurse's clear may have come too soon.
        ctx.alarm(MachineAlarm.COMMAND_DENIED, f"{REFUSED_RUN_WORDS} ({why})", now, Rule.A1)
        return
    alarm = MachineAlarm.COMMAND_DENIED if denied else MachineAlarm.COMMAND_UNCONFIRMED
    ctx.alarm(alarm, f"the pump did not carry out {sent.op.value} ({why})", now)


def on_pump_alarm(ctx: Ctx, event: PumpAlarmRaised | PumpAlarmCleared, now: datetime) -> None:
    """A1: the pump's alarms in force (they suspend escalation and running time)."""
    s = ctx.state
    if isinstance(event, PumpAlarmRaised):
        if event.alarm not in s.alarms:
            ctx.set(alarms=s.alarms | {event.alarm}, latched=s.latched | {event.alarm})
            ctx.mark_raised(event.alarm, Rule.A1, now)
            ctx.log(
                AuditType.PUMP_ALARM, Rule.A1, now, alarm=event.alarm, running_min=s.running_min
            )
    elif event.alarm in s.alarms:
        ctx.set(alarms=s.alarms - {event.alarm})
        ctx.log(AuditType.PUMP_ALARM_CLEARED, Rule.A1, now, alarm=event.alarm)


def on_link_lost(ctx: Ctx, now: datetime) -> None:
    """A2: no valid status for longer than the link timeout (also for a state rebuilt after a
    restart, which is taken as a lost link until the pump is read, A4)."""
    s = ctx.state
    if not s.link_lost or MachineAlarm.COMM_LOSS.value not in s.latched:
        ctx.set(link_lost=True)
        ctx.alarm(MachineAlarm.COMM_LOSS, "no valid status from the pump", now)


def on_reconnected(ctx: Ctx, event: LinkRestored | Restarted, now: datetime) -> None:
    """A2/A4: the pump's real state after a link loss or a restart, through the one reconcile.

    A communication-loss alarm stays latched when the link is back: escalation waits for a
    nurse to clear it. A restart keeps the volumes: what a pump that did only what it was
    allowed to gave while the controller was down is taken as given (`keep_on_restart`)."""
    rule = Rule.A4 if isinstance(event, Restarted) else Rule.A2
    ctx.set(link_lost=False)
    ctx.log(
        AuditType.RESTARTED if rule is Rule.A4 else AuditType.LINK_RESTORED,
        rule,
        now,
        running=event.running,
        rate_ml_h=event.rate_ml_h,
        volume_infused_ml=event.volume_infused_ml,
    )
    if rule is Rule.A4 and _ran_as_allowed(ctx, event.running, event.rate_ml_h):
        keep_on_restart(ctx, event.volume_infused_ml, now)
    on_status(ctx, event.running, event.rate_ml_h, event.volume_infused_ml, now, rule=rule)


def _ran_as_allowed(ctx: Ctx, running: bool, rate: float) -> bool:
    """A4: the pump read at a restart was free to run (no stop due, none outstanding) and, if
    running, runs no faster than expected. A pump found faster, or running while it must be
    stopped, has its volume judged against the bound as ever (L3)."""
    s = ctx.state
    if should_be_stopped(s) or s.stop_outstanding:
        return False
    return not running or rate <= _expected(ctx)[1] + tolerance(s)


def on_power_reset(ctx: Ctx, event: PumpPowerReset, now: datetime) -> None:
    """The pump lost its program and its counter: what it gave moves to the earlier bags.

    L3, A4: the most it may have given counts as given (the last volume it read back plus the
    highest rate it may have run at since, `most_given`), so the VTBI programmed again before a
    resume never exceeds the bag less what the pump may have given: a counter not read since
    the last save (a restart) or since the last poll is never given twice."""
    s = ctx.state
    given = most_given(s)
    ctx.set(
        delivered_before_bag_ml=min(5000.0, s.delivered_before_bag_ml + given),
        bag_volume_ml=max(0.0, s.bag_volume_ml - given),
        vtbi_programmed_ml=None,
        pump_running=False,
        pump_rate_ml_h=0.0,
    )
    ctx.log(AuditType.POWER_RESET, Rule.A1, now, given_ml=given)
    reset_baseline(ctx, event.volume_infused_ml, now, "power reset")
    if not should_be_stopped(ctx.state) and not s.alarms:
        ctx.alarm(
            MachineAlarm.PUMP_STOPPED,
            "the pump lost power: left stopped until a nurse resumes",
            now,
        )


def on_completed(ctx: Ctx, event: PumpCompleted, now: datetime) -> None:
    """L3: complete only when the pump stopped by itself with the programmed VTBI given."""
    s = ctx.state
    if s.phase not in {InfusionPhase.RUNNING, InfusionPhase.STARTING}:
        ctx.alarm(
            MachineAlarm.PUMP_INCONSISTENT,
            f"the pump reported the VTBI delivered while the infusion is {s.phase.value}",
            now,
        )
        return
    if not take_volume(ctx, event.volume_infused_ml, now):
        return
    ctx.set(pump_running=False, pump_rate_ml_h=0.0)
    s = ctx.state
    vtbi = s.vtbi_programmed_ml
    given = event.volume_infused_ml
    whole = s.delivered_before_bag_ml + s.bag_volume_ml >= s.bag_ml - COMPLETION_TOLERANCE_ML
    if vtbi is None or abs(given - vtbi) > COMPLETION_TOLERANCE_ML or not whole:
        if MachineAlarm.UNDER_INFUSION.value in s.latched:
            return  # said once; the infusion stays open for a nurse
        of = f"{vtbi:g}" if vtbi is not None else "an unconfirmed"
        ctx.alarm(
            MachineAlarm.UNDER_INFUSION,
            f"the pump reported completion at {given:g} of {of} ml: the infusion stays open "
            "for a nurse",
            now,
        )
        return
    record_confirmed_rate(ctx, 0.0, now)
    ctx.set(phase=InfusionPhase.COMPLETED, outstanding=())
    s = ctx.state
    ctx.log(
        AuditType.COMPLETED,
        Rule.L3,
        now,
        running_min=s.running_min,
        delivered_ml=s.delivered_ml,
        highest_rate_ml_h=s.highest_rate_ml_h,
    )


def on_clear_alarm(ctx: Ctx, event: ClearAlarm, now: datetime) -> None:
    """A1: acknowledge a latched alarm when its cause is gone; never starts the pump.

    Clearing communication loss (A2) lets escalation resume, a full interval from the clear.
    """
    s = ctx.state
    name = event.alarm
    if name not in s.latched:
        raise Forbidden(Rule.A1, f"no alarm {name!r} is raised")
    if name in CLINICIAN_ONLY and event.role != "clinician":
        raise Forbidden(Rule.A1, f"only a clinician clears {name}")
    if name in s.alarms:
        raise Forbidden(Rule.A1, f"the pump still reports {name}")
    if name == MachineAlarm.COMM_LOSS and s.link_lost:
        raise Forbidden(Rule.A2, "the link to the pump is still lost")
    if name == MachineAlarm.PUMP_NOT_STOPPED and s.stop_outstanding:
        raise Forbidden(Rule.A3, "the pump is not yet confirmed stopped")
    a3 = {MachineAlarm.COMMAND_UNCONFIRMED, MachineAlarm.COMMAND_DENIED}
    if name in a3 and s.outstanding:
        raise Forbidden(Rule.A3, "a command's fate is not yet known")
    if name == MachineAlarm.BAG_EXPIRED and s.bag_expired:
        raise Forbidden(Rule.L9, "the bag is still past its stability: replace it first")
    ctx.unlatch(frozenset({name}))
    if name == MachineAlarm.COMM_LOSS:
        # A2: escalation was held since the loss; the next step needs a full interval of
        # running from this clear (time run before the loss or during the latch is not kept).
        ctx.set(at_rate_min=0.0)
    rule = MachineAlarm(name).rule if name in _MACHINE_ALARMS else Rule.A1
    ctx.log(AuditType.ALARM_CLEARED, rule, now, alarm=name, actor=event.actor, role=event.role)


def on_acknowledge_alarm(ctx: Ctx, event: AcknowledgeAlarm, now: datetime) -> None:
    """A8: a nurse or clinician acknowledges an alarm raised and not yet cleared: its sound
    stops; its latch (A1), its visual signal and the pump are untouched. Audited under the
    alarm's own rule, with the person."""
    s = ctx.state
    name = event.alarm
    if name not in s.latched and name not in s.alarms:
        raise Forbidden(Rule.A8, f"no alarm {name!r} is raised")
    ctx.keep_marks()  # a state kept before its marks were gets them now
    marks = ctx.state.alarm_marks
    mark = next(m for m in marks if m.kind == name)
    if mark.acknowledged_by is not None:
        raise Forbidden(Rule.A8, f"{name} was already acknowledged by {mark.acknowledged_by}")
    acknowledged = mark.model_copy(update={"acknowledged_by": event.actor, "acknowledged_at": now})
    ctx.set(alarm_marks=tuple(acknowledged if m.kind == name else m for m in marks))
    ctx.log(
        AuditType.ALARM_ACKNOWLEDGED,
        mark.rule,
        now,
        alarm=name,
        priority=priority_of(name).value,
        actor=event.actor,
    )


def on_envelope(ctx: Ctx, event: SafetyEnvelopeTripped, now: datetime) -> None:
    """The safety envelope tripped: the pump is stopped (again) and only a clinician clears."""
    stop_pump(ctx, first=True)
    ctx.alarm(
        MachineAlarm.SAFETY_ENVELOPE,
        f"safety envelope: {event.reason}: pump stopped; a clinician must check and clear",
        now,
        event.rule,
    )
