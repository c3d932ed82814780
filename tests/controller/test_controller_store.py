"""The controller records every decision in the store and rebuilds supervision from it (A3, A4)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from supervised_env import HOUR, OTHER, REVIEW

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.controller.recording import StoreRecorder, recover
from pumpctl.core.history import CourseState
from pumpctl.core.machine import InfusionPhase, ReactionReported, Start, initial_state
from pumpctl.store import Store, migrate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/pumpctl.db"
    migrate.upgrade(url)
    with Store.open(url) as opened:
        yield opened


def supervisor_of(env: Any, clock: VirtualClock, store: Store) -> PumpSupervisor:
    return PumpSupervisor(
        env.driver,
        clock,
        recorder=StoreRecorder(store, env.driver.pump_id, quiet_save_s=0.0),
        poll_interval_s=0.2,
        command_timeout_s=1.0,
    )


def planned_in(store: Store, env: Any, clock: VirtualClock) -> int:
    patient = store.create_patient("MRN-1", 70.0, actor="dr", at=clock.now())
    course = store.create_course(patient, "daratumumab", actor="dr", at=clock.now())
    state = initial_state(
        REVIEW, infusion_number=1, course=store.course_history(course), bag_prepared_at=clock.now()
    )
    return store.create_infusion(course, env.driver.pump_id, state, at=clock.now(), actor="dr")


async def test_A3_A4_every_decision_is_recorded_and_a_restart_goes_on_from_the_store(
    pump_env: Any, clock: VirtualClock, store: Store
) -> None:
    infusion = planned_in(store, pump_env, clock)
    first = supervisor_of(pump_env, clock, store)
    first.attach(str(infusion), store.load_infusion(infusion).state)
    async with Controller(clock, [first]):
        first.submit(Start(actor="nurse", course=CourseState()))
        await clock.advance(HOUR + 1800)
    # The controller is gone (no clean stop of the pump); what does the store know?
    types = [a.type for a in store.audit_of(infusion)]
    assert {"started", "confirmed_running", "rate_step"} <= set(types)
    assert store.command(f"{infusion}.1").fate == "confirmed"
    await clock.advance(600)  # down for 10 min; the pump runs on
    second = supervisor_of(pump_env, clock, store)
    async with Controller(clock, [second]):
        taken = await recover(store, {pump_env.driver.pump_id: second})
        assert taken == [str(infusion)]
        await clock.advance(1800 + 60)
        assert pump_env.model.status().rate_ml_h == 150.0  # same ladder, not restarted
        second.submit(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
        await clock.advance(0)
        assert pump_env.model.state is not PumpState.RUNNING
    stored = store.load_infusion(infusion)
    assert stored.state.phase is InfusionPhase.PAUSED
    assert [r.grade for r in store.reactions(infusion)] == [2]
    assert "restarted" in [a.type for a in store.audit_of(infusion)]
