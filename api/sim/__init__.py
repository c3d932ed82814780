"""Simulated pumps for `pumpctl serve --simulate N` and `pumpctl demo`, and the simulation routes
(`/api/v1/sim/...`, admin). The only code of the service that imports the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from drivers.base import Pump
from drivers.mqtt import MqttBus, MqttPump, parse_broker
from drivers.serial import DEFAULT_BAUD, LineMember, SerialLine, SerialPump, line_load
from drivers.serial.line import LINE_CAPACITY_LIMIT
from pumpctl.clock import Clock
from pumpctl.settings import Settings
from simulator.memory import MemoryPump
from simulator.model import PumpModel
from simulator.mqtt_server import MqttSimulator
from simulator.serial_server import SerialSimulator

_log = logging.getLogger("pumpctl.api")
LINK_AT_START_S = 15.0  # what a simulated pump gets to link at the start, however loaded
#: Seconds the simulated MQTT pumps get to subscribe before the kernel first reads them.
SIMULATOR_ONLINE_S = 10.0

__all__ = ["SimulatedPumps", "line_groups", "open_simulated"]


@dataclass
class SimulatedPumps:
    """The models behind the simulated pumps (for faults and alarms) and their drivers."""

    models: dict[str, PumpModel] = field(default_factory=dict)
    pumps: dict[str, tuple[Pump, str]] = field(default_factory=dict)
    where: str = ""  # the pseudo-terminals, the broker, or "in process (no wire)"


def line_groups(ids: list[str]) -> list[list[str]]:
    """The simulated serial pumps, in order, as many to a pseudo-terminal as one line at the
    default baud rate carries within its capacity limit (drivers/serial/line.py): as a gateway
    with more pumps than one RS-232 line carries has more lines."""
    groups: list[list[str]] = [[]]
    for pump_id in ids:
        group = groups[-1]
        members = [LineMember(a, p, None) for a, p in enumerate([*group, pump_id])]
        if group and line_load(members, DEFAULT_BAUD) > LINE_CAPACITY_LIMIT:
            groups.append([pump_id])
        else:
            group.append(pump_id)
    return [g for g in groups if g]


async def open_simulated(settings: Settings, clock: Clock, stack: AsyncExitStack) -> SimulatedPumps:
    """N simulated pumps `pump-1..pump-N` on pseudo-terminals (New Era addresses 0.. on each,
    as many pumps to a line as its capacity allows: 10 at 19200 baud), on the given MQTT
    broker, or in process with no wire (`link` "memory"), on the service's own clinical clock.
    On a broker, the simulated pumps and their bus log in with the settings' `mqtt_username`/
    `mqtt_password` (a bench broker's ACL must then let that user write every simulated pump's
    status and acks)."""
    n = settings.simulate
    ids = [f"pump-{i}" for i in range(1, n + 1)]
    sim = SimulatedPumps()
    if settings.link == "serial":
        paths = []
        for group in line_groups(ids):
            models = [PumpModel(pid, clock, address=a) for a, pid in enumerate(group)]
            simulator = await stack.enter_async_context(
                SerialSimulator(models, emulate_wire_time=settings.sim_wire_time)
            )
            line = await stack.enter_async_context(SerialLine(simulator.path))
            paths.append(simulator.path)
            for model in models:
                pump = SerialPump(
                    line,
                    model.address,
                    pump_id=model.pump_id,
                    safe_mode_s=None,  # an in-process simulator dies with the service
                    link_timeout_s=settings.link_timeout_s,
                    command_timeout_s=settings.command_timeout_s,  # A3: the stop's read-back
                )
                sim.pumps[model.pump_id] = (await stack.enter_async_context(pump), "serial")
                sim.models[model.pump_id] = model
        sim.where = ", ".join(paths)
    elif settings.link == "memory":
        # in process, no wire: for rule-level tests and demos, it proves nothing about a
        # transport (simulator/memory.py)
        for pump_id in ids:
            model = PumpModel(pump_id, clock)
            memory_pump = MemoryPump(
                model,
                link_timeout_s=settings.link_timeout_s,
                command_timeout_s=settings.command_timeout_s,
            )
            sim.pumps[pump_id] = (await stack.enter_async_context(memory_pump), "memory")
            sim.models[pump_id] = model
        sim.where = "in process (no wire)"
    else:
        assert settings.broker is not None
        host, port = parse_broker(settings.broker)
        username, password = settings.mqtt_credentials()
        models = [PumpModel(pid, clock) for pid in ids]
        on_broker = await stack.enter_async_context(
            MqttSimulator(
                models,
                host,
                port,
                prefix=settings.mqtt_prefix,
                shared=True,
                username=username,
                password=password,
                tls_context=settings.mqtt_tls(),
            )
        )
        # The simulated pumps subscribe before the first status read: else the broker drops
        # that read and each pump starts with its link lost (A2) for a command timeout.
        # Bounded: a broker slow to answer leaves them to link later, as a real pump would.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SIMULATOR_ONLINE_S):
                await on_broker.wait_online()
        bus = await stack.enter_async_context(
            MqttBus(
                host, port, username=username, password=password, tls_context=settings.mqtt_tls()
            )
        )
        sim.where = settings.broker
        for model in models:
            mqtt_pump = MqttPump(
                model.pump_id,
                bus=bus,
                prefix=settings.mqtt_prefix,
                link_timeout_s=settings.link_timeout_s,
                start_unlinked=True,  # slow to answer (a loaded machine): linked below
            )
            sim.pumps[model.pump_id] = (await stack.enter_async_context(mqtt_pump), "mqtt")
            sim.models[model.pump_id] = model
    await _linked(sim)
    return sim


async def _linked(sim: SimulatedPumps) -> None:
    """Wait (bounded) until every simulated pump is linked: on a loaded machine a pump's first
    answer may come after the command timeout, and the pump then starts unlinked (A2) and
    links on its own. Past the bound the service starts anyway, those pumps link-lost."""
    pumps = [pump for pump, _ in sim.pumps.values()]
    try:
        async with asyncio.timeout(LINK_AT_START_S):
            await asyncio.gather(*(pump.wait_linked() for pump in pumps))
    except TimeoutError:
        late = sorted(pump.pump_id for pump in pumps if not pump.connected)
        _log.warning(
            "simulated pumps %s not linked within %g s of the start: link lost (A2) until they are",
            ", ".join(late),
            LINK_AT_START_S,
        )
