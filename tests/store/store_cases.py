"""Real infusion states from the rules core, for the store's tests (tests/store/conftest.py
holds the database fixtures)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pumpctl.core.history import CourseState, Sign
from pumpctl.core.machine import (
    CommandConfirmed,
    Decision,
    InfusionState,
    ReactionReported,
    SetRate,
    SetVtbi,
    Start,
    decide,
    initial_state,
)
from pumpctl.protocols import load_protocol

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def planned(
    number: int = 1, *, course: CourseState | None = None, day: Literal[1, 2] | None = None
) -> InfusionState:
    """A real planned infusion of the daratumumab protocol, from the core."""
    protocol = load_protocol("daratumumab-split" if day is not None else "daratumumab")
    return initial_state(
        protocol,
        infusion_number=number,
        course=course or CourseState(),
        bag_prepared_at=T0 - timedelta(minutes=30),
        day=day,
    )


def started(state: InfusionState, at: datetime = T0) -> Decision:
    """The real decision of a nurse's start (VTBI, rate, run; audit events)."""
    decision = decide(state, Start(actor="nurse", course=state.course), at)
    assert decision.refusal is None, decision.refusal
    return decision


def running(state: InfusionState, at: datetime = T0) -> InfusionState:
    """Started, and every command of the start confirmed by the pump at `at`."""
    decision = started(state, at)
    current = decision.state
    rate = 0.0
    for command in decision.pump_commands:
        rate = command.rate_ml_h if isinstance(command, SetRate) else rate
        confirmed = CommandConfirmed(
            command_id=command.id,
            running=command.op == "start",
            rate_ml_h=rate,
            volume_infused_ml=0.0,
            vtbi_ml=command.volume_ml if isinstance(command, SetVtbi) else None,
        )
        step = decide(current, confirmed, at)
        assert step.refusal is None, step.refusal
        current = step.state
    return current


def reaction(state: InfusionState, grade: int, at: datetime) -> Decision:
    """A nurse reports a reaction (I1: the decision stops the pump first)."""
    decision = decide(
        state, ReactionReported(grade=grade, signs=frozenset({Sign.OTHER}), actor="nurse"), at
    )
    assert decision.refusal is None, decision.refusal
    return decision
