"""A restart keeps the volumes, in one process (L3, A4; issue 19, point 2).

A supervisor restarted from a stored state older than the pump's counter (quiet decisions are
saved at most every 10 s; the controller was down meanwhile) takes the pump's counter as given
when the pump did only what it was allowed to: no false over-infusion, also on a clinical clock
that saw none of the downtime (one that went on from the record, A7) or that is still behind the
record (a scaled bench clock started again). A power reset found on the restart programs no more
than the bag less the most the pump may have given.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from supervised_env import HOUR, supervised

from drivers.base import PumpState
from pumpctl.clock import VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.machine import InfusionState, MachineAlarm, ResumeRequested, StopPump

OVER = MachineAlarm.OVER_INFUSION.value


async def _quiet() -> None:
    """A settle step for the pump's clock once its controller is gone (nothing polls it)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def crash_at(env: Any, clock: VirtualClock, seconds: float) -> str:
    """Run a first infusion for `seconds` of clinical time; the state saved last before the
    crash. The pump's clock then moves on by itself (the crashed controller polls nothing)."""
    async with supervised(env, clock, start=True) as supervisor:
        await clock.advance(seconds)
        assert supervisor.state is not None
        stored = supervisor.state.to_json()
    clock.set_settle(_quiet)
    return stored


async def restarted(env: Any, clock: VirtualClock, stored: str) -> PumpSupervisor:
    """A supervisor on `clock` rebuilt from `stored` (A4), fed the pump's first read."""
    supervisor = PumpSupervisor(
        env.driver, clock, poll_interval_s=0.2, command_timeout_s=1.0, keep_decisions=True
    )
    supervisor.attach("inf-1", InfusionState.from_json(stored), recovered=True)
    supervisor.restarted(await env.driver.read_status())
    return supervisor


async def together(pump_clock: VirtualClock, clock: VirtualClock, seconds: int) -> None:
    """Move the pump's clock and the controller's on together, half a minute at a time."""
    for _ in range(seconds // 30):
        await pump_clock.advance(30)
        await clock.advance(30)


def stops_sent(supervisor: PumpSupervisor) -> int:
    return sum(isinstance(c, StopPump) for d in supervisor.decisions for c in d.commands)


async def test_L3_A4_a_restart_on_a_clock_from_the_record_keeps_the_pumps_volume(
    pump_env: Any, clock: VirtualClock
) -> None:
    """The last save is 10 min older than the pump's counter and the controller's clock went on
    from that record (A7): the pump, still at its step, gave 16.7 ml no bound saw. No false
    over-infusion, no stop, the link back, and the ladder goes on to 150 ml/h."""
    stored = await crash_at(pump_env, clock, HOUR + 1800)  # 100 ml/h, 30 min into the step
    await clock.advance(600)  # unsaved and unsupervised, the pump runs on at 100 ml/h
    record = InfusionState.from_json(stored)
    assert record.last_event_at is not None
    ours = VirtualClock(start=record.last_event_at)
    supervisor = await restarted(pump_env, ours, stored)
    async with Controller(ours, [supervisor]):
        await ours.advance(0)
        state = supervisor.state
        assert state is not None
        assert pump_env.model.status().volume_infused_ml > record.volume_bound_ml * 1.05 + 1
        assert OVER not in state.latched
        assert not state.link_lost
        assert stops_sent(supervisor) == 0
        assert pump_env.model.status().state is PumpState.RUNNING
        await together(clock, ours, 35 * 60)  # the 30 min left of the interval, and a bit
        state = supervisor.state
        assert OVER not in state.latched
        assert pump_env.model.status().rate_ml_h == 150.0
        assert stops_sent(supervisor) == 0


async def test_L3_A4_a_restart_on_a_clock_behind_the_record_waits_then_recovers(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A bench's scaled clock started again runs behind the stored record: the restart is
    refused ('now' before the last event) and tried again at each read until clinical time
    passes the record. Then it goes through: the link is back (never lost for good), the pump's
    counter is taken as given (no false over-infusion), and the ladder goes on."""
    stored = await crash_at(pump_env, clock, HOUR + 1800)
    record = InfusionState.from_json(stored)
    assert record.last_event_at is not None
    ours = VirtualClock(start=record.last_event_at - timedelta(minutes=10))
    supervisor = await restarted(pump_env, ours, stored)
    async with Controller(ours, [supervisor]):
        await ours.advance(0)
        assert supervisor.state is not None
        assert supervisor.state.link_lost  # not reconciled yet: still a lost link (A4)
        await together(clock, ours, 11 * 60)  # past the record: the restart goes through
        state = supervisor.state
        assert any(a.type == "restarted" for d in supervisor.decisions for a in d.audit)
        assert not state.link_lost
        assert OVER not in state.latched
        assert stops_sent(supervisor) == 0
        await together(clock, ours, 35 * 60)
        state = supervisor.state
        assert OVER not in state.latched
        assert pump_env.model.status().rate_ml_h == 150.0


async def test_L3_A4_a_power_reset_found_on_restart_programs_no_more_than_is_left(
    pump_env: Any, clock: VirtualClock
) -> None:
    """The pump ran on 10 min past the last save, then lost power while the controller was
    down. The resume programs at most the bag less what the pump really gave (the most it may
    have given since the save counts as given), never the bag less the volume saved."""
    stored = await crash_at(pump_env, clock, HOUR + 1800)
    await clock.advance(600)
    given = pump_env.model.status().volume_infused_ml
    assert given > InfusionState.from_json(stored).bag_infused_ml + 15
    pump_env.model.power_cycle()
    await clock.advance(60)
    supervisor = await restarted(pump_env, clock, stored)
    async with Controller(clock, [supervisor]):
        await clock.advance(0)
        state = supervisor.state
        assert state is not None
        assert state.delivered_ml >= given
        supervisor.submit(ResumeRequested(actor="nurse", no_reaction=True))
        await clock.advance(2)
        status = pump_env.model.status()
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 100.0)
        assert 0 < status.vtbi_ml <= state.bag_ml - given
