"""What the staff are told of an infusion: its state in one word, and why (interfaces.md, 3).

The machine's phase says where the infusion is in its course; the state shown says what the
pump is doing. They differ while the phase is `running` but the pump stands stopped for a pump
alarm (A1), the bag's expiry (L9), an alarm only a clinician clears (L2, L3, A3), a stop found
on a restart (A4) or a pump that stopped by itself (A1): the state shown is then `paused`, and
the reason names the rule. A reason is given wherever there is one to give (a reaction's pause,
a window, a lost link, a hold, an end); None while the infusion runs as planned or is planned.
Pure and total: a value in, a value out.
"""

from __future__ import annotations

from dataclasses import dataclass

from pumpctl.core.machine.alarms import CLINICIAN_ONLY, MachineAlarm
from pumpctl.core.machine.state import InfusionPhase, InfusionState
from pumpctl.core.rules import Rule

__all__ = ["PublicState", "public_state"]

_ACTIVE = frozenset({InfusionPhase.RUNNING, InfusionPhase.STARTING})


@dataclass(frozen=True, slots=True)
class PublicState:
    """The state shown (`planned`, `starting`, `running`, `paused`, `stopped_observation`,
    `completed`, `withdrawn`, `stopped`) and why: a rule id and words, or None."""

    state: str
    rule: Rule | None = None
    message: str | None = None


def public_state(s: InfusionState) -> PublicState:
    """The state shown for `s`, and the rule that explains it. A stop not yet confirmed is
    the loudest reason in every phase (A3): the pump may still infuse."""
    if s.stop_outstanding:
        return PublicState(s.phase.value, Rule.A3, "a stop is not yet confirmed: clamp the line")
    if s.phase in _ACTIVE:
        return _active(s)
    return _settled(s)


def _active(s: InfusionState) -> PublicState:  # noqa: PLR0911 - one answer per cause, in order
    """Running or starting: what the pump is doing, the loudest cause first."""
    phase = s.phase.value
    clinician = sorted(a for a in CLINICIAN_ONLY if a.value in s.latched)
    if clinician:
        alarm = clinician[0]
        return PublicState(
            "paused", alarm.rule, f"stopped: {alarm.value}; a clinician must clear it first"
        )
    if s.bag_expired:
        return PublicState("paused", Rule.L9, "the bag is past its stability: a new bag is needed")
    if s.alarms:
        alarms = ", ".join(sorted(s.alarms))
        if s.pump_running:  # an advisory the pump runs on with (a low battery)
            return PublicState(phase, Rule.A1, f"pump alarm: {alarms} (the pump runs on)")
        return PublicState("paused", Rule.A1, f"pump alarm: {alarms}")
    if s.link_lost:
        return PublicState(phase, Rule.A2, "no link to the pump: its state is unknown")
    if s.unexplained_stop:
        return PublicState(
            "paused", Rule.A4, "found stopped after a restart with no record why: a nurse decides"
        )
    if MachineAlarm.PUMP_STOPPED.value in s.latched and not s.pump_running:
        return PublicState("paused", Rule.A1, "the pump stopped by itself: a nurse resumes it")
    if s.phase is InfusionPhase.RUNNING and not s.pump_running and not s.outstanding:
        # confirmed stopped with no command on its way: a refused run (A1, A3) or the like
        shown = ", ".join(sorted(s.latched)) or "no alarm"
        return PublicState("paused", Rule.A1, f"the pump stands stopped ({shown}): a nurse acts")
    if MachineAlarm.COMM_LOSS.value in s.latched:
        return PublicState(
            phase, Rule.A2, "the link is back: escalation waits for a nurse to clear comm_loss"
        )
    if s.held:
        return PublicState(phase, Rule.L7, "escalation held by a clinician")
    return PublicState(phase)


def _settled(s: InfusionState) -> PublicState:
    """Planned, paused for a reaction, in a window, or ended: the phase, and its rule."""
    phase = s.phase.value
    reaction = s.reaction
    if s.phase is InfusionPhase.PAUSED and reaction is not None:
        if reaction.hold_open:
            return PublicState(phase, Rule.I4, "bronchospasm: no resume until it is resolved")
        return PublicState(phase, Rule.I2, f"reaction grade {reaction.grade}: a nurse resumes")
    if s.phase is InfusionPhase.PAUSED:
        return PublicState(phase, Rule.I2, "paused after a reaction: a nurse resumes")
    reasons = {
        InfusionPhase.STOPPED_OBSERVATION: (
            Rule.I5,
            "grade >= 3: the 2 h observation window is open",
        ),
        InfusionPhase.COMPLETED: (Rule.L3, "the pump gave the volume to be infused"),
        InfusionPhase.WITHDRAWN: (
            Rule.I8,
            s.course.withdrawn_reason or "the patient is withdrawn",
        ),
        InfusionPhase.STOPPED: (Rule.A6, f"stopped for good: {s.stop_reason or 'no reason'}"),
    }
    if s.phase in reasons:
        rule, message = reasons[s.phase]
        return PublicState(phase, rule, message)
    return PublicState(phase)
