"""What falls due on clinical time alone: L1 steps, L9 bag warning and expiry, I4 and I5 limits."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pumpctl.core.machine.state import InfusionState


class DeadlineKind(StrEnum):
    """What falls due at a deadline (listed in the order ties are processed)."""

    BRONCHOSPASM_LIMIT = "bronchospasm_limit"  # I4: 6 h from onset
    OBSERVATION_END = "observation_end"  # I5: 2 h window
    BAG_EXPIRY = "bag_expiry"  # L9: 15 h
    BAG_WARNING = "bag_warning"  # L9: 1 h before
    ESCALATION = "escalation"  # L1: one full interval at the current rate


_DEADLINE_ORDER = {kind: i for i, kind in enumerate(DeadlineKind)}


_DEADLINE_RULE = {
    DeadlineKind.BRONCHOSPASM_LIMIT: "I4",
    DeadlineKind.OBSERVATION_END: "I5",
    DeadlineKind.BAG_EXPIRY: "L9",
    DeadlineKind.BAG_WARNING: "L9",
    DeadlineKind.ESCALATION: "L1",
}


@dataclass(frozen=True, slots=True)
class Deadline:
    """An instant at which the machine must be called with `TimePassed`."""

    at: datetime
    kind: DeadlineKind

    @property
    def rule(self) -> str:
        """The rule that sets this deadline."""
        return _DEADLINE_RULE[self.kind]


def _after(instant: datetime, minutes: float) -> datetime:
    # Rounded up to the microsecond, so the interval is complete at the deadline.
    return instant + timedelta(microseconds=math.ceil(minutes * 60_000_000 - 1e-3))


def deadlines(state: InfusionState) -> tuple[Deadline, ...]:
    """Every pending deadline, earliest first."""
    if state.terminal:
        return ()
    found: list[Deadline] = []
    if not state.bag_expired:
        life = state.bag_life
        found.append(Deadline(life.expires_at, DeadlineKind.BAG_EXPIRY))
        if not state.bag_warned:
            found.append(Deadline(life.warn_at, DeadlineKind.BAG_WARNING))
    reaction = state.reaction
    rules = state.protocol.reactions
    if reaction is not None:
        if reaction.bronchospasm_onset_at is not None and not reaction.resolved:
            found.append(
                Deadline(
                    _after(reaction.bronchospasm_onset_at, rules.bronchospasm_limit_min),
                    DeadlineKind.BRONCHOSPASM_LIMIT,
                )
            )
        if reaction.observation_started_at is not None and not reaction.observation_closed:
            found.append(
                Deadline(
                    _after(reaction.observation_started_at, rules.observation_window_min),
                    DeadlineKind.OBSERVATION_END,
                )
            )
    if state.escalation_eligible and state.last_event_at is not None:
        left = max(0.0, state.protocol.ladder.interval_min - state.at_rate_min)
        found.append(Deadline(_after(state.last_event_at, left), DeadlineKind.ESCALATION))
    return tuple(sorted(found, key=lambda d: (d.at, _DEADLINE_ORDER[d.kind])))


def next_deadline(state: InfusionState) -> Deadline | None:
    """The earliest deadline, or None when nothing is due on time alone."""
    pending = deadlines(state)
    return pending[0] if pending else None
