"""MQTT environment of the driver conformance suite: MqttPump <-> Mosquitto <-> simulator.

The driver is on a connection of its own, or (`bus=True`) on an `MqttBus` shared with a
neighbour pump (served by a simulated pump of its own), so the suite holds for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt

from drivers.base import PumpState, PumpStatus
from drivers.mqtt import MQTT_CONTRACT, MqttBus, MqttPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

#: Wire bounds for the tests: generous for a loaded CI machine, short enough to keep tests fast.
COMMAND_TIMEOUT_S = 0.5
LINK_TIMEOUT_S = 5.0
RELINK_BOUND_S = 10.0

_ids = itertools.count(1)


class BrokerLike(Protocol):
    """What the tests need of the `broker` fixture (tests/conftest.py)."""

    @property
    def host(self) -> str: ...

    port: int
    process: object | None  # the broker's process while it runs

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class MqttEnv:
    """A connected MQTT driver, the simulated pump behind it, and the broker between them."""

    driver: MqttPump
    model: PumpModel
    clock: VirtualClock
    broker: BrokerLike
    server: MqttPumpServer

    async def break_link(self) -> None:
        """Kill the broker (as a crash would); return once pump and driver have both noticed."""
        self.broker.stop()
        async with asyncio.timeout(RELINK_BOUND_S):
            await self.server.offline.wait()
            await self.driver.wait_unlinked()

    async def restore_link(self) -> None:
        """(Re)start the broker on the same port if it is down; return once pump and driver are
        both back and the driver sees the pump online again (after a broker outage or a drop)."""
        if self.broker.process is None:
            self.broker.start()
        async with asyncio.timeout(RELINK_BOUND_S):
            await self.server.online.wait()
            await self.driver.wait_linked()
        await wait_status(self.driver, lambda s: s.state is not PumpState.OFFLINE)

    async def drop_port(self) -> None:
        """Lose the driver's port: for MQTT that is the broker (killed, as a crash would)."""
        await self.break_link()

    async def restore_port(self) -> None:
        """The broker is back on the same port; return once the driver relinked by itself."""
        await self.restore_link()


@asynccontextmanager
async def mqtt_env(
    clock: VirtualClock,
    broker: BrokerLike,
    *,
    command_timeout_s: float = COMMAND_TIMEOUT_S,
    link_timeout_s: float = LINK_TIMEOUT_S,
    heartbeat_s: float = 1.0,
    contract: int = MQTT_CONTRACT,
    bus: bool = False,
) -> AsyncIterator[MqttEnv]:
    """Serve one simulated pump on `broker` (speaking `contract`, beating every `heartbeat_s`)
    and yield a driver connected to it (with `bus`, on a shared connection that also carries a
    neighbour pump)."""
    model = PumpModel(f"mqtt-{next(_ids)}", clock)
    server = MqttPumpServer(
        model,
        broker.host,
        broker.port,
        heartbeat_s=heartbeat_s,
        contract=contract,
        reconnect_max_s=0.5,
    )
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(server)
        async with asyncio.timeout(RELINK_BOUND_S):
            await server.online.wait()
        shared: MqttBus | None = None
        if bus:
            shared = MqttBus(
                broker.host, broker.port, link_timeout_s=link_timeout_s, reconnect_max_s=0.5
            )
            await stack.enter_async_context(shared)
            neighbour = PumpModel(f"{model.pump_id}-neighbour", clock)
            neighbour_server = MqttPumpServer(
                neighbour, broker.host, broker.port, reconnect_max_s=0.5
            )
            await stack.enter_async_context(neighbour_server)
            async with asyncio.timeout(RELINK_BOUND_S):
                await neighbour_server.online.wait()
            await stack.enter_async_context(
                MqttPump(neighbour.pump_id, bus=shared, link_timeout_s=link_timeout_s)
            )
        driver = MqttPump(
            model.pump_id,
            None if shared else broker.host,
            broker.port,
            bus=shared,
            # the first status read on connect is set-up, not under test: a loaded CI machine
            # once took longer than 0.5 s for it; the test's own bound from then on
            command_timeout_s=RELINK_BOUND_S,
            link_timeout_s=link_timeout_s,
            reconnect_max_s=0.5,
        )
        async with driver:
            driver.command_timeout_s = command_timeout_s
            yield MqttEnv(driver=driver, model=model, clock=clock, broker=broker, server=server)


async def wait_status(
    pump: MqttPump, predicate: Callable[[PumpStatus], bool], bound_s: float = RELINK_BOUND_S
) -> PumpStatus:
    """The pump's status once `predicate` holds for it (current or coming), bounded."""
    async with asyncio.timeout(bound_s):
        changes = pump.status_changes()
        try:
            # no await between this check and the subscription below: no change can slip by
            if (last := pump.last_status) is not None and predicate(last):
                return last
            async for status in changes:
                if predicate(status):
                    return status
        finally:
            await changes.aclose()  # type: ignore[attr-defined]
    raise AssertionError("status_changes ended")  # pragma: no cover


@dataclass
class Spy:
    """A plain MQTT client of the test's own, recording what arrives on its subscriptions."""

    client: aiomqtt.Client
    messages: asyncio.Queue[aiomqtt.Message]

    async def next(self, topic: str, bound_s: float = RELINK_BOUND_S) -> aiomqtt.Message:
        """The next message on `topic` (others on the way are dropped), bounded."""
        async with asyncio.timeout(bound_s):
            while True:
                message = await self.messages.get()
                if message.topic.matches(topic):
                    return message

    async def next_json(self, topic: str, bound_s: float = RELINK_BOUND_S) -> dict[str, Any]:
        """The next message on `topic`, parsed as a JSON object."""
        message = await self.next(topic, bound_s)
        assert isinstance(message.payload, bytes)
        value = json.loads(message.payload)
        assert isinstance(value, dict)
        return value

    async def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        """Publish QoS 1."""
        await self.client.publish(topic, payload, qos=1, retain=retain)


@asynccontextmanager
async def spy(broker: BrokerLike, *topics: str) -> AsyncIterator[Spy]:
    """A connected spy subscribed to `topics`, its reader task owned and stopped on exit."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        if topics:
            await client.subscribe([(t, 1) for t in topics])
        found = Spy(client=client, messages=asyncio.Queue())

        async def read() -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                async for message in client.messages:
                    found.messages.put_nowait(message)

        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(read(), name="test-mqtt-spy")
            try:
                yield found
            finally:
                reader.cancel()
