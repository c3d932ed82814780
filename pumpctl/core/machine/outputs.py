"""What `decide()` returns: pump commands, staff alarms, audit events, refusals (with rule ids).

Every pump command carries the id the machine gave it (A3): the controller's ledger sends it
with the command (the MQTT `id`) and reports its fate back as an event naming that id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pumpctl.core.limits import RateDecision
from pumpctl.core.machine.alarms import MachineAlarm
from pumpctl.core.machine.state import CommandOp, InfusionState
from pumpctl.core.rules import Rule

__all__ = [
    "AuditEvent",
    "AuditType",
    "ClearVolume",
    "Command",
    "Decision",
    "PumpCommand",
    "RaiseAlarm",
    "Refusal",
    "Run",
    "SetRate",
    "SetVtbi",
    "StopPump",
]


@dataclass(frozen=True, slots=True)
class SetRate:
    """Program the rate; `decision` records the limit chain that produced it."""

    id: int
    rate_ml_h: float
    decision: RateDecision
    op: Literal[CommandOp.SET_RATE] = CommandOp.SET_RATE


@dataclass(frozen=True, slots=True)
class SetVtbi:
    """L3: program the volume to be infused."""

    id: int
    volume_ml: float
    op: Literal[CommandOp.SET_VTBI] = CommandOp.SET_VTBI


@dataclass(frozen=True, slots=True)
class ClearVolume:
    """L9: clear the pump's volume counter (a new bag); the volume baseline resets after it."""

    id: int
    op: Literal[CommandOp.CLEAR_VOLUME] = CommandOp.CLEAR_VOLUME


@dataclass(frozen=True, slots=True)
class Run:
    """Start the pump at the programmed rate."""

    id: int
    op: Literal[CommandOp.RUN] = CommandOp.RUN


@dataclass(frozen=True, slots=True)
class StopPump:
    """Stop the pump (I1: at the head of the pump's queue)."""

    id: int
    op: Literal[CommandOp.STOP] = CommandOp.STOP


@dataclass(frozen=True, slots=True)
class RaiseAlarm:
    """Raise an alarm to the staff."""

    kind: MachineAlarm
    message: str
    rule: Rule


PumpCommand = SetRate | SetVtbi | ClearVolume | Run | StopPump
Command = PumpCommand | RaiseAlarm


class AuditType(StrEnum):
    """Kinds of audit event the machine writes."""

    STARTED = "started"
    CONFIRMED = "confirmed"
    CONFIRMED_RUNNING = "confirmed_running"
    CONFIRMED_STOPPED = "confirmed_stopped"
    COMMAND_DENIED = "command_denied"
    COMMAND_UNCONFIRMED = "command_unconfirmed"
    STOP_RESENT = "stop_resent"
    RATE_STEP = "rate_step"
    LADDER_SETTLED = "ladder_settled"
    HOLD = "hold"
    RELEASE = "release"
    PUMP_ALARM = "pump_alarm"
    PUMP_ALARM_CLEARED = "pump_alarm_cleared"
    ALARM = "alarm"
    ALARM_CLEARED = "alarm_cleared"
    ALARM_ACKNOWLEDGED = "alarm_acknowledged"  # A8
    LINK_RESTORED = "link_restored"
    RESTARTED = "restarted"
    POWER_RESET = "power_reset"
    BAD_READ = "bad_read"
    VOLUME_BASELINE = "volume_baseline"
    COMPLETED = "completed"
    REACTION = "reaction"
    REASSESSED = "reassessed"
    RESOLVED = "resolved"
    RESUMED = "resumed"
    PAUSED = "paused"
    STOPPED_OBSERVATION = "stopped_observation"
    OBSERVATION_STARTED = "observation_started"
    OBSERVATION_ENDED = "observation_ended"
    BRONCHOSPASM_HOLD = "bronchospasm_hold"
    WITHDRAWN = "withdrawn"
    COURSE_WITHDRAWN = "course_withdrawn"
    STOPPED = "stopped"
    BAG_REPLACED = "bag_replaced"
    REFUSED = "refused"
    INVALID = "invalid"
    CORE_FAULT = "core_fault"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit trail: what happened, under which rule, when, with which facts."""

    type: AuditType
    rule: Rule  # every audit event names the rule it serves
    at: datetime
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an event was refused: a rule forbids it (409), or the input is invalid (422)."""

    kind: Literal["rule", "invalid"]
    reason: str
    rule: Rule | None = None  # kind "rule"
    field: str | None = None  # kind "invalid": the offending field, e.g. "grade" or "onset_at"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one event: the new state, commands for the pump, audit events."""

    state: InfusionState
    commands: tuple[Command, ...] = ()
    audit: tuple[AuditEvent, ...] = ()
    refusal: Refusal | None = None

    @property
    def pump_commands(self) -> tuple[PumpCommand, ...]:
        """The commands for the pump, in order (the stop first when there is one, I1)."""
        return tuple(c for c in self.commands if not isinstance(c, RaiseAlarm))
