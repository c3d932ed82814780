"""What `decide()` returns: pump commands, staff alarms, audit events (each naming its rule)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pumpctl.core.limits import (
    RateDecision,
)
from pumpctl.core.machine.state import InfusionState


class MachineAlarm(StrEnum):
    """Alarms the machine itself raises (pump alarms are the pump's own names)."""

    COMM_LOSS = "comm_loss"  # A2
    PUMP_NOT_STOPPED = "pump_not_stopped"  # A3: the loudest: clamp the line
    RATE_TOO_HIGH = "rate_too_high"  # A2: set back down
    RATE_LOWER = "rate_lower_than_expected"  # A2: left as is until a nurse acts
    PUMP_STOPPED = "pump_stopped_unexpectedly"  # A1/A2: left as is until a nurse acts
    PUMP_INCONSISTENT = "pump_inconsistent"  # L3: completion reported while stopped
    BAG_EXPIRING = "bag_expiring"  # L9: one hour left
    BAG_EXPIRED = "bag_expired"  # L9: pump stopped, a new bag is needed


@dataclass(frozen=True, slots=True)
class SetRate:
    """Program the rate; `decision` records the limit chain that produced it."""

    rate_ml_h: float
    decision: RateDecision


@dataclass(frozen=True, slots=True)
class SetVtbi:
    """L3: program the volume to be infused."""

    volume_ml: float


@dataclass(frozen=True, slots=True)
class Run:
    """Start the pump at the programmed rate."""


@dataclass(frozen=True, slots=True)
class StopPump:
    """Stop the pump (I1: at the head of the pump's queue)."""


@dataclass(frozen=True, slots=True)
class RaiseAlarm:
    """Raise an alarm to the staff."""

    kind: MachineAlarm
    message: str
    rule: str


Command = SetRate | SetVtbi | Run | StopPump | RaiseAlarm


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit trail: what happened, under which rule, when, with which facts."""

    type: str
    rule: str | None
    at: datetime
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one event: the new state, commands for the pump, audit events."""

    state: InfusionState
    commands: tuple[Command, ...] = ()
    audit: tuple[AuditEvent, ...] = ()

    @property
    def refusal(self) -> AuditEvent | None:
        """The refusal, if the event was refused (its `rule` names why)."""
        return next((a for a in self.audit if a.type == "refused"), None)
