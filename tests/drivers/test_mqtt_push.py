"""Status by push, one round trip per command (MQTT contract 2, interfaces.md section 2), and a
pump of the contract before it kept working: MqttPump against the simulator through a real
Mosquitto (the `broker` fixture)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import aiomqtt
import pytest
from mqtt_env import RELINK_BOUND_S, mqtt_env, spy, wait_status

from drivers.base import PumpState
from drivers.mqtt import CONTRACT_1_HEARTBEAT_S, OVERDUE_FACTOR, MqttPump
from drivers.mqtt.codec import MAX_HEARTBEAT_S
from pumpctl.clock import VirtualClock
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto

#: Wire bound on a condition a test waits for by looking again (a status arriving, overdue).
LOOK_BOUND_S = 10.0


async def looked_until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition()` holds, looking every 20 ms (wire time passing is the
    condition: nothing signals it)."""
    async with asyncio.timeout(LOOK_BOUND_S):
        while not condition():  # noqa: ASYNC110 - wire time passing is the condition
            await asyncio.sleep(0.02)


def asked(server: MqttPumpServer) -> int:
    """`status` commands the pump executed (what the driver asked, seen at the pump)."""
    return server.executed["status"]


async def test_status_pushed_on_change_and_as_heartbeat_without_being_asked(
    clock: VirtualClock, broker
) -> None:
    """A contract-2 pump names its heartbeat; its changes and its beats reach the driver and
    keep its link fresh (A2), with no `status` asked."""
    async with mqtt_env(clock, broker, heartbeat_s=0.1) as env:
        pump = env.driver
        assert (pump.contract, pump.heartbeat_s) == (2, 0.1)
        assert pump.overdue_s == pytest.approx(OVERDUE_FACTOR * 0.1)
        before = asked(env.server)
        env.model.set_rate(25)  # a change on the pump itself (its keypad): pushed
        status = await wait_status(pump, lambda s: s.rate_ml_h == 25)
        assert status.state is PumpState.STOPPED
        contact = pump.last_contact
        assert contact is not None
        # the stopped pump beats: contact moves on by itself, several beats, nothing asked
        await looked_until(lambda: (pump.last_contact or 0) > contact + 0.35)
        assert asked(env.server) == before
        assert pump.asks == 1  # only the first contact's read, at connect
        assert not pump.is_stale()


async def test_the_driver_asks_only_when_the_status_is_overdue(clock: VirtualClock, broker) -> None:
    """`fresh_status` answers from the status pushed while it is fresh; once no contact came
    for the overdue bound (here half the link timeout: the pump beats only every 30 s) it asks
    the pump once, and the answer makes it fresh again."""
    async with mqtt_env(clock, broker, heartbeat_s=30, link_timeout_s=3.0) as env:
        pump = env.driver
        assert pump.overdue_s == 1.5  # min(1.5 x 30 s, 3 s / 2)
        env.model.set_rate(12)
        await wait_status(pump, lambda s: s.rate_ml_h == 12)
        before = asked(env.server)
        status = await pump.fresh_status()
        assert status.rate_ml_h == 12
        assert asked(env.server) == before  # fresh: answered from the push
        await looked_until(pump.status_overdue)
        assert not pump.is_stale()  # overdue comes well before the link timeout (A2)
        contact = pump.last_contact
        assert contact is not None
        status = await pump.fresh_status()
        assert asked(env.server) == before + 1  # overdue: asked, once
        assert status.rate_ml_h == 12
        assert (pump.last_contact or 0) > contact
        await pump.fresh_status()
        assert asked(env.server) == before + 1  # the answer is fresh: not asked again


async def test_A3_a_stop_is_confirmed_by_one_ack_carrying_the_status(
    clock: VirtualClock, broker
) -> None:
    """One round trip: the stop goes out once, its ack comes first and carries the stopped
    status, which the driver returns; the status topic follows; nothing else is asked."""
    async with mqtt_env(clock, broker, heartbeat_s=MAX_HEARTBEAT_S) as env:
        pump = env.driver
        await pump.set_rate(80)
        await pump.run()
        base = pump.topics.status.removesuffix("/status")
        async with spy(broker, f"{base}/+") as wire:
            asks = pump.asks
            status = await pump.stop(command_id="inf-1.7")
            assert status.state is PumpState.STOPPED
            seen: list[tuple[str, dict[str, object]]] = []
            while len(seen) < 3:  # the command, its ack, the status after it
                message = await wire.next(f"{base}/+")
                assert isinstance(message.payload, bytes)
                topic = message.topic.value.rsplit("/", 1)[1]
                if seen or topic == "cmd":  # (before it: the retained status, the run's)
                    seen.append((topic, json.loads(message.payload)))
        assert [topic for topic, _ in seen] == ["cmd", "ack", "status"]
        (_, command), (_, ack), (_, after) = seen
        assert command == {"id": "inf-1.7", "op": "stop"}
        assert ack["id"] == "inf-1.7"
        assert ack["ok"] is True
        assert ack["status"] == after  # the ack carries the status; the topic repeats it
        assert after["state"] == "stopped"
        assert env.server.executed["stop"] == 1
        assert pump.asks == asks  # no status asked around the stop
        assert env.model.state is PumpState.STOPPED


async def test_a_contract_1_pump_is_kept_working_and_asked_when_overdue(
    clock: VirtualClock, broker, caplog: pytest.LogCaptureFixture
) -> None:
    """interfaces.md section 2, "Versions": a pump of the contract before 2 (no heartbeat, the
    status before the ack) is recognised, said once in the log, commanded as before (a stop
    confirmed by its ack, A3), and asked for its status whenever it is overdue."""
    caplog.set_level(logging.INFO, logger="drivers.mqtt.pump")
    async with mqtt_env(clock, broker, contract=1, link_timeout_s=1.0) as env:
        pump = env.driver
        assert (pump.contract, pump.heartbeat_s) == (1, None)
        assert pump.overdue_s == min(OVERDUE_FACTOR * CONTRACT_1_HEARTBEAT_S, 0.5)
        said = [r.getMessage() for r in caplog.records if "contract" in r.getMessage()]
        assert said == [
            f"pump {pump.pump_id} speaks MQTT contract 1 (no heartbeat): its status is asked for"
            " when overdue, 0.50 s after the last contact"
        ]
        assert (await pump.set_rate(60)).rate_ml_h == 60
        assert (await pump.run()).state is PumpState.RUNNING
        assert (await pump.stop()).state is PumpState.STOPPED
        # stopped, it says nothing by itself: each look once overdue asks it
        before = asked(env.server)
        await looked_until(pump.status_overdue)
        await pump.fresh_status()
        assert asked(env.server) == before + 1
        await looked_until(pump.status_overdue)
        await pump.fresh_status()
        assert asked(env.server) == before + 2
        assert not pump.is_stale()  # asked in time, its link never went stale (A2)


async def test_a_status_of_a_later_contract_is_never_acted_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A status naming a contract above this driver's is malformed: logged naming `contract`,
    never taken as a reading or as contact (the pump then looks silent: A2)."""
    pump = MqttPump("p9", "127.0.0.1")
    body = {
        "contract": 3, "heartbeat_s": 1.0, "state": "running", "rate_ml_h": 50.0,
        "vtbi_ml": 0.0, "volume_infused_ml": 0.0, "alarms": [], "seq": 1,
        "ts": "2026-01-05T08:00:00Z",
    }  # fmt: skip
    topic = pump.topics.status
    with caplog.at_level(logging.WARNING, logger="drivers.mqtt.pump"):
        pump._dispatch(aiomqtt.Message(topic, json.dumps(body).encode(), 1, False, 1, None))
    assert pump.last_status is None
    assert pump.last_contact is None
    assert any("contract" in r.getMessage() for r in caplog.records)
    for given in ({**body, "contract": 2, "heartbeat_s": None}, {**body, "contract": None}):
        bad = {k: v for k, v in given.items() if v is not None}
        pump._dispatch(aiomqtt.Message(topic, json.dumps(bad).encode(), 1, False, 2, None))
    assert pump.last_status is None  # a heartbeat without its contract, or the reverse


async def test_an_offline_pump_is_never_fresh(clock: VirtualClock, broker) -> None:
    """The last will makes the status overdue at once: the next look asks and fails fast."""
    async with mqtt_env(clock, broker, heartbeat_s=30) as env:
        pump = env.driver
        assert not pump.status_overdue()
        env.server.drop_connection()
        await wait_status(pump, lambda s: s.state is PumpState.OFFLINE, RELINK_BOUND_S)
        assert pump.status_overdue()
