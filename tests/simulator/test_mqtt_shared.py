"""MqttSimulator(shared=True): many simulated pumps on one broker connection, seen from the wire.

Each pump keeps its own topics, retained status, seq and command ids; what one connection
cannot give (a last will per pump) is replaced as simulator/mqtt_server.py documents: a retained
offline status per pump on a clean shutdown, and a drop_connection fault emulated per pump.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from mqtt_env import RELINK_BOUND_S, spy

from drivers.base import PumpState
from drivers.mqtt import MqttBus, MqttPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttSimulator, heartbeat_phase

pytestmark = pytest.mark.mosquitto


@asynccontextmanager
async def shared_sim(
    clock: VirtualClock, broker, n: int, *, heartbeat_s: float = 1.0
) -> AsyncIterator[MqttSimulator]:
    """`n` simulated pumps on one shared connection, all online."""
    models = [PumpModel(f"shared-{i}", clock) for i in range(n)]
    sim = MqttSimulator(
        models,
        broker.host,
        broker.port,
        shared=True,
        heartbeat_s=heartbeat_s,
        reconnect_max_s=0.5,
    )
    async with sim:
        async with asyncio.timeout(RELINK_BOUND_S):
            await sim.wait_online()
        yield sim


async def test_pumps_share_one_connection_each_with_its_own_retained_status(
    clock: VirtualClock, broker
) -> None:
    async with shared_sim(clock, broker, 3) as sim:
        assert sim.connections == 1
        clients = {id(s.client) for s in sim.servers.values()}
        assert clients == {id(sim.client)}
        sim.servers["shared-1"].model.set_rate(42)
        topics = [s.topics.status for s in sim.servers.values()]
        async with spy(broker, sim.servers["shared-1"].topics.status) as watcher:
            while (await watcher.next_json(topics[1]))["rate_ml_h"] != 42:
                pass
        async with spy(broker, *topics) as late:
            seen = {}
            while len(seen) < len(topics):
                message = await late.next("#")
                assert message.retain
                seen[message.topic.value] = json.loads(message.payload)  # type: ignore[arg-type]
        assert [seen[t]["rate_ml_h"] for t in topics] == [0, 42, 0]
        assert all(seen[t]["state"] == "stopped" for t in topics)


async def test_a_command_is_executed_and_acked_by_its_own_pump_only(
    clock: VirtualClock, broker
) -> None:
    async with shared_sim(clock, broker, 3) as sim:
        target, other = sim.servers["shared-2"], sim.servers["shared-0"]
        async with spy(broker, target.topics.ack, other.topics.ack) as watcher:
            body = {"id": "c1", "op": "set_rate", "rate_ml_h": 12}
            await watcher.publish(target.topics.cmd, json.dumps(body))
            ack = await watcher.next_json("#")
            assert ack["id"] == "c1"
            assert ack["status"]["rate_ml_h"] == 12  # type: ignore[index]
            await watcher.publish(target.topics.cmd, json.dumps(body))  # the same id again
            message = await watcher.next("#")
            assert message.topic.matches(target.topics.ack)
        assert target.executed["set_rate"] == 1
        assert sum(other.executed.values()) == 0
        assert other.model.status().rate_ml_h == 0


async def test_running_pumps_each_publish_every_interval(clock: VirtualClock, broker) -> None:
    """interfaces.md section 2: a heartbeat every interval, every pump."""
    async with shared_sim(clock, broker, 4, heartbeat_s=0.05) as sim:
        for server in sim.servers.values():
            server.model.set_vtbi(100)
            server.model.set_rate(60)
            server.model.run()
        topics = [s.topics.status for s in sim.servers.values()]
        async with spy(broker, *topics) as watcher:
            counts = dict.fromkeys(topics, 0)
            async with asyncio.timeout(RELINK_BOUND_S):
                while min(counts.values()) < 3:
                    message = await watcher.next("#")
                    if not message.retain:
                        counts[message.topic.value] += 1


async def test_the_heartbeats_of_a_fleet_are_spread_over_the_interval(
    clock: VirtualClock, broker
) -> None:
    """Nothing on one beat: each pump beats on a phase of its own (drawn from its id), so the
    first heartbeats of pumps that came online together arrive across the interval."""
    n, heartbeat_s = 20, 0.5
    phases = sorted(heartbeat_phase(f"shared-{i}", heartbeat_s) for i in range(n))
    assert all(0 < p <= heartbeat_s for p in phases)
    slices = collections.Counter(int(p / (heartbeat_s / 10)) for p in phases)
    assert max(slices.values()) <= n // 3  # no tenth of the interval carries a third of them
    loop = asyncio.get_running_loop()
    async with shared_sim(clock, broker, n, heartbeat_s=heartbeat_s) as sim:
        assert sorted(s.phase_s for s in sim.servers.values()) == phases
        topics = [s.topics.status for s in sim.servers.values()]
        async with spy(broker, *topics) as watcher:
            first: dict[str, float] = {}
            async with asyncio.timeout(RELINK_BOUND_S):
                while len(first) < n:
                    message = await watcher.next("#")
                    if not message.retain:
                        first.setdefault(message.topic.value, loop.time())
        # on one beat they would all come within a few ms; spread, over most of the interval
        assert max(first.values()) - min(first.values()) >= heartbeat_s / 2


async def test_clean_shutdown_leaves_every_pump_offline_retained(
    clock: VirtualClock, broker
) -> None:
    """One connection has no will per pump: a clean stop says offline for each of them."""
    async with shared_sim(clock, broker, 3) as sim:
        topics = [s.topics.status for s in sim.servers.values()]
    async with spy(broker, *topics) as late:
        seen = {}
        while len(seen) < len(topics):
            message = await late.next("#")
            seen[message.topic.value] = json.loads(message.payload)  # type: ignore[arg-type]
    assert seen == {topic: {"state": "offline"} for topic in topics}


async def test_drop_connection_is_emulated_for_that_pump_alone(clock: VirtualClock, broker) -> None:
    """The fault takes one pump offline (its will's payload), then it comes back; the others and
    the shared connection are untouched."""
    async with shared_sim(clock, broker, 2, heartbeat_s=0.05) as sim:
        dropped, other = sim.servers["shared-0"], sim.servers["shared-1"]
        async with spy(broker, dropped.topics.status) as watcher:
            await watcher.next(dropped.topics.status)  # retained
            dropped.model.faults.drop_connection = True  # picked up by the ticker
            while await watcher.next_json(dropped.topics.status) != {"state": "offline"}:
                pass  # heartbeats sent before the fault was picked up
            back = await watcher.next_json(dropped.topics.status)
            assert back["state"] == "stopped"
        assert dropped.connections == 2
        assert other.connections == 1
        assert sim.connections == 1
        assert other.online.is_set()


async def test_broker_killed_and_restarted_every_pump_comes_back(
    clock: VirtualClock, broker
) -> None:
    async with shared_sim(clock, broker, 3) as sim:
        broker.stop()
        async with asyncio.timeout(RELINK_BOUND_S):
            for server in sim.servers.values():
                await server.offline.wait()
        broker.start()
        async with asyncio.timeout(RELINK_BOUND_S):
            await sim.wait_online()
        assert sim.connections == 2
        assert all(s.connections == 2 for s in sim.servers.values())


async def test_a_bus_drives_a_shared_simulator(clock: VirtualClock, broker) -> None:
    """Both sides on one connection each: every pump's command finds its pump and its ack."""
    n = 20
    async with shared_sim(clock, broker, n) as sim, AsyncExitStack() as stack:
        bus = await stack.enter_async_context(MqttBus(broker.host, broker.port))
        pumps = [await stack.enter_async_context(MqttPump(pid, bus=bus)) for pid in sim.servers]
        rates = [float(10 + i) for i in range(n)]
        statuses = await asyncio.gather(*(p.set_rate(r) for p, r in zip(pumps, rates, strict=True)))
        assert [s.rate_ml_h for s in statuses] == rates
        await asyncio.gather(*(p.set_vtbi(100) for p in pumps))
        running = await asyncio.gather(*(p.run() for p in pumps))
        assert all(s.state is PumpState.RUNNING for s in running)
        stopped = await asyncio.gather(*(p.stop() for p in pumps))
        assert all(s.state is PumpState.STOPPED for s in stopped)
        assert [s.model.status().rate_ml_h for s in sim.servers.values()] == rates
