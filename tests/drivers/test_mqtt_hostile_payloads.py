"""What the MQTT driver accepts from the wire (interfaces.md section 2).

A payload that cannot be a pump's status or ack is never acted on and never takes the link down:
deeply nested JSON (which makes Python's `json` raise RecursionError), absurd numbers.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from mqtt_env import mqtt_env, spy

from drivers.base import PumpState
from drivers.mqtt import MqttPump, PayloadError, command_id_of, decode_ack, decode_status
from pumpctl.clock import VirtualClock

GOOD = {
    "state": "running", "rate_ml_h": 1.0, "vtbi_ml": 0.0, "volume_infused_ml": 0.0,
    "alarms": [], "seq": 10_000, "ts": "2026-01-05T08:00:00Z",
}  # fmt: skip
#: Nested JSON well under the payload cap, deeper than Python's recursion limit.
DEEP = b"[" * 5000 + b"]" * 5000
DEEP_IN_OBJECT = b'{"state": ' + DEEP + b"}"


@pytest.mark.parametrize("payload", [DEEP, DEEP_IN_OBJECT])
def test_deeply_nested_status_is_a_payload_error(payload: bytes) -> None:
    with pytest.raises(PayloadError, match="status"):
        decode_status(payload)


@pytest.mark.parametrize("payload", [DEEP, DEEP_IN_OBJECT])
def test_deeply_nested_command_has_no_id(payload: bytes) -> None:
    assert command_id_of(payload) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_ml_h", 1e300),
        ("rate_ml_h", 10_000.0),
        ("vtbi_ml", 1e12),
        ("volume_infused_ml", 1e12),
        ("seq", 10**30),
    ],
)
def test_absurd_numbers_in_a_status_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(PayloadError, match=field):
        decode_status(json.dumps({**GOOD, field: value}).encode())
    ack = {"id": "a", "ok": True, "status": {**GOOD, field: value}}
    with pytest.raises(PayloadError, match=field):
        decode_ack(json.dumps(ack).encode())


def test_largest_real_values_are_accepted() -> None:
    status = decode_status(
        json.dumps({**GOOD, "rate_ml_h": 9999.0, "vtbi_ml": 9999.0, "seq": 2**62}).encode()
    )
    assert (status.rate_ml_h, status.vtbi_ml) == (9999.0, 9999.0)


@pytest.mark.mosquitto
async def test_deeply_nested_status_or_ack_does_not_take_the_link_down(
    clock: VirtualClock, broker
) -> None:
    """A garbled payload is logged and dropped; the driver keeps its link and its view."""
    async with mqtt_env(clock, broker) as env:
        await env.driver.set_rate(12)
        topics = env.driver.topics
        async with spy(broker, topics.status, topics.ack) as attacker:
            await attacker.next(topics.status)  # retained
            for topic in (topics.status, topics.ack):
                for payload in (DEEP, DEEP_IN_OBJECT):
                    await attacker.publish(topic, payload)
                    await attacker.next(topic)
        status = await env.driver.read_status()  # the link is still served
        assert status.rate_ml_h == 12
        assert env.driver.connected
        assert env.driver.last_status is not None
        assert env.driver.last_status.state is PumpState.STOPPED


@pytest.mark.mosquitto
async def test_close_while_the_broker_hangs_ends_the_link_task(clock: VirtualClock, broker) -> None:
    """Closing must end the supervising task even when the broker stops answering: the MqttError
    of a disconnect that times out must not swallow the cancellation and reconnect forever."""
    async with mqtt_env(clock, broker) as env:
        pump = MqttPump(
            env.model.pump_id, broker.host, broker.port, link_timeout_s=1.0, reconnect_max_s=0.2
        )
        await pump.connect()
        assert broker.process is not None
        broker.process.send_signal(signal.SIGSTOP)  # hung, not dead: the socket stays open
        try:
            async with asyncio.timeout(5):
                await pump.close()
        finally:
            broker.process.send_signal(signal.SIGCONT)
        assert not pump.connected
