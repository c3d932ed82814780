"""A task cancelled just as its MQTT acknowledgement arrives is cancelled (never goes on).

aiomqtt bounds each call with `asyncio.wait_for`, which on Python 3.11 swallows a cancellation
that lands in the loop iteration where the awaited acknowledgement (PUBACK, SUBACK) arrives: the
call returns normally and the cancelled task goes on. A supervisor's poller did so when the
controller shut down, looped on, and its task group never ended (the fleet bench hung about one
run in four after its figures); a simulated pump's publisher likewise kept `pumpctl simulate
mqtt` from exiting. Through a real Mosquitto, these tests cancel the task from the client's own
PUBACK callback, right after aiomqtt has released the publish: the exact race, every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiomqtt
import pytest
from mqtt_env import RELINK_BOUND_S

from drivers.mqtt import MqttBus, MqttPump
from drivers.mqtt.bus import Session, new_client
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer, MqttSimulator

pytestmark = pytest.mark.mosquitto

#: Wire seconds a cancelled task has to end (it ends within a loop iteration or two).
CANCEL_BOUND_S = 5.0


def cancel_at_next_puback(client: aiomqtt.Client, target: Callable[[], asyncio.Task[Any]]) -> None:
    """When `client`'s next PUBACK has been handled, cancel `target()` from the same callback
    (paho's on_publish, which aiomqtt uses to release the publish the PUBACK answers)."""
    paho = client._client
    released = paho.on_publish
    assert released is not None

    def on_publish(*args: Any) -> None:
        released(*args)  # the publish's confirmation is set: its awaiter wakes next iteration
        paho.on_publish = released
        target().cancel()

    paho.on_publish = on_publish


async def ends_cancelled(task: asyncio.Task[Any]) -> bool:
    """Whether `task` ended cancelled within the bound (it is cancelled again, then awaited,
    either way, so nothing outlives the test)."""
    try:
        await asyncio.wait({task}, timeout=CANCEL_BOUND_S)
        return task.cancelled()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def poll_forever(pump: MqttPump) -> None:
    """What a supervisor's poller does: read the pump's status, again and again."""
    while True:
        await pump.read_status()


@pytest.mark.parametrize("shared", [False, True], ids=["own-connection", "bus"])
async def test_a_command_cancelled_as_its_puback_arrives_is_cancelled(
    clock: VirtualClock, broker, shared: bool
) -> None:
    """The poller is cancelled at its status command's PUBACK: it ends, cancelled."""
    model = PumpModel("cancel-cmd", clock)
    async with MqttPumpServer(model, broker.host, broker.port) as server:
        async with asyncio.timeout(RELINK_BOUND_S):
            await server.online.wait()
        async with contextlib.AsyncExitStack() as stack:
            if shared:
                bus = await stack.enter_async_context(MqttBus(broker.host, broker.port))
                pump = MqttPump(model.pump_id, bus=bus)
            else:
                pump = MqttPump(model.pump_id, broker.host, broker.port)
            await stack.enter_async_context(pump)
            client = pump.bus.client
            assert client is not None
            poller = asyncio.create_task(poll_forever(pump), name="test-poller")
            cancel_at_next_puback(client, lambda: poller)
            assert await ends_cancelled(poller)
            # and the pump is still usable by others
            assert (await pump.read_status()).pump_id == model.pump_id


async def test_a_simulated_pump_cancelled_as_its_status_puback_arrives_stops(
    clock: VirtualClock, broker
) -> None:
    """A simulated pump's publisher is cancelled at its status's PUBACK: it ends, cancelled."""
    model = PumpModel("cancel-sim", clock)
    async with MqttPumpServer(model, broker.host, broker.port) as server:
        async with asyncio.timeout(RELINK_BOUND_S):
            await server.online.wait()
        assert server.client is not None
        (publisher,) = (
            t for t in asyncio.all_tasks() if t.get_name() == "sim-mqtt-cancel-sim-publisher"
        )
        cancel_at_next_puback(server.client, lambda: publisher)
        model.set_rate(10)  # a status is due: the publisher publishes it
        assert await ends_cancelled(publisher)


async def test_a_shared_simulator_cancelled_as_a_status_puback_arrives_stops(
    clock: VirtualClock, broker
) -> None:
    """On a shared connection too: the pump's publisher ends, and the simulator closes."""
    models = [PumpModel(f"cancel-shared-{i}", clock) for i in range(2)]
    async with MqttSimulator(models, broker.host, broker.port, shared=True) as sim:
        async with asyncio.timeout(RELINK_BOUND_S):
            await sim.wait_online()
        assert sim.client is not None
        (publisher,) = (
            t for t in asyncio.all_tasks() if t.get_name() == "sim-mqtt-cancel-shared-1-publisher"
        )
        cancel_at_next_puback(sim.client, lambda: publisher)
        models[1].set_rate(10)
        assert await ends_cancelled(publisher)


async def test_a_connect_never_acknowledged_leaves_nothing_open() -> None:
    """A CONNECT the broker never answers: `Session` raises `MqttError` within its bound and
    closes the socket (aiomqtt alone leaves it open, its keepalive task running: the leak
    fixture would name it), so no half-open client of that id lingers on the broker."""
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns at the client's EOF
        closed.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(aiomqtt.MqttError, match="connect"):
            async with Session(new_client("127.0.0.1", port), 0.3):
                pytest.fail("connected to a broker that never answers")
        async with asyncio.timeout(CANCEL_BOUND_S):
            await closed.wait()
        await asyncio.sleep(0)  # the keepalive task's cancellation is delivered


async def test_closing_a_bus_cancelled_from_outside_passes_the_cancellation(broker) -> None:
    """`MqttBus.close` awaited by a task that is itself cancelled: the cancellation reaches
    that task (never swallowed as the bus task's own), and the bus is closed anyway."""
    bus = MqttBus(broker.host, broker.port)
    bus.start()
    async with asyncio.timeout(RELINK_BOUND_S):
        await bus.wait_linked()
    went_on = asyncio.Event()

    async def closer() -> None:
        await bus.close()
        went_on.set()

    task = asyncio.create_task(closer(), name="test-closer")
    await asyncio.sleep(0)  # closer is in close(), awaiting the bus task
    task.cancel()
    assert await ends_cancelled(task)
    assert not went_on.is_set()
    assert not bus.started
