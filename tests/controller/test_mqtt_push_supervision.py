"""A supervisor over an MQTT pump that pushes its status (contract 2, interfaces.md section 2):
on the real clock its periodic looks are answered from the pushes, and A2 still holds when the
pushes stop; on the virtual clock every look asks, as before (clinical time there moves in no
wire time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from decided import link_lost_at, until
from mqtt_env import MqttEnv, mqtt_env
from supervised_env import REVIEW, supervised

from drivers.base import PumpState, PumpStatus
from pumpctl.clock import RealClock, VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.history import CourseState
from pumpctl.core.machine import InfusionPhase, MachineAlarm, Start, initial_state

pytestmark = pytest.mark.mosquitto

#: Wire bound on what a test waits for.
WIRE_BOUND_S = 20.0
#: The supervisor's looks watched while the pump beats (its poller looks every 0.2 s).
LOOKS = 15


@asynccontextmanager
async def running_on_the_real_clock(env: MqttEnv) -> AsyncIterator[PumpSupervisor]:
    """A first infusion started on `env`'s pump by a supervisor on the real clock, running."""
    clock = RealClock()
    supervisor = PumpSupervisor(env.driver, clock, poll_interval_s=0.2, command_timeout_s=1.0)
    state = initial_state(
        REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=clock.now()
    )
    supervisor.attach("inf-1", state)
    async with Controller(clock, [supervisor]):
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await until(
            supervisor,
            lambda s: s.status is not None and s.status.state is PumpState.RUNNING,
            WIRE_BOUND_S,
        )
        yield supervisor


def counted_looks(env: MqttEnv) -> asyncio.Event:
    """Count the supervisor's looks (`fresh_status` calls); the event is set at the LOOKS-th."""
    pump = env.driver
    looked = asyncio.Event()
    looks = 0
    look = pump.fresh_status

    async def counted() -> PumpStatus:
        nonlocal looks
        looks += 1
        if looks == LOOKS:
            looked.set()
        return await look()

    pump.fresh_status = counted  # type: ignore[method-assign]
    return looked


async def test_the_poller_listens_to_the_heartbeat_instead_of_asking(
    clock: VirtualClock, broker
) -> None:
    """A running pump that beats every 0.5 s: on the real clock the supervisor's periodic looks
    (every 0.2 s) are answered from the pushes; before contract 2 each look was a `status`."""
    async with (
        mqtt_env(clock, broker, heartbeat_s=0.5) as env,
        running_on_the_real_clock(env) as supervisor,
    ):
        assert env.model.state is PumpState.RUNNING
        looked = counted_looks(env)
        asked = env.server.executed["status"]
        async with asyncio.timeout(WIRE_BOUND_S):
            await looked.wait()
        # A beat a loaded machine delays past 1.5 beats is overdue, and asking then is right;
        # one ask per look would be 15.
        assert env.server.executed["status"] - asked <= 2
        assert supervisor.link_up
        assert supervisor.state is not None
        assert not supervisor.state.link_lost
        assert supervisor.state.phase is InfusionPhase.RUNNING


async def test_on_the_virtual_clock_every_look_asks(clock: VirtualClock, broker) -> None:
    """Clinical time that moves in no wire time (or faster than it) cannot be answered from a
    push: every look reads the pump at that instant, as before contract 2."""
    async with (
        mqtt_env(clock, broker, heartbeat_s=0.5) as env,
        supervised(env, clock, start=True) as supervisor,
    ):
        assert env.model.state is PumpState.RUNNING
        looked = asyncio.Event()
        reads = 0
        read = env.driver.read_status

        async def counted(*, command_id: str | None = None) -> PumpStatus:
            nonlocal reads
            reads += 1
            if reads == LOOKS:
                looked.set()
            return await read(command_id=command_id)

        asked = env.server.executed["status"]
        env.driver.read_status = counted  # type: ignore[method-assign]
        async with asyncio.timeout(WIRE_BOUND_S):
            await looked.wait()
        assert env.server.executed["status"] - asked >= LOOKS - 1  # each look asked
        assert supervisor.link_up


async def test_A2_a_pump_whose_heartbeat_stops_is_communication_loss_within_the_link_timeout(
    clock: VirtualClock, broker
) -> None:
    """The pump hangs (no beat, no answer): its status is overdue first and asked for (in
    vain), and A2's communication loss is raised once the link timeout has passed since the
    last contact, not before it, and within one watchdog period after it."""
    link_timeout_s = 1.0
    async with (
        mqtt_env(clock, broker, heartbeat_s=0.2, link_timeout_s=link_timeout_s) as env,
        running_on_the_real_clock(env) as supervisor,
    ):
        pump = env.driver
        asks = pump.asks
        env.model.faults.no_reply = True  # silent from now on
        lost_at = await link_lost_at(supervisor, WIRE_BOUND_S)
        contact = pump.last_contact
        assert contact is not None
        since_contact = lost_at - contact
        period = min(0.5, link_timeout_s / 4)  # the watchdog's (supervisor.py)
        assert since_contact > link_timeout_s
        assert since_contact <= link_timeout_s + period + 0.5  # + a loaded machine's lag
        assert pump.asks > asks  # the overdue status was asked for, unanswered
        assert supervisor.state is not None
        assert MachineAlarm.COMM_LOSS.value in supervisor.state.latched
        env.model.faults.no_reply = False
