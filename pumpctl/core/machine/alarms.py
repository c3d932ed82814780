"""Alarms the machine raises, which of them suspend escalation, who may clear them (A1), and
the priority of every alarm the service raises (A8, IEC 60601-1-8).

A nurse may clear a pump alarm the pump no longer reports, communication loss once the link is
back, an A3 alarm once the command's fate is known, and under-infusion; over-infusion and a
fault of the core itself
or of the safety envelope need a clinician (docs/clinical-rules.md, Clarifications, A1).

A8: each kind, the machine's own and the pump alarms of interfaces.md section 2 (named here as
strings: the core imports no driver), has one priority, the table of docs/clinical-rules.md; an
unknown kind is high (the safe side).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pumpctl.core.rules import Rule

__all__ = [
    "ACKNOWLEDGED_BY_RESUME",
    "CLINICIAN_ONLY",
    "PRIORITY",
    "PUMP_ALARMS",
    "SUSPENDING",
    "MachineAlarm",
    "Priority",
    "alarm_rule",
    "priority_of",
]


class MachineAlarm(StrEnum):
    """Alarms the machine itself raises (pump alarms keep the pump's own names)."""

    COMM_LOSS = "comm_loss"  # A2
    PUMP_NOT_STOPPED = "pump_not_stopped"  # A3: the loudest: clamp the line
    COMMAND_UNCONFIRMED = "command_unconfirmed"  # A3: no confirmation within the timeout
    COMMAND_DENIED = "command_denied"  # A3: the pump refused a command
    RATE_TOO_HIGH = "rate_too_high"  # A2: set back down
    RATE_LOWER = "rate_lower_than_expected"  # A2: left as is until a nurse acts
    PUMP_STOPPED = "pump_stopped_unexpectedly"  # A1/A2/A4: left as is until a nurse acts
    PUMP_INCONSISTENT = "pump_inconsistent"  # L3: a completion that cannot be one
    UNDER_INFUSION = "under_infusion"  # L3: less given than the confirmed rates should give
    OVER_INFUSION = "over_infusion"  # L3: more given than the pump can have given: stopped
    BAG_EXPIRING = "bag_expiring"  # L9: one hour left
    BAG_EXPIRED = "bag_expired"  # L9: pump stopped, a new bag is needed
    CORE_FAULT = "core_fault"  # a state the core cannot continue from: pump stopped
    SAFETY_ENVELOPE = "safety_envelope"  # the independent monitor stopped the pump

    @property
    def rule(self) -> Rule:
        """The rule this alarm belongs to."""
        return _RULE[self]


_RULE = {
    MachineAlarm.COMM_LOSS: Rule.A2,
    MachineAlarm.PUMP_NOT_STOPPED: Rule.A3,
    MachineAlarm.COMMAND_UNCONFIRMED: Rule.A3,
    MachineAlarm.COMMAND_DENIED: Rule.A3,
    MachineAlarm.RATE_TOO_HIGH: Rule.A2,
    MachineAlarm.RATE_LOWER: Rule.A2,
    MachineAlarm.PUMP_STOPPED: Rule.A1,
    MachineAlarm.PUMP_INCONSISTENT: Rule.L3,
    MachineAlarm.UNDER_INFUSION: Rule.L3,
    MachineAlarm.OVER_INFUSION: Rule.L3,
    MachineAlarm.BAG_EXPIRING: Rule.L9,
    MachineAlarm.BAG_EXPIRED: Rule.L9,
    MachineAlarm.CORE_FAULT: Rule.A3,
    MachineAlarm.SAFETY_ENVELOPE: Rule.L2,
}

# Latched, these suspend escalation (L1) until cleared.
SUSPENDING = frozenset(
    {
        MachineAlarm.PUMP_NOT_STOPPED,
        MachineAlarm.COMMAND_UNCONFIRMED,
        MachineAlarm.COMMAND_DENIED,
        MachineAlarm.OVER_INFUSION,
        MachineAlarm.CORE_FAULT,
        MachineAlarm.SAFETY_ENVELOPE,
        MachineAlarm.RATE_LOWER,
        MachineAlarm.PUMP_STOPPED,
    }
)
# A nurse's resume is what these ask for: it acknowledges them.
ACKNOWLEDGED_BY_RESUME = frozenset({MachineAlarm.RATE_LOWER, MachineAlarm.PUMP_STOPPED})
# Only a clinician clears these; while latched the pump stays stopped and no resume is taken.
CLINICIAN_ONLY = frozenset(
    {MachineAlarm.OVER_INFUSION, MachineAlarm.CORE_FAULT, MachineAlarm.SAFETY_ENVELOPE}
)


class Priority(StrEnum):
    """A8: how soon somebody must act on an alarm (IEC 60601-1-8), highest first."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for high, 1 for medium, 2 for low: the order of the room's tiles."""
        return list(Priority).index(self)


#: The pump alarms of interfaces.md section 2 (a pump names them; the machine latches them, A1).
PUMP_ALARMS = (
    "occlusion",
    "air_in_line",
    "door_open",
    "empty",
    "low_battery",
    "malfunction",
    "comm_timeout",
)

#: A8: the priority of every alarm kind the service raises (docs/clinical-rules.md, A8's table).
PRIORITY: Mapping[str, Priority] = {
    MachineAlarm.PUMP_NOT_STOPPED: Priority.HIGH,
    MachineAlarm.COMMAND_UNCONFIRMED: Priority.HIGH,
    MachineAlarm.COMM_LOSS: Priority.HIGH,
    MachineAlarm.RATE_TOO_HIGH: Priority.HIGH,
    MachineAlarm.OVER_INFUSION: Priority.HIGH,
    MachineAlarm.SAFETY_ENVELOPE: Priority.HIGH,
    MachineAlarm.CORE_FAULT: Priority.HIGH,
    "malfunction": Priority.HIGH,
    "occlusion": Priority.MEDIUM,
    "air_in_line": Priority.MEDIUM,
    "door_open": Priority.MEDIUM,
    "empty": Priority.MEDIUM,
    "comm_timeout": Priority.MEDIUM,
    MachineAlarm.COMMAND_DENIED: Priority.MEDIUM,
    MachineAlarm.PUMP_STOPPED: Priority.MEDIUM,
    MachineAlarm.RATE_LOWER: Priority.MEDIUM,
    MachineAlarm.UNDER_INFUSION: Priority.MEDIUM,
    MachineAlarm.PUMP_INCONSISTENT: Priority.MEDIUM,
    MachineAlarm.BAG_EXPIRED: Priority.MEDIUM,
    "low_battery": Priority.LOW,
    MachineAlarm.BAG_EXPIRING: Priority.LOW,
}


def priority_of(kind: str) -> Priority:
    """A8: the priority of alarm `kind`; a kind the table lacks is high (the safe side)."""
    return PRIORITY.get(kind, Priority.HIGH)


def alarm_rule(kind: str) -> Rule:
    """The rule an alarm of `kind` belongs to: a machine alarm's own, A1 for the pump's."""
    try:
        return MachineAlarm(kind).rule
    except ValueError:
        return Rule.A1
