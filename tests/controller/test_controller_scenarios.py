"""Every reaction rule end to end, and later infusions' rows from the recorded history, through
controller + driver + simulator in virtual time (docs/clinical-rules.md, L4, L5, I1-I11)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import pytest
from supervised_env import HOUR, OTHER, REVIEW, supervised

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.history import CourseState, Sign
from pumpctl.core.machine import (
    BagReplaced,
    InfusionPhase,
    InfusionState,
    ReactionReported,
    Reassessed,
    Resolved,
    ResumeRequested,
    Start,
    Stop,
    infusion_record,
    initial_state,
)
from pumpctl.core.protocol import Protocol
from pumpctl.protocols import load_protocol

LABEL = load_protocol("daratumumab-label")
EDEMA = frozenset({Sign.LARYNGEAL_EDEMA})
SPASM = frozenset({Sign.BRONCHOSPASM})


def infusion(
    env: Any,
    clock: VirtualClock,
    *,
    number: int = 1,
    course: CourseState | None = None,
    protocol: Protocol = REVIEW,
) -> AbstractAsyncContextManager[PumpSupervisor]:
    """Infusion `number` of `course`, started and supervised on `env`'s pump."""
    return supervised(env, clock, number=number, course=course, protocol=protocol, start=True)


def state_of(supervisor: PumpSupervisor) -> InfusionState:
    assert supervisor.state is not None
    return supervisor.state


def completed_at_min(supervisor: PumpSupervisor, started: Any) -> float:
    done = next(a for d in supervisor.decisions for a in d.audit if a.type == "completed")
    return (done.at - started).total_seconds() / 60


async def run_to_completion(supervisor: PumpSupervisor, clock: VirtualClock) -> None:
    for _ in range(12):
        if state_of(supervisor).terminal:
            return
        await clock.advance(HOUR)


async def test_L4_L5_L6_later_infusions_take_their_rows_from_the_recorded_history(
    pump_env: Any, clock: VirtualClock
) -> None:
    """Infusions 1, 2, 3 with no reaction: 6 h 30, 4 h, 3 h 30 (L6: never under 210 min)."""
    course = CourseState()
    durations = []
    for number in (1, 2, 3):
        started = clock.now()
        async with infusion(pump_env, clock, number=number, course=course) as supervisor:
            await run_to_completion(supervisor, clock)
            state = state_of(supervisor)
            assert state.phase is InfusionPhase.COMPLETED
            durations.append(completed_at_min(supervisor, started))
            course = course.model_copy(
                update={"infusions": (*course.infusions, infusion_record(state))}
            )
        pump_env.model.clear_volume()  # the next bag on the same pump
        await clock.advance(24 * HOUR)
    assert durations[0] == pytest.approx(390, abs=1)
    assert durations[1] == pytest.approx(240, abs=1)
    assert 210 <= durations[2] <= 211


async def test_L4_a_reaction_in_the_first_3_hours_gives_infusion_2_the_first_row(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock) as supervisor:
        await clock.advance(2 * HOUR)
        supervisor.submit(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        await clock.advance(600)
        supervisor.submit(ResumeRequested(actor="nurse"))
        await run_to_completion(supervisor, clock)
        record = infusion_record(state_of(supervisor))
    second = initial_state(
        REVIEW,
        infusion_number=2,
        course=CourseState(infusions=(record,)),
        bag_prepared_at=clock.now(),
    )
    assert (second.bag_ml, second.initial_rate_ml_h) == (1000.0, 50.0)


async def test_I3_grade_2_laryngeal_edema_withdraws(pump_env: Any, clock: VirtualClock) -> None:
    async with infusion(pump_env, clock) as supervisor:
        await clock.advance(HOUR + 60)
        supervisor.submit(ReactionReported(grade=2, signs=EDEMA, actor="nurse"))
        await clock.advance(0)
        state = state_of(supervisor)
        assert state.phase is InfusionPhase.WITHDRAWN
        assert state.course.withdrawn
        assert pump_env.model.state is not PumpState.RUNNING


async def test_I4_bronchospasm_not_resolved_in_6_h_withdraws_resolved_in_time_resumes(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock) as supervisor:
        await clock.advance(HOUR + 60)
        supervisor.submit(ReactionReported(grade=2, signs=SPASM, actor="nurse"))
        await clock.advance(HOUR)
        assert supervisor.submit(ResumeRequested(actor="nurse")).refusal is not None
        supervisor.submit(Resolved(actor="nurse"))
        supervisor.submit(ResumeRequested(actor="nurse"))
        await clock.advance(0)
        assert pump_env.model.status().rate_ml_h == 50.0  # half of 100 (I2)
        assert pump_env.model.state is PumpState.RUNNING
    pump_env.model.stop()
    pump_env.model.clear_volume()
    async with infusion(pump_env, clock, number=1) as supervisor:
        await clock.advance(HOUR + 60)
        supervisor.submit(ReactionReported(grade=2, signs=SPASM, actor="nurse"))
        await clock.advance(6 * HOUR)
        assert state_of(supervisor).phase is InfusionPhase.WITHDRAWN


@pytest.mark.parametrize("stopped_between", [False, True])
async def test_I5_grade_3_not_downgraded_in_2_h_withdraws(
    pump_env: Any, clock: VirtualClock, stopped_between: bool
) -> None:
    """Also when the nurse stopped the infusion in between (Clarifications I4, I5)."""
    async with infusion(pump_env, clock) as supervisor:
        await clock.advance(2 * HOUR + 60)
        supervisor.submit(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
        await clock.advance(1800)
        if stopped_between:
            supervisor.submit(Stop(reason="patient unwell", actor="nurse"))
        await clock.advance(2 * HOUR)
        state = state_of(supervisor)
        assert state.course.withdrawn
        expected = InfusionPhase.STOPPED if stopped_between else InfusionPhase.WITHDRAWN
        assert state.phase is expected
        assert pump_env.model.state is not PumpState.RUNNING


async def test_I5_I2_grade_3_downgraded_in_the_window_resumes_at_half(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock) as supervisor:
        await clock.advance(2 * HOUR + 60)
        supervisor.submit(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
        await clock.advance(1800)
        supervisor.submit(Reassessed(grade=2, signs=OTHER, actor="nurse"))
        assert supervisor.submit(ResumeRequested(actor="nurse")).refusal is None
        await clock.advance(0)
        assert pump_env.model.status().rate_ml_h == 75.0


async def test_I6_a_third_grade_3_in_the_course_withdraws(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock) as supervisor:
        for _ in range(2):
            await clock.advance(1800)
            supervisor.submit(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
            await clock.advance(600)
            supervisor.submit(Reassessed(grade=1, signs=OTHER, actor="nurse"))
            supervisor.submit(ResumeRequested(actor="nurse"))
            await clock.advance(0)
        await clock.advance(1800)
        supervisor.submit(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
        await clock.advance(0)
        assert state_of(supervisor).phase is InfusionPhase.WITHDRAWN


async def test_I7_grade_4_under_the_label_variant_withdraws_at_once(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock, protocol=LABEL) as supervisor:
        await clock.advance(HOUR)
        supervisor.submit(ReactionReported(grade=4, signs=OTHER, actor="nurse"))
        await clock.advance(0)
        assert state_of(supervisor).phase is InfusionPhase.WITHDRAWN


async def test_I8_a_withdrawn_course_refuses_the_next_start(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock) as supervisor:
        await clock.advance(HOUR)
        supervisor.submit(ReactionReported(grade=2, signs=EDEMA, actor="nurse"))
        await clock.advance(0)
        course = state_of(supervisor).course
    assert course.withdrawn
    with pytest.raises(ValueError, match="I8"):
        initial_state(REVIEW, infusion_number=2, course=course, bag_prepared_at=clock.now())


async def test_I9_I1_I10_the_pump_stays_stopped_until_a_nurse_resumes_and_the_onset_is_kept(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock) as supervisor:
        await clock.advance(2 * HOUR + 1800)
        onset = clock.now() - timedelta(minutes=20)
        supervisor.submit(ReactionReported(grade=1, signs=OTHER, onset_at=onset, actor="nurse"))
        await clock.advance(3 * HOUR)
        assert pump_env.model.state is not PumpState.RUNNING
        reaction = state_of(supervisor).reaction
        assert reaction is not None
        assert reaction.onset_at == onset
        assert reaction.running_min == pytest.approx(130, abs=0.1)


async def test_I11_a_reaction_after_completion_moves_no_pump_and_counts(
    pump_env: Any, clock: VirtualClock
) -> None:
    async with infusion(pump_env, clock, number=1) as supervisor:
        await run_to_completion(supervisor, clock)
        await clock.advance(24 * HOUR)
        decision = supervisor.submit(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
        assert decision.pump_commands == ()
        record = infusion_record(state_of(supervisor))
    assert record.reactions[-1].after_completion


async def test_L9_the_bag_expires_at_15_h_and_a_new_bag_continues_the_same_step(
    pump_env: Any, clock: VirtualClock
) -> None:
    course = CourseState()
    supervisor = PumpSupervisor(
        pump_env.driver, clock, poll_interval_s=0.2, command_timeout_s=1.0, keep_decisions=True
    )
    prepared = clock.now() - timedelta(hours=14, minutes=30)  # 30 min of stability left
    state = initial_state(REVIEW, infusion_number=1, course=course, bag_prepared_at=prepared)
    supervisor.attach("inf-1", state)
    async with Controller(clock, [supervisor]):
        supervisor.submit(Start(actor="nurse", course=course))
        await clock.advance(1800 + 60)
        assert state_of(supervisor).bag_expired
        assert pump_env.model.state is not PumpState.RUNNING  # L9: stopped at 15 h
        given = pump_env.model.status().volume_infused_ml
        supervisor.submit(BagReplaced(prepared_at=clock.now(), actor="nurse"))
        await clock.advance(0)
        status = pump_env.model.status()
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 50.0)  # the same step
        assert status.vtbi_ml == pytest.approx(1000.0 - given, abs=0.1)  # what is left
        assert status.volume_infused_ml < 1.0  # the counter was cleared for the new bag
