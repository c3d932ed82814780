"""MqttPump against the MQTT simulator through a real Mosquitto (the `broker` fixture)."""

from __future__ import annotations

import asyncio
import json
import socket

import aiomqtt
import pytest
from mqtt_env import mqtt_env, spy, wait_status

from drivers.base import (
    Alarm,
    PumpCommandRejected,
    PumpConfigError,
    PumpConnectionError,
    PumpState,
    PumpTimeout,
)
from drivers.mqtt import MqttPump, Topics, backoff_delay
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto


async def test_every_op_round_trips_and_returns_the_pumps_status(
    clock: VirtualClock, broker
) -> None:
    """set_vtbi, set_rate, start, status, rate while running, stop, clear_volume (A3 read-back)."""
    async with mqtt_env(clock, broker) as env:
        pump, model = env.driver, env.model
        status = await pump.set_vtbi(100)
        assert (status.vtbi_ml, model.status().vtbi_ml) == (100, 100)
        status = await pump.set_rate(50)
        assert (status.rate_ml_h, model.status().rate_ml_h) == (50, 50)
        status = await pump.run()
        assert status.state is PumpState.RUNNING
        assert model.state is PumpState.RUNNING
        await clock.advance(36 * 60)  # 0.6 h at 50 ml/h
        status = await pump.read_status()
        assert status.volume_infused_ml == pytest.approx(30)
        status = await pump.set_rate(75)
        assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 75)
        status = await pump.stop()
        assert status.state is PumpState.STOPPED
        assert model.state is PumpState.STOPPED
        status = await pump.clear_volume()
        assert status.volume_infused_ml == 0
        assert model.status().volume_infused_ml == 0
        assert pump.last_status is not None
        assert pump.last_status.same_reading(model.status())


async def test_completion_at_the_vtbi_is_published(clock: VirtualClock, broker) -> None:
    """The pump stops by itself at its VTBI and says so without being asked (L3)."""
    async with mqtt_env(clock, broker) as env:
        await env.driver.set_vtbi(10)
        await env.driver.set_rate(60)
        await env.driver.run()
        await clock.advance(11 * 60)  # completes at 10 min
        status = await wait_status(env.driver, lambda s: s.state is PumpState.STOPPED)
        assert status.volume_infused_ml == pytest.approx(10)
        assert env.model.completed


@pytest.mark.parametrize("alarm", list(Alarm))
async def test_every_alarm_is_named_in_the_status(
    clock: VirtualClock, broker, alarm: Alarm
) -> None:
    """A1: an alarm raised on the pump reaches the driver by name, unasked; clearing it too."""
    async with mqtt_env(clock, broker) as env:
        await env.driver.set_rate(100)
        await env.driver.run()
        env.model.raise_alarm(alarm)
        status = await wait_status(env.driver, lambda s: s.state is PumpState.ALARM)
        assert status.alarms == {alarm}
        assert status.rate_ml_h == 100  # the pump keeps its rate (A1: no rate jump after)
        with pytest.raises(PumpCommandRejected) as refused:
            await env.driver.run()
        assert refused.value.code == "NA"
        env.model.clear_alarm(alarm)
        status = await wait_status(env.driver, lambda s: s.state is PumpState.STOPPED)
        assert status.alarms == frozenset()


async def test_no_ack_is_a_timeout(clock: VirtualClock, broker) -> None:
    """A3: no ack within the command timeout raises PumpTimeout; no id is left pending."""
    async with mqtt_env(clock, broker, command_timeout_s=0.3) as env:
        env.model.faults.no_reply = True
        with pytest.raises(PumpTimeout) as timed_out:
            await env.driver.set_rate(80)
        assert timed_out.value.retryable
        assert env.model.status().rate_ml_h == 0  # swallowed, not executed
        assert env.driver._pending == {}
        env.model.faults.no_reply = False
        assert (await env.driver.set_rate(80)).rate_ml_h == 80


async def test_late_ack_is_a_timeout_and_then_ignored(clock: VirtualClock, broker) -> None:
    """An ack later than the command timeout fails the command; it then resolves nothing."""
    async with mqtt_env(clock, broker, command_timeout_s=0.2) as env:
        topics = env.driver.topics
        async with spy(broker, topics.ack) as watcher:
            env.model.faults.late_reply_s = 0.4
            with pytest.raises(PumpTimeout):
                await env.driver.set_rate(20)
            env.model.faults.late_reply_s = 0
            late = await watcher.next_json(topics.ack)  # the late ack did come, to no one
            assert late["ok"] is True
        assert env.driver._pending == {}
        status = await env.driver.set_rate(30)
        assert status.rate_ml_h == 30


async def test_garbled_ack_is_never_acted_on_and_the_command_is_asked_again(
    clock: VirtualClock, broker
) -> None:
    """A garbled ack is ignored; the driver resends the same id and the pump, knowing the id,
    re-acknowledges without executing twice. Garbled without end: PumpTimeout."""
    async with mqtt_env(clock, broker, command_timeout_s=0.5) as env:
        env.model.faults.garble_replies = 1
        assert (await env.driver.set_vtbi(50)).vtbi_ml == 50
        assert env.server.executed["set_vtbi"] == 1
        env.model.faults.garble_replies = 1000
        with pytest.raises(PumpTimeout) as timed_out:
            await env.driver.set_vtbi(60)
        assert timed_out.value.operation == "set_vtbi"
        assert env.server.executed["set_vtbi"] == 2  # once, however many times asked
        assert env.model.faults.garble_replies == 1000 - 3  # sent once, resent twice


async def test_refused_command_raises_with_the_pumps_error(clock: VirtualClock, broker) -> None:
    """ok=false -> PumpCommandRejected carrying the pump's error code; nothing changes."""
    async with mqtt_env(clock, broker) as env:
        env.model.faults.refuse_next = 1
        with pytest.raises(PumpCommandRejected) as refused:
            await env.driver.set_rate(40)
        assert refused.value.code == "NA"
        assert not refused.value.retryable
        assert env.model.status().rate_ml_h == 0
        with pytest.raises(PumpCommandRejected) as out_of_range:
            await env.driver.set_rate(10_000)
        assert out_of_range.value.code == "OOR"
        assert "rate_ml_h" in out_of_range.value.message
        with pytest.raises(PumpCommandRejected) as no_rate:
            await env.driver.run()
        assert no_rate.value.code == "NA"
        assert env.model.state is PumpState.STOPPED


async def test_non_finite_argument_is_refused_before_sending(clock: VirtualClock, broker) -> None:
    """A non-finite rate is refused ("OOR") naming the field; nothing is published."""
    async with mqtt_env(clock, broker) as env, spy(broker, env.driver.topics.cmd) as watcher:
        with pytest.raises(PumpCommandRejected, match="rate_ml_h"):
            await env.driver.set_rate(float("nan"))
        await env.driver.read_status()
        first = await watcher.next_json(env.driver.topics.cmd)
        assert first["op"] == "status"


async def test_duplicate_command_id_is_executed_once(clock: VirtualClock, broker) -> None:
    """QoS 1 may deliver twice: a repeated id is acknowledged again, not executed again."""
    async with mqtt_env(clock, broker) as env:
        topics = env.driver.topics
        async with spy(broker, topics.ack) as controller:
            await controller.publish(
                topics.cmd, '{"id": "dup-1", "op": "set_rate", "rate_ml_h": 50}'
            )
            first = await controller.next_json(topics.ack)
            await controller.publish(
                topics.cmd, '{"id": "other", "op": "set_rate", "rate_ml_h": 60}'
            )
            await controller.next_json(topics.ack)
            await controller.publish(
                topics.cmd, '{"id": "dup-1", "op": "set_rate", "rate_ml_h": 50}'
            )
            again = await controller.next_json(topics.ack)
        assert again == first
        assert first["ok"] is True
        assert env.model.status().rate_ml_h == 60  # dup-1 did not run a second time
        assert env.server.executed["set_rate"] == 2


async def test_retained_status_and_last_will_offline(clock: VirtualClock, broker) -> None:
    """A2: the will marks a dead pump offline; commands fail fast; late subscribers see it."""
    model = PumpModel("will-1", clock)
    server = MqttPumpServer(model, broker.host, broker.port, reconnect_min_s=60, reconnect_max_s=60)
    async with server:
        async with asyncio.timeout(10):
            await server.online.wait()
        topics = Topics.for_pump("will-1")
        async with spy(broker, topics.status) as late:
            retained = await late.next(topics.status)
            assert retained.retain  # the broker kept it for late subscribers
        async with MqttPump("will-1", broker.host, broker.port, command_timeout_s=1) as pump:
            await pump.set_rate(25)
            server.drop_connection()  # the pump dies without a word
            status = await wait_status(pump, lambda s: s.state is PumpState.OFFLINE)
            assert status.rate_ml_h == 25  # last known reading kept
            async with asyncio.timeout(0.2):  # fail fast, not after the command timeout
                with pytest.raises(PumpConnectionError, match="offline"):
                    await pump.read_status()
        async with spy(broker, topics.status) as late:
            message = await late.next(topics.status)
        assert message.retain
        assert json.loads(message.payload) == {"state": "offline"}  # type: ignore[arg-type]


async def test_pump_back_after_a_dropped_connection(clock: VirtualClock, broker) -> None:
    """drop_connection: the will fires (offline), the pump reconnects and reports again."""
    async with mqtt_env(clock, broker, command_timeout_s=1) as env:
        await env.driver.set_rate(70)
        env.model.faults.drop_connection = True
        with pytest.raises(PumpConnectionError):  # the command is swallowed by the dropping pump
            await env.driver.read_status()
        await wait_status(env.driver, lambda s: s.state is not PumpState.OFFLINE)
        assert (await env.driver.read_status()).rate_ml_h == 70
        assert env.server.connections == 2
        assert not env.model.faults.drop_connection  # one shot


async def test_seq_increases_by_one_with_every_status(clock: VirtualClock, broker) -> None:
    """Every status (topic and ack) carries seq + 1; the driver ignores an older one."""
    async with mqtt_env(clock, broker) as env:
        topics = env.driver.topics
        async with spy(broker, topics.status) as watcher:
            await watcher.next(topics.status)  # retained
            await env.driver.set_rate(10)
            await env.driver.set_vtbi(20)
            await env.driver.read_status()
            seqs = [(await watcher.next_json(topics.status))["seq"] for _ in range(3)]
            assert seqs[1] == seqs[0] + 1
            assert seqs[2] == seqs[1] + 1


async def test_older_or_repeated_seq_is_ignored_and_offline_restarts_the_count() -> None:
    """The driver keeps the newest reading: a status with seq <= the last is a duplicate."""
    pump = MqttPump("p7", "127.0.0.1")
    topic = pump.topics.status

    def deliver(seq: int, rate: float, *, retain: bool = False) -> None:
        body = {
            "state": "running", "rate_ml_h": rate, "vtbi_ml": 0.0, "volume_infused_ml": 0.0,
            "alarms": [], "seq": seq, "ts": "2026-01-05T08:00:00Z",
        }  # fmt: skip
        pump._dispatch(aiomqtt.Message(topic, json.dumps(body).encode(), 1, retain, 1, None))

    deliver(5, 10.0, retain=True)
    assert pump.last_status is not None
    assert pump.last_status.rate_ml_h == 10
    assert pump.last_contact is None  # retained: a reading, not contact
    deliver(6, 20.0)
    deliver(6, 30.0)  # QoS 1 duplicate
    deliver(4, 40.0)  # older
    assert pump.last_status.rate_ml_h == 20
    assert pump.last_contact is not None
    pump._dispatch(aiomqtt.Message(topic, b'{"state": "offline"}', 1, False, 2, None))
    assert pump.last_status.state is PumpState.OFFLINE
    deliver(1, 50.0)  # a restarted pump counts from the start again
    assert pump.last_status.rate_ml_h == 50
    assert pump.last_status.state is PumpState.RUNNING


async def test_staleness_follows_live_contact(clock: VirtualClock, broker) -> None:
    """A2: a status is stale once older than the link timeout; live contact refreshes it."""
    async with mqtt_env(clock, broker, link_timeout_s=5) as env:
        pump = env.driver
        loop = asyncio.get_running_loop()
        before = loop.time()
        await pump.read_status()
        contact = pump.last_contact
        assert contact is not None
        assert contact >= before
        assert not pump.is_stale()
        assert not pump.is_stale(now=contact + 4.9)
        assert pump.is_stale(now=contact + 5.1)
        await pump.set_rate(10)
        assert pump.last_contact is not None
        assert pump.last_contact >= contact


async def test_retained_status_is_a_reading_not_contact(clock: VirtualClock, broker) -> None:
    """A2: a retained status may be old: it gives a reading but never makes the link fresh."""
    async with mqtt_env(clock, broker) as env:
        await env.driver.set_rate(15)
        env.model.faults.no_reply = True  # the pump hangs: no more statuses, no acks
        other = MqttPump(env.model.pump_id, broker.host, broker.port, command_timeout_s=0.2)
        with pytest.raises(PumpTimeout):
            await other.connect()  # first contact fails: the pump does not answer
        assert other.last_status is not None
        assert other.last_status.rate_ml_h == 15  # the retained reading
        assert other.last_contact is None
        assert other.is_stale()


async def test_malformed_statuses_are_ignored(clock: VirtualClock, broker) -> None:
    """Malformed status payloads are logged and never change the driver's view."""
    async with mqtt_env(clock, broker) as env:
        await env.driver.set_rate(12)
        before = env.driver.last_status
        assert before is not None
        good = {
            "state": "running", "rate_ml_h": 1.0, "vtbi_ml": 0.0, "volume_infused_ml": 0.0,
            "alarms": [], "seq": 10_000, "ts": "2026-01-05T08:00:00Z",
        }  # fmt: skip
        bad: list[bytes | str] = [
            b"{not json",
            b"\xff\xfe",
            "[]",
            json.dumps({**good, "state": "exploded"}),
            json.dumps({**good, "rate_ml_h": "12"}),
            json.dumps({**good, "rate_ml_h": True}),
            json.dumps({**good, "volume_infused_ml": -1}),
            json.dumps({**good, "alarms": ["gremlins"]}),
            json.dumps({**good, "seq": 1.5}),
            json.dumps({**good, "ts": "2026-01-05T08:00:00"}),
            json.dumps({**good, "ts": "2026-01-05T09:00:00+01:00"}),
            json.dumps({**good, "extra": 1}),
            json.dumps({k: v for k, v in good.items() if k != "seq"}),
            '{"state": "offline", "seq": 1}',
            b"x" * 20_000,
        ]
        topics = env.driver.topics
        async with spy(broker, topics.status) as attacker:
            await attacker.next(topics.status)  # retained
            for payload in bad:
                await attacker.publish(topics.status, payload)
                await attacker.next(topics.status)
        status = await env.driver.read_status()
        assert status.rate_ml_h == 12
        assert env.driver.last_status is not None
        assert env.driver.last_status.state is PumpState.STOPPED


async def test_malformed_ack_for_a_pending_id_is_never_acted_on(
    clock: VirtualClock, broker
) -> None:
    """Acks with the right id but a bad shape resolve nothing: the command still times out."""
    async with mqtt_env(clock, broker, command_timeout_s=0.5) as env:
        topics = env.driver.topics
        env.model.faults.no_reply = True
        async with spy(broker, topics.cmd) as attacker:
            command = asyncio.create_task(env.driver.set_rate(99), name="test-command")
            sent = await attacker.next_json(topics.cmd)
            status = {
                "state": "running", "rate_ml_h": 99.0, "vtbi_ml": 0.0, "volume_infused_ml": 0.0,
                "alarms": [], "seq": 10_000, "ts": "2026-01-05T08:00:00Z",
            }  # fmt: skip
            for ack in (
                {"id": sent["id"], "ok": True},  # no status
                {"id": sent["id"], "ok": "yes", "status": status},
                {"id": sent["id"], "ok": False, "status": status},  # refusal without an error
                {"id": sent["id"], "ok": True, "error": "NA", "status": status},
                {"id": sent["id"], "ok": True, "status": {**status, "state": "flying"}},
            ):
                await attacker.publish(topics.ack, json.dumps(ack))
            with pytest.raises(PumpTimeout):
                await command
        assert env.driver.last_status is not None
        assert env.driver.last_status.rate_ml_h != 99


async def test_reconnects_after_the_broker_is_killed_and_restarted(
    clock: VirtualClock, broker
) -> None:
    """A2: broker killed -> commands fail fast; restarted -> driver and pump both come back."""
    async with mqtt_env(clock, broker) as env:
        await env.driver.set_rate(33)
        await env.break_link()
        assert not env.driver.connected
        async with asyncio.timeout(0.2):  # fail fast during the outage
            with pytest.raises(PumpConnectionError, match="no link"):
                await env.driver.read_status()
        await env.restore_link()
        status = await env.driver.read_status()
        assert status.rate_ml_h == 33
        assert env.driver.reconnections == 1
        assert env.server.connections == 2


async def test_connect_fails_cleanly_without_a_broker() -> None:
    """No broker within the link timeout: PumpConnectionError, and no task left behind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        pump = MqttPump("lonely", "127.0.0.1", port, link_timeout_s=0.3)
        with pytest.raises(PumpConnectionError, match="not reachable"):
            await pump.connect()
        assert not pump.connected


def test_bad_configuration_is_refused() -> None:
    """Pump ids or prefixes that would be MQTT wildcards, and non-positive timeouts, are refused."""
    for pump_id in ("a/b", "a+", "#", ""):
        with pytest.raises(PumpConfigError, match="pump_id"):
            MqttPump(pump_id, "127.0.0.1")
    with pytest.raises(PumpConfigError, match="prefix"):
        MqttPump("p1", "127.0.0.1", prefix="pumpctl/+")
    with pytest.raises(PumpConfigError, match="command_timeout_s"):
        MqttPump("p1", "127.0.0.1", command_timeout_s=0)


def test_backoff_is_capped_exponential_with_jitter() -> None:
    """Reconnection delays double up to the cap, each jittered within [d/2, d]."""
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (3, 0.8), (10, 5.0), (1000, 5.0)]:
        delays = {backoff_delay(attempt, 0.1, 5.0) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


async def test_tcp_nodelay_on_driver_and_simulator_sockets(clock: VirtualClock, broker) -> None:
    """interfaces.md section 2 (latency): both clients set TCP_NODELAY on their sockets."""
    async with mqtt_env(clock, broker) as env:
        assert env.driver._client is not None
        assert env.server.client is not None
        for client in (env.driver._client, env.server.client):
            sock = client._client.socket()
            assert isinstance(sock, socket.socket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_status_changes_stream_every_change(clock: VirtualClock, broker) -> None:
    """status_changes yields each new reading once (unsolicited ones included)."""
    async with mqtt_env(clock, broker) as env:
        seen: list[PumpState] = []

        async def collect() -> None:
            async for status in env.driver.status_changes():
                seen.append(status.state)
                if status.state is PumpState.ALARM:
                    return

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(collect(), name="test-collect")
            await asyncio.sleep(0)  # let the collector subscribe
            await env.driver.set_rate(5)
            await env.driver.run()
            env.model.raise_alarm(Alarm.OCCLUSION)
            async with asyncio.timeout(10):
                await task
        assert seen[-2:] == [PumpState.RUNNING, PumpState.ALARM]
