"""A4 in one process: a controller rebuilt from the stored state and the pump's real state goes on
(same step, no ladder restart, no rise because it restarted, nothing sent twice)."""

from __future__ import annotations

from typing import Any

import pytest
from supervised_env import HOUR, OTHER, supervised

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.history import CourseState
from pumpctl.core.machine import (
    InfusionPhase,
    InfusionState,
    MachineAlarm,
    ReactionReported,
    ResumeRequested,
    SetRate,
    Stop,
    TimePassed,
)


async def crash_at(env: Any, clock: VirtualClock, seconds: float) -> str:
    """Run a first infusion for `seconds` of clinical time; the stored state at the crash."""
    async with supervised(env, clock, start=True) as supervisor:
        await clock.advance(seconds)
        assert supervisor.state is not None
        return supervisor.state.to_json()


async def restarted(env: Any, clock: VirtualClock, stored: str) -> PumpSupervisor:
    supervisor = PumpSupervisor(
        env.driver, clock, poll_interval_s=0.2, command_timeout_s=1.0, keep_decisions=True
    )
    supervisor.attach("inf-1", InfusionState.from_json(stored), recovered=True)
    supervisor.restarted(await env.driver.read_status())
    return supervisor


def assert_resume_refused_naming_a4(supervisor: PumpSupervisor) -> None:
    """A4: a plain resume after a stop with no record why is refused until the nurse answers."""
    refused = supervisor.submit(ResumeRequested(actor="nurse"))
    assert refused.refusal is not None
    assert refused.refusal.rule == "A4"


async def test_A4_a_restart_while_the_pump_ran_on_keeps_the_step_and_never_rises(
    pump_env: Any, clock: VirtualClock
) -> None:
    stored = await crash_at(pump_env, clock, HOUR + 1800)  # at 100 ml/h, 30 min into the step
    await clock.advance(600)  # the controller is down for 10 min; the pump runs on at 100
    supervisor = await restarted(pump_env, clock, stored)
    async with Controller(clock, [supervisor]):
        await clock.advance(0)
        assert pump_env.model.status().rate_ml_h == 100.0
        sent = [c for d in supervisor.decisions for c in d.commands if isinstance(c, SetRate)]
        assert sent == []  # nothing sent again because it restarted
        await clock.advance(1500)
        assert pump_env.model.status().rate_ml_h == 100.0  # downtime is not running time (A4)
        await clock.advance(HOUR)
        assert pump_env.model.status().rate_ml_h == 150.0  # the ladder goes on, not from 50
        state = supervisor.state
        assert state is not None
        assert MachineAlarm.OVER_INFUSION.value not in state.latched


async def test_A4_a_pump_found_stopped_with_no_record_needs_the_nurses_answer(
    pump_env: Any, clock: VirtualClock
) -> None:
    stored = await crash_at(pump_env, clock, 2 * HOUR + 600)  # at 150 ml/h
    pump_env.model.stop()  # stopped while the controller was down: a lost reaction record?
    supervisor = await restarted(pump_env, clock, stored)
    async with Controller(clock, [supervisor]):
        await clock.advance(0)
        assert_resume_refused_naming_a4(supervisor)
        supervisor.submit(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
        await clock.advance(0)  # I1: the reaction's stop is sent and confirmed first (A3)
        supervisor.submit(ResumeRequested(actor="nurse"))
        await clock.advance(0)
        status = pump_env.model.status()
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 75.0)  # I2 applies


async def test_A4_I5_an_open_window_stays_armed_across_a_restart(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with supervised(pump_env, clock, start=True) as supervisor:
        await clock.advance(HOUR)
        supervisor.submit(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
        await clock.advance(1800)
        assert supervisor.state is not None
        stored = supervisor.state.to_json()
    await clock.advance(600)
    again = await restarted(pump_env, clock, stored)
    async with Controller(clock, [again]):
        await clock.advance(HOUR + 1200)
        assert again.state is not None
        assert again.state.phase is InfusionPhase.WITHDRAWN  # the window's end still withdraws
        assert again.state.course.withdrawn
        assert pump_env.model.state is not PumpState.RUNNING
    assert CourseState() != again.state.course


async def test_A4_a_recovered_state_counts_no_downtime_before_the_pumps_first_read(
    pump_env: Any, clock: VirtualClock
) -> None:
    stored = await crash_at(pump_env, clock, 1800)  # 30 min at 50 ml/h
    await clock.advance(2 * HOUR)  # down for 2 h
    supervisor = PumpSupervisor(pump_env.driver, clock, keep_decisions=True)
    supervisor.attach("inf-1", InfusionState.from_json(stored), recovered=True)
    decision = supervisor.submit(TimePassed())  # a deadline task's wake before the first read
    assert not any(isinstance(c, SetRate) for c in decision.commands)
    assert decision.state.running_min == pytest.approx(30.0)


async def test_A4_A3_a_stop_still_waiting_at_the_crash_is_sent_again_after_it(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with supervised(pump_env, clock, start=True) as supervisor:
        await clock.advance(HOUR + 600)
        pump_env.model.faults.no_reply = True  # the stop is sent but never lands
        supervisor.submit(Stop(reason="patient asked", actor="nurse"))
        assert supervisor.state is not None
        stored = supervisor.state.to_json()  # saved with the stop outstanding
    await pump_env.driver._finish_stops()
    pump_env.model.faults.no_reply = False
    assert pump_env.model.state is PumpState.RUNNING  # the stop never reached the pump
    again = await restarted(pump_env, clock, stored)
    async with Controller(clock, [again]):
        await clock.advance(0)
        await clock.advance(1)
        assert pump_env.model.state is not PumpState.RUNNING
        assert again.state is not None
        assert MachineAlarm.PUMP_NOT_STOPPED.value in again.state.latched


async def test_L3_A1_a_pump_that_lost_power_is_left_stopped_and_reprogrammed_on_the_resume(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A pump that lost power comes back stopped with its program and counter gone: read as a
    power reset (its counter went back and its VTBI is no longer the one programmed), not as a
    bad read; what it gave counts as given, an alarm asks for the nurse, and the resume
    programs the volume still to give before it runs at the rate before (A1)."""
    async with supervised(pump_env, clock, start=True) as supervisor:
        await clock.advance(HOUR + 1800)  # at 100 ml/h
        assert supervisor.state is not None
        given = supervisor.state.delivered_ml
        pump_env.model.power_cycle()
        await clock.advance(2)
        state = supervisor.state
        assert state is not None
        assert "pump_stopped_unexpectedly" in state.latched
        assert state.delivered_ml == pytest.approx(given, abs=0.5)  # nothing given is lost
        assert pump_env.model.status().state is PumpState.STOPPED  # never started by itself
        supervisor.submit(ResumeRequested(actor="nurse"))
        await clock.advance(2)
        status = pump_env.model.status()
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 100.0)
        assert status.vtbi_ml == pytest.approx(supervisor.state.bag_volume_ml, abs=0.5)
        assert status.vtbi_ml == pytest.approx(supervisor.state.bag_ml - given, abs=1.0)


async def test_A4_a_restart_that_finds_the_pump_power_cycled_asks_the_nurse(
    pump_env: Any, clock: VirtualClock
) -> None:
    """The gateway and the pump both lost power: the restart reads a power reset first (what
    was given counts), then a stop with no record why (A4: reaction or none?)."""
    stored = await crash_at(pump_env, clock, HOUR + 1800)
    pump_env.model.power_cycle()
    supervisor = await restarted(pump_env, clock, stored)
    async with Controller(clock, [supervisor]):
        await clock.advance(0)
        assert_resume_refused_naming_a4(supervisor)
        supervisor.submit(ResumeRequested(actor="nurse", no_reaction=True))
        await clock.advance(2)
        status = pump_env.model.status()
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 100.0)
        assert status.vtbi_ml > 0
