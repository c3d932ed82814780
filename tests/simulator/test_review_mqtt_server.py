"""Review: the simulated MQTT pump survives any payload on its command topic.

A deeply nested JSON command (Python's `json` raises RecursionError on it) is refused without
an id and never executed; the pump goes on serving the next command.
"""

from __future__ import annotations

import asyncio

import pytest
from mqtt_env import spy

from drivers.mqtt import CommandPayload, Op, decode_ack
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto

DEEP = b"[" * 5000 + b"]" * 5000


async def test_deeply_nested_command_is_dropped_and_the_pump_serves_on(
    clock: VirtualClock, broker
) -> None:
    model = PumpModel("deep", clock)
    async with MqttPumpServer(model, broker.host, broker.port) as server:
        async with asyncio.timeout(10):
            await server.online.wait()
        topics = server.topics
        async with spy(broker, topics.ack) as controller:
            for payload in (DEEP, b'{"id": "x", "op": ' + DEEP + b"}"):
                await controller.publish(topics.cmd, payload)
            command = CommandPayload(id="after", op=Op.SET_RATE, rate_ml_h=40)
            await controller.publish(topics.cmd, command.to_bytes())
            message = await controller.next(topics.ack)
            assert isinstance(message.payload, bytes)
            ack = decode_ack(message.payload)
        assert (ack.id, ack.ok) == ("after", True)  # the nested ones got no ack at all
        assert model.status().rate_ml_h == 40
        assert server.executed[Op.SET_RATE] == 1
        assert server.client is not None
