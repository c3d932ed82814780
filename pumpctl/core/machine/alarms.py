"""Alarms the machine raises, which of them suspend escalation, and who may clear them (A1).

A nurse may clear a pump alarm the pump no longer reports, communication loss once the link is
back, an A3 alarm once the command's fate is known, and under-infusion; over-infusion and a
fault of the core itself
or of the safety envelope need a clinician (docs/clinical-rules.md, Clarifications, A1).
"""

from __future__ import annotations

from enum import StrEnum

from pumpctl.core.rules import Rule

__all__ = ["ACKNOWLEDGED_BY_RESUME", "CLINICIAN_ONLY", "SUSPENDING", "MachineAlarm"]


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
