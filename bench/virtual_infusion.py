"""Benchmark: wall time of a whole first infusion (6 h 30 min of clinical time) in virtual time.

Through the controller, the driver and the simulator (serial over a pseudo-terminal, and MQTT
through a private Mosquitto), next to the floor measured in the same run: the rules core alone
driving the simulator's pump model with no transport and no controller. Prints figures; it
asserts nothing. Goal (issue 8): under 1 s of wall time per infusion. Run from the checkout:

    .venv/bin/python bench/virtual_infusion.py [--n 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stop_latency import mosquitto

from drivers.base import Pump
from drivers.mqtt import MqttPump
from drivers.serial import SerialLine, SerialPump
from pumpctl.clock import VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.history import CourseState
from pumpctl.core.machine import (
    ClearVolume,
    CommandConfirmed,
    InfusionPhase,
    PumpCompleted,
    Run,
    SetRate,
    SetVtbi,
    Start,
    StopPump,
    TimePassed,
    decide,
    initial_state,
    next_deadline,
)
from pumpctl.protocols import load_protocol
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer
from simulator.serial_server import SerialSimulator

REVIEW = load_protocol("daratumumab")
INFUSION = timedelta(hours=7)


async def through_controller(pump: Pump, clock: VirtualClock) -> float:
    """Seconds of wall time for a first infusion through controller + driver + simulator."""
    supervisor = PumpSupervisor(pump, clock, keep_decisions=False)
    state = initial_state(
        REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=clock.now()
    )
    supervisor.attach("bench", state)
    t0 = time.perf_counter()
    async with Controller(clock, [supervisor]):
        supervisor.submit(Start(actor="bench", course=CourseState()))
        await clock.advance(INFUSION.total_seconds())
    elapsed = time.perf_counter() - t0
    assert supervisor.state is not None
    if supervisor.state.phase is not InfusionPhase.COMPLETED:
        raise SystemExit(f"the infusion did not complete: {supervisor.state.phase}")
    return elapsed


def core_alone() -> float:
    """The floor: the rules core driving the pump model directly, deadline by deadline."""
    clock = VirtualClock()
    model = PumpModel("floor", clock)
    state = initial_state(
        REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=clock.now()
    )
    t0 = time.perf_counter()
    started = decide(state, Start(actor="bench", course=CourseState()), clock.now())
    state, pending = started.state, list(started.commands)
    while state.phase is not InfusionPhase.COMPLETED:
        while pending:
            command = pending.pop(0)
            match command:
                case SetVtbi(volume_ml=v):
                    model.set_vtbi(v)
                case SetRate(rate_ml_h=r):
                    model.set_rate(r)
                case Run():
                    model.run()
                case StopPump():
                    model.stop()
                case ClearVolume():
                    model.clear_volume()
                case _:
                    continue
            status = model.status()
            fate = CommandConfirmed(
                command_id=command.id,
                running=status.state.value == "running",
                rate_ml_h=status.rate_ml_h if status.state.value == "running" else 0.0,
                volume_infused_ml=status.volume_infused_ml,
                vtbi_ml=status.vtbi_ml,
            )
            d = decide(state, fate, clock.now())
            state, pending = d.state, pending + list(d.commands)
        due = next_deadline(state)
        end = model.completion_at()
        at = min(t for t in (due.at if due else None, end) if t is not None)
        clock._now = at
        if end is not None and at >= end:
            status = model.status()
            d = decide(state, PumpCompleted(volume_infused_ml=status.volume_infused_ml), at)
        else:
            d = decide(state, TimePassed(), at)
        state, pending = d.state, list(d.commands)
    return time.perf_counter() - t0


async def serial_case() -> float:
    clock = VirtualClock()
    model = PumpModel("bench-serial", clock)
    async with (
        SerialSimulator([model]) as sim,
        SerialLine(sim.path) as line,
        SerialPump(line, 0, pump_id="bench-serial", safe_mode_s=5) as pump,
    ):
        return await through_controller(pump, clock)


async def mqtt_case() -> float:
    async with mosquitto() as port:
        clock = VirtualClock()
        model = PumpModel("bench-mqtt", clock)
        async with MqttPumpServer(model, "127.0.0.1", port) as server:
            await server.online.wait()
            async with MqttPump("bench-mqtt", "127.0.0.1", port) as pump:
                return await through_controller(pump, clock)


async def main(n: int) -> None:
    floor = [core_alone() for _ in range(n)]
    print(f"{'floor: rules core + pump model':<44} n={n}  median {statistics.median(floor):.3f} s")
    cases: list[tuple[str, Callable[[], Awaitable[float]]]] = [
        ("controller + serial pty + simulator", serial_case),
        ("controller + MQTT (Mosquitto) + simulator", mqtt_case),
    ]
    for name, case in cases:
        samples = [await case() for _ in range(n)]
        median = statistics.median(samples)
        print(
            f"{name:<44} n={n}  median {median:.3f} s  max {max(samples):.3f} s"
            f"  ({median / statistics.median(floor):.0f}x the floor; goal < 1 s)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="infusions per case")
    asyncio.run(main(parser.parse_args().n))
