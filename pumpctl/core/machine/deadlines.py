"""What falls due on clinical time alone: L1 steps, L9 bag warning and expiry, I4 and I5 limits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pumpctl.core.machine.state import InfusionPhase, InfusionState
from pumpctl.core.rules import Rule


class DeadlineKind(StrEnum):
    """What falls due at a deadline (listed in the order ties are processed)."""

    BRONCHOSPASM_LIMIT = "bronchospasm_limit"  # I4: 6 h from onset
    OBSERVATION_END = "observation_end"  # I5: 2 h window
    BAG_EXPIRY = "bag_expiry"  # L9: 15 h
    BAG_WARNING = "bag_warning"  # L9: 1 h before
    ESCALATION = "escalation"  # L1: one full interval at the current rate


_DEADLINE_ORDER = {kind: i for i, kind in enumerate(DeadlineKind)}


_DEADLINE_RULE = {
    DeadlineKind.BRONCHOSPASM_LIMIT: Rule.I4,
    DeadlineKind.OBSERVATION_END: Rule.I5,
    DeadlineKind.BAG_EXPIRY: Rule.L9,
    DeadlineKind.BAG_WARNING: Rule.L9,
    DeadlineKind.ESCALATION: Rule.L1,
}


@dataclass(frozen=True, slots=True)
class Deadline:
    """An instant at which the machine must be called with `TimePassed`."""

    at: datetime
    kind: DeadlineKind

    @property
    def rule(self) -> Rule:
        """The rule that sets this deadline."""
        return _DEADLINE_RULE[self.kind]


def after(instant: datetime, minutes: float) -> datetime:
    # Rounded up to the microsecond, so the interval is complete at the deadline.
    return instant + timedelta(microseconds=math.ceil(minutes * 60_000_000 - 1e-3))


def deadlines(state: InfusionState) -> tuple[Deadline, ...]:
    """Every pending deadline, earliest first.

    An ended infusion keeps only the deadlines of an I4 or I5 window still open (a stop does
    not close them, Clarifications I4, I5). L1's step falls due when the interval at the rate
    is complete, and never less than one interval of clinical time after the last confirmed
    rate change (a resume included).
    """
    found: list[Deadline] = []
    reaction = state.reaction
    rules = state.protocol.reactions
    if reaction is not None and state.phase is not InfusionPhase.WITHDRAWN:
        if reaction.hold_open and reaction.bronchospasm_onset_at is not None:
            found.append(
                Deadline(
                    after(reaction.bronchospasm_onset_at, rules.bronchospasm_limit_min),
                    DeadlineKind.BRONCHOSPASM_LIMIT,
                )
            )
        if reaction.window_open and reaction.observation_started_at is not None:
            found.append(
                Deadline(
                    after(reaction.observation_started_at, rules.observation_window_min),
                    DeadlineKind.OBSERVATION_END,
                )
            )
    if state.terminal:
        return tuple(sorted(found, key=lambda d: (d.at, _DEADLINE_ORDER[d.kind])))
    if not state.bag_expired:
        life = state.bag_life
        found.append(Deadline(life.expires_at, DeadlineKind.BAG_EXPIRY))
        if not state.bag_warned:
            found.append(Deadline(life.warn_at, DeadlineKind.BAG_WARNING))
    if state.escalation_eligible and state.last_event_at is not None:
        interval = state.protocol.ladder.interval_min
        at = after(state.last_event_at, max(0.0, interval - state.at_rate_min))
        if state.last_change_at is not None:
            at = max(at, after(state.last_change_at, interval))
        found.append(Deadline(at, DeadlineKind.ESCALATION))
    return tuple(sorted(found, key=lambda d: (d.at, _DEADLINE_ORDER[d.kind])))


def next_deadline(state: InfusionState) -> Deadline | None:
    """The earliest deadline, or None when nothing is due on time alone."""
    pending = deadlines(state)
    return pending[0] if pending else None
