"""The independent safety envelope catches a deliberately broken decide() (L1, L2, I1, I9, A2)."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from decided import until
from supervised_env import HOUR, OTHER, Decide, supervised

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller import PumpSupervisor
from pumpctl.controller.envelope import SafetyEnvelope
from pumpctl.core.history import CourseState
from pumpctl.core.limits import Limit, constrain
from pumpctl.core.machine import (
    Decision,
    Event,
    InfusionState,
    ReactionReported,
    ResumeRequested,
    SetRate,
    Start,
    StopPump,
    TimePassed,
    decide,
)
from pumpctl.core.rules import Rule

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
BROKEN_BOUND_S = 20.0


def overdosing(state: InfusionState, event: Event, now: datetime) -> Decision:
    """A decide() whose every commanded rate is 300 ml/h."""
    d = decide(state, event, now)
    commands = tuple(
        dataclasses.replace(c, rate_ml_h=300.0) if isinstance(c, SetRate) else c for c in d.commands
    )
    return dataclasses.replace(d, commands=commands)


def hasty(state: InfusionState, event: Event, now: datetime) -> Decision:
    """A decide() that steps up +50 ml/h whenever time passes, interval or not."""
    d = decide(state, event, now)
    if isinstance(event, TimePassed) and d.state.pump_running:
        rate = d.state.rate_ml_h + 50.0
        chain = constrain([Limit(Rule.L1, rate, "hasty")], 0.1)
        step = SetRate(d.state.next_command_id, rate, chain)
        return dataclasses.replace(d, commands=(*d.commands, step))
    return d


def forgetful(state: InfusionState, event: Event, now: datetime) -> Decision:
    """A decide() that forgets to stop the pump for a reaction."""
    d = decide(state, event, now)
    if isinstance(event, ReactionReported):
        return dataclasses.replace(
            d, commands=tuple(c for c in d.commands if not isinstance(c, StopPump))
        )
    return d


def broken(
    env: Any, clock: VirtualClock, decide_fn: Decide
) -> AbstractAsyncContextManager[PumpSupervisor]:
    return supervised(env, clock, decide_fn=decide_fn)


async def tripped(supervisor: PumpSupervisor) -> None:
    await until(
        supervisor,
        lambda s: s.state is not None and "safety_envelope" in s.state.latched,
        BROKEN_BOUND_S,
    )
    async with asyncio.timeout(BROKEN_BOUND_S):
        await supervisor.wait_idle()


def assert_stopped_for_a_clinician(env: Any, supervisor: PumpSupervisor) -> None:
    assert env.model.state is not PumpState.RUNNING
    assert supervisor.submit(ResumeRequested(actor="nurse")).refusal is not None
    nurse = supervisor.clear_alarm("safety_envelope", actor="nurse", role="nurse")
    assert nurse.refusal is not None
    clinician = supervisor.clear_alarm("safety_envelope", actor="dr", role="clinician")
    assert clinician.refusal is None
    assert env.model.state is not PumpState.RUNNING  # a clear never starts the pump


async def test_L2_an_overdosing_decide_never_reaches_the_pump(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with broken(pump_env, clock, overdosing) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await tripped(supervisor)
        assert pump_env.model.status().rate_ml_h != 300.0
        assert_stopped_for_a_clinician(pump_env, supervisor)


async def test_L1_a_hasty_decide_is_stopped_at_its_first_early_rise(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with broken(pump_env, clock, hasty) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(600)
        supervisor.submit(TimePassed())
        await tripped(supervisor)
        assert pump_env.model.status().rate_ml_h == 50.0
        assert_stopped_for_a_clinician(pump_env, supervisor)


async def test_I1_I9_a_decide_that_forgets_the_reactions_stop_is_caught(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with broken(pump_env, clock, forgetful) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(HOUR)
        supervisor.submit(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        await clock.advance(0)  # the next read-back shows it running
        await tripped(supervisor)
        assert_stopped_for_a_clinician(pump_env, supervisor)


def envelope() -> SafetyEnvelope:
    return SafetyEnvelope(max_rate_ml_h=200.0, interval=timedelta(hours=1), command_timeout_s=2.0)


def test_L1_L2_the_envelope_alone_judges_commands_on_raw_numbers() -> None:
    e = envelope()
    assert e.command(50.0, T0) is None
    assert e.read_back(running=True, rate_ml_h=50.0, at=T0, wire=0.0) is None
    assert e.command(100.0, T0 + timedelta(minutes=56)) is not None  # too early
    assert e.command(100.0, T0 + timedelta(minutes=58)) is None  # within its timing tolerance
    e = envelope()
    e.read_back(running=True, rate_ml_h=50.0, at=T0, wire=0.0)
    assert e.command(100.0, T0 + timedelta(minutes=60)) is None
    trip = e.command(250.0, T0 + timedelta(hours=5))
    assert trip is not None
    assert trip.rule == "L2"


def test_I9_A2_the_envelope_judges_read_backs() -> None:
    e = envelope()
    e.command(50.0, T0)
    e.read_back(running=True, rate_ml_h=50.0, at=T0, wire=0.0)
    # Above the command but within the maximum: A2's reconcile first, the envelope after 2 s.
    assert e.read_back(running=True, rate_ml_h=80.0, at=T0, wire=10.0) is None
    assert e.read_back(running=True, rate_ml_h=80.0, at=T0, wire=11.5) is None
    trip = e.read_back(running=True, rate_ml_h=80.0, at=T0, wire=12.5)
    assert trip is not None
    assert trip.rule == "A2"
    e = envelope()
    e.reaction_reported()
    e.stop_sent()  # a stop sent and not yet confirmed is A3's, not the envelope's
    assert e.read_back(running=True, rate_ml_h=50.0, at=T0, wire=0.05) is None
    e.reaction_reported()
    assert e.read_back(running=False, rate_ml_h=0.0, at=T0, wire=0.0) is None
    trip = e.read_back(running=True, rate_ml_h=50.0, at=T0, wire=0.1)
    assert trip is not None
    assert trip.rule == "I9"
    e.tripped = None
    e.resume_requested(T0 + timedelta(minutes=30))
    assert e.read_back(running=True, rate_ml_h=25.0, at=T0, wire=1.0) is None


@pytest.mark.parametrize("rate", [200.1, 1000.0])
def test_L2_a_read_back_above_the_maximum_trips(rate: float) -> None:
    trip = envelope().read_back(running=True, rate_ml_h=rate, at=T0, wire=0.0)
    assert trip is not None
    assert trip.rule == "L2"
