"""The accumulator of one `decide()` call, and the primitives every handler shares.

`Ctx` collects state changes (each validated, `InfusionState.updated`), commands and audit
events. `Forbidden` (a rule forbids it) and `BadField` (the input is wrong) carry a refusal out of
a handler to `decide()`, which never lets them escape. `send` is the only place a pump command
gets its id and enters the outstanding list (A3); `stop_pump` and `command_rate` are the only
places a stop or a rate is commanded. Every decision keeps one `AlarmMark` per alarm raised and
not yet cleared (A8: since when, who acknowledged it, whether its cause has ended).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pumpctl.core.limits import RateDecision
from pumpctl.core.machine.alarms import CLINICIAN_ONLY, MachineAlarm, alarm_rule
from pumpctl.core.machine.outputs import (
    AuditEvent,
    AuditType,
    Command,
    Decision,
    PumpCommand,
    RaiseAlarm,
    Refusal,
    Run,
    SetRate,
    StopPump,
)
from pumpctl.core.machine.state import (
    EARLIEST,
    REACTION_PHASES,
    TERMINAL_PHASES,
    AlarmMark,
    CommandOp,
    InfusionPhase,
    InfusionState,
    RatePoint,
    SentCommand,
)
from pumpctl.core.rules import Rule

__all__ = [
    "EPSILON_MIN",
    "BadField",
    "Ctx",
    "Forbidden",
    "cause_stands",
    "command_rate",
    "pump_may_run",
    "record_confirmed_rate",
    "send",
    "should_be_stopped",
    "stop_pump",
    "tolerance",
]

EPSILON_MIN = 1e-6  # running-time comparisons (60 microseconds)


class Ctx:
    """Accumulates one call's state changes, commands and audit events (local to `decide`)."""

    def __init__(self, state: InfusionState) -> None:
        self.state = state
        self.commands: list[Command] = []
        self.audit: list[AuditEvent] = []

    def set(self, **changes: object) -> None:
        """Change fields of the state, each validated (a misspelt name or a bad value raises)."""
        self.state = self.state.updated(changes)

    def emit(self, *commands: Command) -> None:
        """Append commands to this decision."""
        self.commands.extend(commands)

    def log(self, type_: AuditType, rule: Rule, at: datetime, **data: object) -> None:
        """Append an audit event."""
        self.audit.append(AuditEvent(type=type_, rule=rule, at=at, data=data))

    def alarm(
        self, kind: MachineAlarm, message: str, at: datetime, rule: Rule | None = None
    ) -> None:
        """Raise `kind` to the staff (under `rule`, default its own); latched until cleared."""
        rule = rule or kind.rule
        self.emit(RaiseAlarm(kind, message, rule))
        self.set(latched=self.state.latched | {kind.value})
        self.mark_raised(kind.value, rule, at)
        self.log(AuditType.ALARM, rule, at, kind=kind.value, message=message)

    def mark_raised(self, kind: str, rule: Rule, at: datetime) -> None:
        """A8: `kind` raised at `at`: a new alarm (unacknowledged, raised now) unless the same
        alarm is still marked with its cause standing (a stop sent again, still unconfirmed)."""
        marks = self.state.alarm_marks
        current = next((m for m in marks if m.kind == kind), None)
        if current is not None and not current.ended:
            return
        fresh = AlarmMark(kind=kind, rule=rule, raised_at=at)
        self.set(alarm_marks=(*(m for m in marks if m.kind != kind), fresh))

    def unlatch(self, kinds: frozenset[str]) -> None:
        """A1: `kinds` cleared: off the latch, and their marks gone (A8: a later raise is new)."""
        self.set(
            latched=self.state.latched - kinds,
            alarm_marks=tuple(m for m in self.state.alarm_marks if m.kind not in kinds),
        )

    def decision(self, refusal: Refusal | None = None) -> Decision:
        """The decision made so far (its alarm marks kept in step with the alarms, A8)."""
        self.keep_marks()
        return Decision(self.state, tuple(self.commands), tuple(self.audit), refusal)

    def keep_marks(self) -> None:
        """A8: one mark per alarm latched or reported; a cause that ended stays ended."""
        s = self.state
        active = s.latched | s.alarms
        marks: list[AlarmMark] = []
        changed = False
        for kept in s.alarm_marks:
            if kept.kind not in active:
                changed = True  # cleared (A1): a later raise is a new alarm
                continue
            if not kept.ended and not cause_stands(s, kept.kind):
                kept = kept.model_copy(update={"ended": True})  # noqa: PLW2901
                changed = True
            marks.append(kept)
        for kind in sorted(active - {m.kind for m in marks}):
            # an alarm of a state kept before its marks were: raised no later than now
            at = s.last_event_at or EARLIEST
            ended = not cause_stands(s, kind)
            marks.append(AlarmMark(kind=kind, rule=alarm_rule(kind), raised_at=at, ended=ended))
            changed = True
        if changed:
            self.set(alarm_marks=tuple(marks))


class Forbidden(Exception):  # noqa: N818 - control flow inside decide(), never escapes it
    """A rule forbids the event (the service answers 409)."""

    def __init__(self, rule: Rule, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


class BadField(Exception):  # noqa: N818 - control flow inside decide(), never escapes it
    """The event's input is invalid (the service answers 422); `field` names it."""

    def __init__(self, field: str, reason: str, rule: Rule | None = None) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.rule = rule


def cause_stands(s: InfusionState, kind: str) -> bool:
    """A8: whether the cause of alarm `kind` still stands, as far as the machine can tell
    (docs/clinical-rules.md, Clarifications, A8)."""
    if kind == MachineAlarm.COMM_LOSS:
        return s.link_lost
    if kind == MachineAlarm.PUMP_NOT_STOPPED:
        return s.stop_outstanding
    if kind == MachineAlarm.BAG_EXPIRED:
        return s.bag_expired
    if kind in {MachineAlarm.COMMAND_UNCONFIRMED, MachineAlarm.COMMAND_DENIED}:
        return False  # one command's fate: the next one is a new alarm
    if kind in _MACHINE_KINDS:
        return True  # an event latched until cleared (A1)
    return kind in s.alarms  # the pump's own alarm, while the pump reports it


_MACHINE_KINDS = frozenset(a.value for a in MachineAlarm)


def tolerance(s: InfusionState) -> float:
    """Half the pump's rate resolution: two rates closer than this are the same rate."""
    return s.protocol.ladder.rate_resolution_ml_h / 2


def send(
    ctx: Ctx, make: Callable[[int], PumpCommand], *, rate: float | None = None, first: bool = False
) -> PumpCommand:
    """A3: give a pump command the next id, emit it and keep it outstanding until its fate."""
    s = ctx.state
    command = make(s.next_command_id)
    sent = SentCommand(id=command.id, op=command.op, rate_ml_h=rate)
    ctx.set(next_command_id=s.next_command_id + 1, outstanding=(*s.outstanding, sent))
    if first:
        ctx.commands.insert(0, command)
    else:
        ctx.emit(command)
    return command


def command_rate(ctx: Ctx, decision: RateDecision, *, run: bool = False) -> None:
    """Command a new current step (and run); the L1 interval restarts at the confirmation."""
    rate = decision.rate_ml_h
    send(ctx, lambda i: SetRate(i, rate, decision), rate=rate)
    if run:
        send(ctx, Run, rate=rate)
    ctx.set(rate_ml_h=rate, at_rate_min=0.0)


def stop_pump(ctx: Ctx, *, first: bool = False) -> None:
    """Stop the pump (I1: `first` puts it at the head); once per decision."""
    if any(isinstance(c, StopPump) for c in ctx.commands):
        return
    send(ctx, StopPump, first=first)


def pump_may_run(s: InfusionState) -> bool:
    """The pump is, or may soon be, infusing (so a stop is needed)."""
    return (
        s.pump_running
        or s.stop_unconfirmed
        or any(c.op in {CommandOp.RUN, CommandOp.SET_RATE} for c in s.outstanding)
    )


def should_be_stopped(s: InfusionState) -> bool:
    """Nothing allows the pump to infuse now."""
    return (
        s.phase in REACTION_PHASES
        or s.phase in TERMINAL_PHASES
        or s.phase is InfusionPhase.PLANNED
        or s.bag_expired
        or bool(s.latched & CLINICIAN_ONLY)
    )


def record_confirmed_rate(ctx: Ctx, rate: float, at: datetime) -> None:
    """I10: the pump is confirmed at `rate` from `at` (0: stopped).

    A new non-zero rate (a step, a set-back, a resume at half after a reaction) is a change:
    L1's next step is never less than one interval of clinical time after it. Running again at
    the same rate after an alarm or a new bag is no change: L1 keeps the time already run.
    """
    s = ctx.state
    if s.rate_history and abs(s.rate_history[-1].rate_ml_h - rate) <= tolerance(s):
        ctx.set(confirmed_rate_ml_h=rate)
        return
    changed = rate > 0 and abs(rate - s.ran_at_ml_h) > tolerance(s)
    ctx.set(
        confirmed_rate_ml_h=rate,
        rate_history=(*s.rate_history, RatePoint(at=at, rate_ml_h=rate)),
        last_change_at=at if changed else s.last_change_at,
        highest_rate_ml_h=max(s.highest_rate_ml_h, rate),
    )
