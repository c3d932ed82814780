"""The link watchdog (A2) of a supervisor whose pump keeps in contact: it looks again only when
the link could first be lost (the last contact a link timeout old), not every period for
nothing (at 1,000 pumps, 2,000 wake-ups a second), and a silent pump is still communication
loss once the link timeout has passed since its last contact."""

from __future__ import annotations

import asyncio

import pytest
from decided import link_lost_at, until
from mqtt_env import mqtt_env
from supervised_env import REVIEW

from drivers.base import PumpState, PumpStatus
from pumpctl.clock import RealClock, VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.history import CourseState
from pumpctl.core.machine import MachineAlarm, Start, initial_state

pytestmark = pytest.mark.mosquitto

#: Wire bound on what a test waits for.
WIRE_BOUND_S = 20.0
LINK_TIMEOUT_S = 1.0
#: The poller's looks watched while the pump beats (one every 0.1 s: about 2 s).
LOOKS = 20


async def test_A2_a_live_links_watchdog_looks_at_its_earliest_loss_not_every_period(
    clock: VirtualClock, broker
) -> None:
    async with mqtt_env(clock, broker, heartbeat_s=0.2, link_timeout_s=LINK_TIMEOUT_S) as env:
        real = RealClock()
        supervisor = PumpSupervisor(env.driver, real, poll_interval_s=0.1, command_timeout_s=1.0)
        supervisor.attach(
            "inf-1",
            initial_state(
                REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=real.now()
            ),
        )
        pump = env.driver
        loop = asyncio.get_running_loop()
        async with Controller(real, [supervisor]):
            supervisor.submit(Start(actor="nurse", course=CourseState()))
            await until(
                supervisor,
                lambda s: s.status is not None and s.status.state is PumpState.RUNNING,
                WIRE_BOUND_S,
            )
            # the watchdog's looks (it is the only caller of `is_stale` here) over LOOKS looks
            # of the poller, the pump beating every 0.2 s
            watched, looks = 0, 0
            looked = asyncio.Event()
            is_stale, fresh_status = pump.is_stale, pump.fresh_status

            def stale(now: float | None = None) -> bool:
                nonlocal watched
                watched += 1
                return is_stale(now)

            async def look() -> PumpStatus:
                nonlocal looks
                looks += 1
                if looks == LOOKS:
                    looked.set()
                return await fresh_status()

            pump.is_stale = stale  # type: ignore[method-assign]
            pump.fresh_status = look  # type: ignore[method-assign]
            began = loop.time()
            async with asyncio.timeout(WIRE_BOUND_S):
                await looked.wait()
            took = loop.time() - began
            period = min(0.5, LINK_TIMEOUT_S / 4)  # what it looked every before
            assert supervisor.link_up
            # before: one look per period (about took / period, 8 in 2 s); now one per link
            # timeout at most (the contact renewed meanwhile), plus the one under way
            assert watched <= took / (LINK_TIMEOUT_S - 0.4) + 1, (watched, took)
            assert watched < took / period - 1, (watched, took)

            # silent from now on: communication loss once the link timeout has passed since
            # the last contact, not before it, and no later than a period after it
            env.model.faults.no_reply = True
            lost_at = await link_lost_at(supervisor, WIRE_BOUND_S)
            contact = pump.last_contact
            assert contact is not None
            assert lost_at - contact > LINK_TIMEOUT_S
            assert lost_at - contact <= LINK_TIMEOUT_S + period + 0.5  # + a loaded machine's lag
            assert supervisor.state is not None
            assert MachineAlarm.COMM_LOSS.value in supervisor.state.latched
            env.model.faults.no_reply = False
