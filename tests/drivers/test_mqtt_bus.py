"""MqttBus: many MqttPumps on one broker connection, through a real Mosquitto.

The conformance suite runs over a bus-attached pump too (`mqtt-bus` in tests/drivers/conftest.py);
these tests hold what only a shared connection can get wrong: routing, relinking every pump,
and one pump leaving while the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from mqtt_env import RELINK_BOUND_S, spy, wait_status

from drivers.base import PumpConfigError, PumpConnectionError, PumpState
from drivers.mqtt import MqttBus, MqttPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto

COMMAND_TIMEOUT_S = 0.5


@asynccontextmanager
async def fleet(
    clock: VirtualClock, broker, n: int
) -> AsyncIterator[tuple[MqttBus, list[MqttPump], list[MqttPumpServer]]]:
    """`n` simulated pumps (each on its own connection) and `n` drivers on one bus."""
    async with AsyncExitStack() as stack:
        servers = [
            MqttPumpServer(
                PumpModel(f"bus-{i}", clock), broker.host, broker.port, reconnect_max_s=0.5
            )
            for i in range(n)
        ]
        for server in servers:
            await stack.enter_async_context(server)
        async with asyncio.timeout(RELINK_BOUND_S):
            for server in servers:
                await server.online.wait()
        bus = await stack.enter_async_context(
            MqttBus(broker.host, broker.port, reconnect_max_s=0.5)
        )
        pumps = [
            await stack.enter_async_context(
                MqttPump(s.model.pump_id, bus=bus, command_timeout_s=COMMAND_TIMEOUT_S)
            )
            for s in servers
        ]
        yield bus, pumps, servers


async def test_pumps_on_one_bus_get_only_their_own_statuses_and_acks(
    clock: VirtualClock, broker
) -> None:
    """One connection carries both pumps; each sees only its own pump's readings and acks."""
    async with fleet(clock, broker, 2) as (bus, (a, b), (sa, sb)):
        assert bus.connections == 1
        assert a._client is b._client is bus.client is not None
        assert a.client_id == b.client_id == bus.client_id
        await a.set_rate(11)
        await b.set_rate(22)
        await a.set_vtbi(100)
        assert (await a.run()).state is PumpState.RUNNING
        assert (await b.read_status()).state is PumpState.STOPPED
        assert sa.model.state is PumpState.RUNNING
        assert sb.model.state is PumpState.STOPPED
        # an unsolicited status reaches its own pump only
        sb.model.set_rate(33)
        seen_b = await wait_status(b, lambda s: s.rate_ml_h == 33)
        assert seen_b.pump_id == "bus-1"
        assert a.last_status is not None
        assert a.last_status.rate_ml_h == 11
        assert a.last_status.pump_id == "bus-0"
        assert a._pending == {}
        assert b._pending == {}


async def test_concurrent_commands_on_one_bus_are_matched_by_id(
    clock: VirtualClock, broker
) -> None:
    """Many pumps commanded at once through one connection: every ack finds its command."""
    async with fleet(clock, broker, 8) as (_, pumps, servers):
        rates = [10.0 + i for i in range(len(pumps))]
        statuses = await asyncio.gather(*(p.set_rate(r) for p, r in zip(pumps, rates, strict=True)))
        assert [s.rate_ml_h for s in statuses] == rates
        assert [s.model.status().rate_ml_h for s in servers] == rates
        assert all(p._pending == {} for p in pumps)


async def test_broker_killed_and_restarted_relinks_every_pump_on_the_bus(
    clock: VirtualClock, broker
) -> None:
    """A2: the one connection drops -> every pump fails fast; back -> every pump relinks."""
    async with fleet(clock, broker, 3) as (bus, pumps, servers):
        for pump, rate in zip(pumps, (5, 6, 7), strict=True):
            await pump.set_rate(rate)
        broker.stop()
        async with asyncio.timeout(RELINK_BOUND_S):
            for pump in pumps:
                await pump.wait_unlinked()
            # the simulated pumps too have seen the loss: else `online`, still set from before,
            # lets a command go out before a pump is subscribed again, and it is lost
            for server in servers:
                await server.offline.wait()
        assert not bus.connected
        for pump in pumps:
            with pytest.raises(PumpConnectionError, match="no link"):
                await pump.read_status()
        broker.start()
        async with asyncio.timeout(RELINK_BOUND_S):
            for server in servers:
                await server.online.wait()
            for pump in pumps:
                await pump.wait_linked()
        assert bus.connections == 2
        for pump, rate in zip(pumps, (5, 6, 7), strict=True):
            assert (await pump.read_status()).rate_ml_h == rate
            assert pump.reconnections == 1


async def test_a_pump_closed_on_the_bus_unsubscribes_and_the_others_go_on(
    clock: VirtualClock, broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing one pump unsubscribes its topics (the broker sends the bus nothing more for it)
    and leaves the bus and the other pumps serving."""
    async with fleet(clock, broker, 2) as (bus, (a, b), (sa, _)):
        await a.close()
        assert not a.connected
        assert b.connected
        assert bus.connected
        assert len(bus) == 1
        with pytest.raises(PumpConnectionError):
            await a.read_status()
        caplog.set_level(logging.DEBUG, logger="drivers.mqtt.bus")
        async with spy(broker, sa.topics.status) as watcher:
            await watcher.next(sa.topics.status)  # retained
            sa.model.set_rate(44)  # the closed pump's simulator publishes a status
            await watcher.next(sa.topics.status)
            # the broker has handed that status on to every subscriber; b's ack comes after it
            assert (await b.read_status()).state is PumpState.STOPPED
        assert not [r for r in caplog.records if "no attached pump" in r.getMessage()]
        assert a.last_status is not None
        assert a.last_status.rate_ml_h == 0
        # the same pump id may come back on the bus
        again = MqttPump(a.pump_id, bus=bus, command_timeout_s=COMMAND_TIMEOUT_S)
        async with again:
            assert (await again.read_status()).rate_ml_h == 44


async def test_a_pump_attached_while_the_broker_is_down_links_when_it_comes(
    clock: VirtualClock, broker
) -> None:
    """A pump attached during an outage is subscribed by the reconnection (no lost attach)."""
    async with fleet(clock, broker, 1) as (bus, (a,), servers):
        broker.stop()
        async with asyncio.timeout(RELINK_BOUND_S):
            await a.wait_unlinked()
        late_model = PumpModel("bus-late", clock)
        late = MqttPump(late_model.pump_id, bus=bus, link_timeout_s=RELINK_BOUND_S)
        connecting = asyncio.create_task(late.connect(), name="test-late-connect")
        broker.start()
        async with MqttPumpServer(late_model, broker.host, broker.port) as late_server:
            async with asyncio.timeout(RELINK_BOUND_S):
                await late_server.online.wait()
                await servers[0].online.wait()
                await connecting
            try:
                assert late.connected
                assert a.connected
                assert (await late.read_status()).pump_id == "bus-late"
            finally:
                await late.close()


async def test_bus_configuration_is_refused() -> None:
    """A pump is on a broker or on a bus, never both; one pump id per bus."""
    with pytest.raises(PumpConfigError, match="either"):
        MqttPump("p1")
    async with MqttBus("127.0.0.1", 1) as bus:
        with pytest.raises(PumpConfigError, match="either"):
            MqttPump("p1", "127.0.0.1", bus=bus)
        with pytest.raises(PumpConfigError, match="client_id"):
            MqttPump("p1", bus=bus, client_id="mine")
        first = MqttPump("p1", bus=bus)
        await bus.attach(first)
        with pytest.raises(PumpConfigError, match="another pump"):
            await bus.attach(MqttPump("p1", bus=bus))
        await bus.detach(first)
    with pytest.raises(PumpConfigError, match="max_inflight"):
        MqttBus("127.0.0.1", max_inflight=0)


async def test_a2_a3_the_bus_takes_statuses_at_qos_0_and_acks_at_qos_1(
    clock: VirtualClock, broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """interfaces.md section 2, "Sizing for a fleet": the pumps publish their statuses at QoS 1,
    but the bus subscribes them at QoS 0 (no PUBACK per heartbeat: a fleet's statuses were most
    of the controller's MQTT work), while acks keep QoS 1 (a lost ack is a false A3). The
    statuses still reach their pump, retained and live."""
    delivered: list[tuple[str, int, bool]] = []
    dispatch = MqttPump._dispatch

    def seen(self: MqttPump, message) -> None:  # type: ignore[no-untyped-def]
        kind = "ack" if message.topic.matches(self.topics.ack) else "status"
        delivered.append((kind, message.qos, message.retain))
        dispatch(self, message)

    monkeypatch.setattr(MqttPump, "_dispatch", seen)
    async with fleet(clock, broker, 1) as (_, (pump,), (server,)):
        assert (await pump.set_rate(12)).rate_ml_h == 12  # a command: its ack
        server.model.set_rate(13)  # a change: a live status
        await wait_status(pump, lambda s: s.rate_ml_h == 13)
    statuses = [(qos, retained) for kind, qos, retained in delivered if kind == "status"]
    acks = [qos for kind, qos, _ in delivered if kind == "ack"]
    assert (0, True) in statuses  # the retained status found on subscribing
    assert (0, False) in statuses  # pushed live
    assert {qos for qos, _ in statuses} == {0}
    assert acks
    assert set(acks) == {1}
