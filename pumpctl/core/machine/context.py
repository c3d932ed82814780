"""The accumulator of one `decide()` call, and the primitives every handler shares.

`Ctx` collects state changes, commands and audit events; `Refused` carries a refusal (naming the
rule) out of a handler to `decide()`, which never lets it escape. `stop_pump` and `command_rate`
are the only places a stop or a rate is commanded (A3: the pending command they record).
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.limits import (
    RateDecision,
)
from pumpctl.core.machine.outputs import (
    AuditEvent,
    Command,
    Decision,
    MachineAlarm,
    RaiseAlarm,
    Run,
    SetRate,
    StopPump,
)
from pumpctl.core.machine.state import (
    REACTION_PHASES,
    TERMINAL_PHASES,
    InfusionPhase,
    InfusionState,
    PendingCommand,
)

EPSILON_MIN = 1e-6  # running-time comparisons (60 microseconds)


class Ctx:
    """Accumulates one call's state changes, commands and audit events (local to `decide`)."""

    def __init__(self, state: InfusionState) -> None:
        self.state = state
        self.commands: list[Command] = []
        self.audit: list[AuditEvent] = []

    def set(self, **changes: object) -> None:
        self.state = self.state.model_copy(update=changes)

    def emit(self, *commands: Command) -> None:
        self.commands.extend(commands)

    def emit_first(self, command: Command) -> None:
        """Put `command` at the head of this decision's commands (I1: the stop goes first)."""
        self.commands.insert(0, command)

    def log(self, type_: str, rule: str | None, at: datetime, **data: object) -> None:
        self.audit.append(AuditEvent(type=type_, rule=rule, at=at, data=data))

    def alarm(self, kind: MachineAlarm, message: str, rule: str, at: datetime) -> None:
        self.emit(RaiseAlarm(kind, message, rule))
        self.log("alarm", rule, at, kind=kind.value, message=message)

    def decision(self) -> Decision:
        return Decision(self.state, tuple(self.commands), tuple(self.audit))


class Refused(Exception):  # noqa: N818 - control flow inside decide(), never escapes it
    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


def tolerance(s: InfusionState) -> float:
    return s.protocol.ladder.rate_resolution_ml_h / 2


def command_rate(ctx: Ctx, decision: RateDecision, *, run: bool = False) -> None:
    """Command a new current step (and run); the L1 interval restarts at the confirmation."""
    ctx.emit(SetRate(decision.rate_ml_h, decision))
    if run:
        ctx.emit(Run())
    ctx.set(
        rate_ml_h=decision.rate_ml_h,
        at_rate_min=0.0,
        pending=PendingCommand(kind="run", rate_ml_h=decision.rate_ml_h),
    )


def stop_pump(ctx: Ctx, *, first: bool = False) -> None:
    if first:
        ctx.emit_first(StopPump())
    else:
        ctx.emit(StopPump())
    ctx.set(pending=PendingCommand(kind="stop"))


def pump_may_run(s: InfusionState) -> bool:
    """The pump is, or may soon be, infusing (so a stop is needed)."""
    if s.pending is not None:
        return s.pending.kind == "run" or s.pump_running
    return s.pump_running


def should_be_stopped(s: InfusionState) -> bool:
    return (
        s.phase in REACTION_PHASES
        or s.phase in TERMINAL_PHASES
        or s.phase is InfusionPhase.PLANNED
        or s.bag_expired
    )


def seen_running(ctx: Ctx, rate: float, **changes: object) -> None:
    """A read-back of the pump running at `rate` (kept as I2's last non-zero rate)."""
    if rate > 0:
        changes["ran_at_ml_h"] = rate
    ctx.set(pump_running=True, pump_rate_ml_h=rate, **changes)


def take_volume(ctx: Ctx, volume: float) -> None:
    s = ctx.state
    ctx.set(bag_infused_ml=min(volume, s.bag_volume_ml))
