"""A call awaiting the broker's acknowledgement when the connection drops ends at once.

aiomqtt's PUBLISH, SUBSCRIBE and UNSUBSCRIBE await their PUBACK, SUBACK or UNSUBACK and nothing
else: a connection lost meanwhile leaves them waiting for an acknowledgement that can no longer
come, until their caller's bound. Issue 19: the broker was killed while the simulated pump's ack
awaited its PUBACK; the pump's message loop sat in that publish for its whole 10 s bound, so it
noticed the outage, reconnected and subscribed its command topic only then, and the command
the controller sent as soon as it had relinked reached a broker with no subscriber for it
("no valid ack within 10.0 s"). Every client of the project is built by `new_client`, whose
calls end with an `MqttError` as soon as their connection is lost: a relink never waits out a
call of the connection before it.

Each test drops a real connection (Mosquitto behind a `TcpProxy`, frozen so that the
acknowledgement never comes, then cut) while the call is awaiting its acknowledgement, and
gives it `LOST_BOUND_S` to end where, before, it waited out a bound of `CALL_BOUND_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
import pytest
from mosquitto_env import Broker
from mqtt_env import RELINK_BOUND_S, spy
from needs import free_port
from tcp_proxy import TcpProxy

from drivers.base import PumpConnectionError, PumpState
from drivers.mqtt import CommandPayload, MqttBus, MqttPump, Op, Topics
from drivers.mqtt.bus import Session, bounded, new_client
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto

#: The bound of the call under test: what a call in flight at a drop used to wait out.
CALL_BOUND_S = 30.0
#: What a call in flight at a drop has to end (it ends within a few loop iterations).
LOST_BOUND_S = 5.0


@contextlib.asynccontextmanager
async def proxied(broker: Broker) -> AsyncIterator[TcpProxy]:
    """A proxy to `broker`, listening; cut at the end (its connections and their tasks)."""
    proxy = TcpProxy(port=free_port(), target=broker.port)
    await proxy.open()
    try:
        yield proxy
    finally:
        await proxy.cut()


async def in_flight(call: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """A task running `call()`, returned once the call is suspended (awaiting its answer).

    `started` is set in the task's step that starts the call, and the call runs on in that step
    (paho writes the packet synchronously) up to its first suspension; the test task wakes only
    in a later loop iteration."""
    started = asyncio.Event()

    async def run() -> Any:
        awaitable = call()
        started.set()
        return await awaitable

    task = asyncio.create_task(run(), name="test-call-in-flight")
    await started.wait()
    assert not task.done()
    return task


async def outcome(task: asyncio.Task[Any], bound_s: float = LOST_BOUND_S) -> BaseException:
    """The exception `task` ends with within `bound_s` (cancelled and awaited either way)."""
    try:
        done, _ = await asyncio.wait({task}, timeout=bound_s)
        assert task in done, f"the call in flight was still waiting after {bound_s} s"
        error = task.exception()
        assert error is not None, "the call in flight returned normally"
        return error
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("call", ["publish", "subscribe", "unsubscribe"])
async def test_a_call_awaiting_its_acknowledgement_ends_when_the_connection_drops(
    broker: Broker, call: str
) -> None:
    calls: dict[str, Callable[[aiomqtt.Client], Awaitable[Any]]] = {
        "publish": lambda c: c.publish("pumpctl/test/lost", b"x", qos=1),
        "subscribe": lambda c: c.subscribe("pumpctl/test/lost", qos=1),
        "unsubscribe": lambda c: c.unsubscribe("pumpctl/test/lost"),
    }
    async with contextlib.AsyncExitStack() as stack:
        proxy = await stack.enter_async_context(proxied(broker))
        client = await stack.enter_async_context(
            Session(new_client(broker.host, proxy.port), RELINK_BOUND_S)
        )
        proxy.freeze()  # the broker sees nothing more: no acknowledgement comes
        task = await in_flight(lambda: bounded(calls[call](client), CALL_BOUND_S, call))
        await proxy.cut()
        error = await outcome(task)
    assert isinstance(error, aiomqtt.MqttError)
    assert "connection lost" in str(error)


async def test_a_command_in_flight_when_the_link_drops_fails_at_once_and_the_pump_relinks(
    broker: Broker, clock: VirtualClock
) -> None:
    """A3 bounds a command by its timeout; a lost link fails it at once (A2): a
    `PumpConnectionError`, not a `PumpTimeout` a command timeout later. The pump relinks."""
    model = PumpModel("lost-cmd", clock)
    async with (
        MqttPumpServer(model, broker.host, broker.port) as server,
        proxied(broker) as proxy,
    ):
        async with asyncio.timeout(RELINK_BOUND_S):
            await server.online.wait()
        async with MqttPump(
            model.pump_id,
            broker.host,
            proxy.port,
            command_timeout_s=CALL_BOUND_S,
            link_timeout_s=RELINK_BOUND_S,
            reconnect_max_s=0.2,
        ) as pump:
            proxy.freeze()  # the command's PUBLISH never reaches the broker
            task = await in_flight(lambda: pump.set_rate(7.0))
            await proxy.cut()
            error = await outcome(task)
            assert isinstance(error, PumpConnectionError), repr(error)

            proxy.thaw()
            await proxy.open()
            await asyncio.wait_for(pump.wait_linked(), RELINK_BOUND_S)
            status = await pump.read_status()
            assert status.state is PumpState.STOPPED
            assert model.status().rate_ml_h != 7.0  # the lost command was never executed


async def test_a_pump_attached_while_the_subscription_is_in_flight_links_on_the_next_connection(
    broker: Broker, clock: VirtualClock
) -> None:
    """The bus subscribing a pump's topics when its connection drops reconnects at once and
    subscribes them on the new connection: the pump's connect does not wait out the
    subscription's bound (the bus's link timeout) first."""
    model = PumpModel("lost-sub", clock)
    async with (
        MqttPumpServer(model, broker.host, broker.port) as server,
        proxied(broker) as proxy,
    ):
        async with asyncio.timeout(RELINK_BOUND_S):
            await server.online.wait()
        bus = MqttBus(broker.host, proxy.port, link_timeout_s=CALL_BOUND_S, reconnect_max_s=0.2)
        async with bus:
            await asyncio.wait_for(bus.wait_linked(), RELINK_BOUND_S)
            pump = MqttPump(model.pump_id, bus=bus, link_timeout_s=CALL_BOUND_S)
            proxy.freeze()  # the SUBSCRIBE never reaches the broker
            task = await in_flight(pump.connect)
            try:
                await proxy.cut()
                proxy.thaw()
                await proxy.open()
                done, _ = await asyncio.wait({task}, timeout=RELINK_BOUND_S)
                assert task in done, f"connect still waiting after {RELINK_BOUND_S} s"
                task.result()
                assert pump.connected
                assert bus.connections == 2
                assert (await pump.read_status()).state is PumpState.STOPPED
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await pump.close()


async def test_a_simulated_pump_whose_ack_is_in_flight_when_its_link_drops_is_back_at_once(
    broker: Broker, clock: VirtualClock
) -> None:
    """Issue 19's stall: the simulated pump's link drops while it awaits the PUBACK of what it
    publishes in answer to a command. It notices at once (its message loop no longer sits in
    that publish for its 10 s bound), reconnects and serves commands again."""
    model = PumpModel("lost-ack", clock)
    topics = Topics.for_pump(model.pump_id)
    async with proxied(broker) as proxy:
        server = MqttPumpServer(model, broker.host, proxy.port, reconnect_max_s=0.2)
        executed = asyncio.Event()

        def freeze_on_execution() -> None:  # the model changed: status and ack are yet to go
            proxy.freeze()
            executed.set()

        async with server, spy(broker, topics.ack) as controller:
            async with asyncio.timeout(RELINK_BOUND_S):
                await server.online.wait()
            model.listeners.append(freeze_on_execution)
            command = CommandPayload(id="lost-ack-1", op=Op.SET_RATE, rate_ml_h=9.0)
            await controller.publish(topics.cmd, command.to_bytes())
            async with asyncio.timeout(RELINK_BOUND_S):
                await executed.wait()
            model.listeners.remove(freeze_on_execution)
            # the pump is publishing its status (then its ack) over the frozen link
            await proxy.cut()
            async with asyncio.timeout(LOST_BOUND_S):
                await server.offline.wait()
            proxy.thaw()
            await proxy.open()
            async with asyncio.timeout(RELINK_BOUND_S):
                await server.online.wait()
            # back: it serves commands again
            again = CommandPayload(id="lost-ack-2", op=Op.SET_RATE, rate_ml_h=9.0)
            await controller.publish(topics.cmd, again.to_bytes())
            ack = await controller.next_json(topics.ack)
            assert ack["id"] == "lost-ack-2"
            assert ack["ok"] is True
            assert model.status().rate_ml_h == 9.0
