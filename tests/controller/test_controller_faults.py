"""The controller under what a hospital produces: a pump that does not answer, a lost link, a pump
alarm, a stop racing a queued step (A1, A2, A3, I1, I9)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import decided
import pytest
from decided import fate_of
from memory_env import on_the_wire
from supervised_env import HOUR, OTHER, supervised

from drivers.base import Alarm, PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller import PumpSupervisor
from pumpctl.core.history import CourseState
from pumpctl.core.machine import (
    CommandConfirmed,
    CommandUnconfirmed,
    InfusionPhase,
    MachineAlarm,
    ReactionReported,
    ResumeRequested,
    SetRate,
    Start,
    StopPump,
)

#: Wire bound on what a test waits for (the driver's stop worst case is well inside it).
WIRE_BOUND_S = 20.0


def running_pump(supervisor: PumpSupervisor) -> bool:
    return supervisor.status is not None and supervisor.status.state is PumpState.RUNNING


def latched(supervisor: PumpSupervisor) -> frozenset[str]:
    assert supervisor.state is not None
    return supervisor.state.latched


async def until(supervisor: PumpSupervisor, condition: Callable[[PumpSupervisor], bool]) -> None:
    """Wait (wire time, bounded) until `condition(supervisor)` holds after a decision."""
    await decided.until(supervisor, condition, WIRE_BOUND_S)


async def idle(supervisor: PumpSupervisor) -> None:
    """Wait (wire time, bounded) until no command is queued or in flight."""
    async with asyncio.timeout(WIRE_BOUND_S):
        await supervisor.wait_idle()


def the_stop(decision: Any) -> int:
    return next(c.id for c in decision.pump_commands if isinstance(c, StopPump))


async def test_A3_I9_a_pump_that_does_not_answer_the_stop_is_the_loudest_alarm(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(2 * HOUR + 600)
        pump_env.model.faults.no_reply = True
        reaction = supervisor.submit(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
        fate = await fate_of(supervisor, the_stop(reaction), WIRE_BOUND_S)
        assert isinstance(fate, CommandUnconfirmed)
        assert MachineAlarm.PUMP_NOT_STOPPED.value in latched(supervisor)
        assert pump_env.model.state is PumpState.RUNNING  # the pump really did not stop
        refused = supervisor.submit(ResumeRequested(actor="nurse"))
        assert refused.refusal is not None
        assert refused.refusal.rule == "A3"
        # The fault clears: the next contact shows it running, the stop goes again and lands.
        pump_env.model.faults.no_reply = False
        await until(
            supervisor, lambda s: s.status is not None and s.status.state is not PumpState.RUNNING
        )
        await until(supervisor, lambda s: s.state is not None and not s.state.stop_outstanding)
        resumed = supervisor.submit(ResumeRequested(actor="nurse"))
        assert resumed.refusal is None
        await clock.advance(0)
        assert pump_env.model.status().rate_ml_h == 75.0


@on_the_wire  # the link lost over each transport, and found again
async def test_A2_a_lost_link_latches_comm_loss_and_reconnection_reads_the_real_state(
    pump_env: Any, clock: VirtualClock
) -> None:
    pump_env.driver.link_timeout_s = 1.0
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(1800)
        await pump_env.break_link()
        await until(supervisor, lambda s: s.state is not None and s.state.link_lost)
        assert MachineAlarm.COMM_LOSS.value in latched(supervisor)
        await clock.advance(HOUR)  # escalation suspended while the link is lost (A2)
        await pump_env.restore_link()
        await until(supervisor, lambda s: s.state is not None and not s.state.link_lost)
        assert pump_env.model.status().rate_ml_h == 50.0  # never sped up because it came back
        assert supervisor.state is not None
        assert supervisor.state.rate_ml_h == 50.0


async def test_A1_a_pump_alarm_suspends_escalation_and_only_a_resume_runs_it_at_the_same_rate(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(HOUR + 600)  # at 100 ml/h
        pump_env.model.raise_alarm(Alarm.OCCLUSION)
        await clock.advance(HOUR)
        assert supervisor.state is not None
        assert "occlusion" in supervisor.state.alarms
        pump_env.model.clear_alarm(Alarm.OCCLUSION)
        await clock.advance(60)
        assert pump_env.model.state is PumpState.STOPPED  # cleared, never restarted by itself
        cleared = supervisor.clear_alarm("occlusion", actor="nurse", role="nurse")
        assert cleared.refusal is None
        await clock.advance(60)
        assert pump_env.model.state is PumpState.STOPPED  # a clear never starts the pump
        supervisor.submit(ResumeRequested(actor="nurse"))
        await clock.advance(0)
        status = pump_env.model.status()
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 100.0)


async def test_I1_a_stop_cancels_what_is_still_queued(pump_env: Any, clock: VirtualClock) -> None:
    """A reaction while the start's commands are still queued: the run is never sent."""
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        supervisor.submit(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        await clock.advance(0)
        await idle(supervisor)
        assert pump_env.model.state is not PumpState.RUNNING
        assert pump_env.model.status().volume_infused_ml == 0.0
        dropped = [a for d in supervisor.decisions for a in d.audit if a.type == "command_denied"]
        assert {a.data["op"] for a in dropped} >= {"start"}
        assert supervisor.state is not None
        assert supervisor.state.phase is InfusionPhase.PAUSED
        assert supervisor.state.outstanding == ()


async def test_logs_one_line_per_command_fate_and_decision_with_ids(
    pump_env: Any, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pumpctl.controller")
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(HOUR + 1)
    lines = [r.getMessage() for r in caplog.records if r.name == "pumpctl.controller"]
    assert any(
        line.startswith("command pump=") and "infusion=inf-1 command=inf-1." in line
        for line in lines
    )
    assert any(line.startswith("fate ") and "fate=command_confirmed" in line for line in lines)
    assert any(line.startswith("decision ") and "rule=L1" in line for line in lines)
    steps = [d for d in supervisor.decisions for c in d.commands if isinstance(c, SetRate)]
    assert len(steps) == 2  # the start and the first step


async def test_I1_the_stop_leaves_before_the_decision_is_written_to_the_store(
    pump_env: Any, clock: VirtualClock
) -> None:
    """Architecture, "one press": the stop never waits for the disk."""
    order: list[str] = []
    async with supervised(pump_env, clock, start=True) as supervisor:
        await clock.advance(HOUR)
        real_stop = pump_env.driver.stop

        async def observed_stop(**kwargs: Any) -> Any:
            order.append("stop")
            return await real_stop(**kwargs)

        def recorder(infusion_id: str, event: Any, decision: Any) -> None:
            if isinstance(event, ReactionReported):
                order.append("record")

        pump_env.driver.stop = observed_stop
        supervisor.recorder = recorder
        supervisor.submit(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        await idle(supervisor)
    assert order[:2] == ["stop", "record"]


async def test_a_failing_store_does_not_end_supervision(
    pump_env: Any, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(infusion_id: str, event: Any, decision: Any) -> None:
        raise OSError("disk full")

    async with supervised(pump_env, clock, start=True) as supervisor:
        supervisor.recorder = broken
        await clock.advance(HOUR + 60)
        assert pump_env.model.status().rate_ml_h == 100.0  # the ladder goes on
        supervisor.submit(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        await clock.advance(0)
        assert pump_env.model.state is not PumpState.RUNNING
    assert any("not recorded" in r.getMessage() for r in caplog.records)


async def test_A2_bad_reads_only_are_no_valid_status_and_lose_the_link(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A2: a pump whose volume counter went back (cleared on its own keypad) under the same
    VTBI answers, but every read is a bad read: no valid status for longer than the link
    timeout is a lost link (comm_loss, escalation suspended, no resume)."""
    pump_env.driver.link_timeout_s = 1.0
    async with supervised(pump_env, clock) as supervisor:
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(1800)
        reaction = supervisor.submit(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        fate = await fate_of(supervisor, the_stop(reaction), WIRE_BOUND_S)
        assert isinstance(fate, CommandConfirmed)
        assert supervisor.state is not None
        assert not supervisor.state.stop_outstanding
        pump_env.model.clear_volume()  # counter back to 0, the VTBI as programmed
        await until(supervisor, lambda s: s.state is not None and s.state.link_lost)
        assert MachineAlarm.COMM_LOSS.value in latched(supervisor)
        assert supervisor.link_up is False
        assert pump_env.model.status().state is not PumpState.RUNNING
        refused = supervisor.submit(ResumeRequested(actor="nurse"))
        assert refused.refusal is not None
        assert refused.refusal.rule == "A2"
