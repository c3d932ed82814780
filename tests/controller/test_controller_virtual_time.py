"""Whole infusions through controller + driver + simulator on the virtual clock, over serial and
MQTT (issue: the controller; docs/architecture.md, "Time")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from memory_env import on_the_wire
from supervised_env import HOUR, OTHER, supervised

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller import PumpSupervisor
from pumpctl.core.history import CourseState
from pumpctl.core.machine import (
    InfusionPhase,
    ReactionReported,
    ResumeRequested,
    Start,
)

#: Whole infusions over each transport: the controller with a real driver and wire under it.
pytestmark = on_the_wire


def confirmed_rates(supervisor: PumpSupervisor) -> list[float]:
    assert supervisor.state is not None
    return [p.rate_ml_h for p in supervisor.state.rate_history]


async def test_L1_L3_the_first_infusion_completes_at_6_h_30_with_1000_ml(
    pump_env: Any, clock: VirtualClock
) -> None:
    start = clock.now()
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(0)
        assert pump_env.model.state is PumpState.RUNNING
        hourly = []
        for _ in range(4):
            hourly.append(pump_env.model.status().rate_ml_h)
            await clock.advance(HOUR)
        assert hourly == [50.0, 100.0, 150.0, 200.0]
        await clock.advance(2.5 * HOUR + 60)
        state = supervisor.state
        assert state is not None
        assert state.phase is InfusionPhase.COMPLETED
        assert pump_env.model.status().volume_infused_ml == pytest.approx(1000.0)
        completed = next(a for d in supervisor.decisions for a in d.audit if a.type == "completed")
        assert abs(completed.at - (start + timedelta(hours=6, minutes=30))) <= timedelta(minutes=1)
        assert confirmed_rates(supervisor) == [50.0, 100.0, 150.0, 200.0, 0.0]


async def test_I1_I2_a_reaction_stops_the_pump_and_the_resume_runs_at_half(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(2 * HOUR + 600)
        assert pump_env.model.status().rate_ml_h == 150.0
        supervisor.submit(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
        await clock.advance(0)
        assert pump_env.model.state is not PumpState.RUNNING
        assert supervisor.state is not None
        assert supervisor.state.phase is InfusionPhase.PAUSED
        await clock.advance(1200)
        assert pump_env.model.state is not PumpState.RUNNING  # I9: never resumed on its own
        supervisor.submit(ResumeRequested(actor="nurse"))
        await clock.advance(0)
        status = pump_env.model.status()
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 75.0)
        await clock.advance(HOUR)
        assert pump_env.model.status().rate_ml_h == 125.0  # +50 after a full hour (I2, L1)
