"""The MQTT simulator seen from the wire: a plain MQTT client against a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import pytest
from mqtt_env import Spy, spy

from drivers.base import Alarm
from drivers.mqtt import MQTT_CONTRACT, decode_status
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import REMEMBERED_IDS, MqttPumpServer, MqttSimulator

pytestmark = pytest.mark.mosquitto

CONTRACT_1_KEYS = {"state", "rate_ml_h", "vtbi_ml", "volume_infused_ml", "alarms", "seq", "ts"}
STATUS_KEYS = CONTRACT_1_KEYS | {"contract", "heartbeat_s"}


@asynccontextmanager
async def served(
    clock: VirtualClock, broker, *, heartbeat_s: float = 1.0, contract: int = MQTT_CONTRACT
) -> AsyncIterator[tuple[MqttPumpServer, Spy]]:
    """One simulated pump online, and a spy on its status and ack topics (retained consumed)."""
    model = PumpModel("sim-1", clock)
    server = MqttPumpServer(
        model, broker.host, broker.port, heartbeat_s=heartbeat_s, contract=contract
    )
    async with server:
        async with asyncio.timeout(10):
            await server.online.wait()
        async with spy(broker, server.topics.status, server.topics.ack) as watcher:
            await watcher.next(server.topics.status)  # the retained announcement
            yield server, watcher


async def command(
    watcher: Spy, server: MqttPumpServer, body: dict[str, object]
) -> dict[str, object]:
    """Send one command and return its ack."""
    await watcher.publish(server.topics.cmd, json.dumps(body))
    return await watcher.next_json(server.topics.ack)


async def test_announces_a_retained_status_stamped_with_its_clinical_clock(
    clock: VirtualClock, broker
) -> None:
    """On connection: retained status with every field, ts = the pump's clock in UTC."""
    async with served(clock, broker) as (server, _):
        async with spy(broker, server.topics.status) as late:
            message = await late.next(server.topics.status)
        assert message.retain
        body = json.loads(message.payload)  # type: ignore[arg-type]
        assert set(body) == STATUS_KEYS
        assert (body["contract"], body["heartbeat_s"]) == (2, 1.0)
        assert body["state"] == "stopped"
        assert datetime.fromisoformat(body["ts"]) == clock.now()
        decode_status(message.payload)  # type: ignore[arg-type]  # our own codec accepts it


COMMANDS: list[dict[str, object]] = [
    {"op": "set_vtbi", "vtbi_ml": 100},
    {"op": "set_rate", "rate_ml_h": 120},
    {"op": "start"},
    {"op": "status"},
    {"op": "stop"},
    {"op": "clear_volume"},
]


async def test_every_command_is_acked_first_with_the_status_it_left(
    clock: VirtualClock, broker
) -> None:
    """Contract 2, one round trip (A3): each command's ack comes first and carries the status
    the command left the pump in (seq + 1); the same status follows on the status topic."""
    async with served(clock, broker, heartbeat_s=30) as (server, watcher):
        seqs = []
        for i, body in enumerate(COMMANDS):
            await watcher.publish(server.topics.cmd, json.dumps({"id": f"c{i}", **body}))
            first = await watcher.next(f"{server.topics.status[: -len('status')]}+")
            assert first.topic.value == server.topics.ack  # the ack, before any status
            ack = json.loads(first.payload)  # type: ignore[arg-type]
            status = await watcher.next_json(server.topics.status)
            assert ack == {"id": f"c{i}", "ok": True, "status": status}
            seqs.append(status["seq"])
        assert seqs == list(range(seqs[0], seqs[0] + 6))
        assert server.model.status().rate_ml_h == 120
        assert server.model.status().vtbi_ml == 100


async def test_a_contract_1_pump_publishes_its_status_before_the_ack(
    clock: VirtualClock, broker
) -> None:
    """`contract=1` serves the contract before version 2 (interfaces.md section 2, "Versions"):
    no `contract` or `heartbeat_s`, the status first, then the ack carrying it."""
    async with served(clock, broker, contract=1) as (server, watcher):
        for i, body in enumerate(COMMANDS):
            await watcher.publish(server.topics.cmd, json.dumps({"id": f"c{i}", **body}))
            first = await watcher.next(f"{server.topics.status[: -len('status')]}+")
            assert first.topic.value == server.topics.status  # the status, before its ack
            status = json.loads(first.payload)  # type: ignore[arg-type]
            assert set(status) == CONTRACT_1_KEYS
            ack = await watcher.next_json(server.topics.ack)
            assert ack == {"id": f"c{i}", "ok": True, "status": status}
            assert decode_status(first.payload).version == 1  # type: ignore[arg-type]


async def test_a_heartbeat_in_every_state_and_a_status_on_every_change(
    clock: VirtualClock, broker
) -> None:
    """Status by push: a stopped pump beats as a running one does (seq + 1 each, unasked);
    a change is published at once, between beats."""
    async with served(clock, broker, heartbeat_s=0.1) as (server, watcher):
        beats = [await watcher.next_json(server.topics.status, bound_s=2) for _ in range(3)]
        assert [b["state"] for b in beats] == ["stopped"] * 3
        assert [b["seq"] for b in beats] == list(range(beats[0]["seq"], beats[0]["seq"] + 3))
        assert all(b["heartbeat_s"] == 0.1 for b in beats)
        assert sum(server.executed.values()) == 0  # nobody asked
        server.model.set_rate(40)  # a change on the pump itself (its keypad)
        while (status := await watcher.next_json(server.topics.status, bound_s=2))[
            "rate_ml_h"
        ] != 40:
            pass
        assert status["state"] == "stopped"


async def test_a_contract_1_pump_beats_only_while_running(clock: VirtualClock, broker) -> None:
    """The contract before version 2: no heartbeat while stopped (it was asked instead)."""
    async with served(clock, broker, heartbeat_s=0.05, contract=1) as (server, watcher):
        with pytest.raises(TimeoutError):
            await watcher.next(server.topics.status, bound_s=0.3)  # six beats' time: none
        await command(watcher, server, {"id": "r", "op": "set_rate", "rate_ml_h": 60})
        await command(watcher, server, {"id": "s", "op": "start"})
        ticks = [await watcher.next_json(server.topics.status, bound_s=2) for _ in range(3)]
        assert [t["state"] for t in ticks] == ["running"] * 3


async def test_running_pump_publishes_at_least_every_interval(clock: VirtualClock, broker) -> None:
    """A running pump reports unasked on its wire-time ticker, seq + 1 each time."""
    async with served(clock, broker, heartbeat_s=0.05) as (server, watcher):
        await command(watcher, server, {"id": "r", "op": "set_rate", "rate_ml_h": 60})
        await command(watcher, server, {"id": "s", "op": "start"})
        ticks = [await watcher.next_json(server.topics.status, bound_s=2) for _ in range(3)]
        assert [t["state"] for t in ticks] == ["running"] * 3
        assert ticks[1]["seq"] == ticks[0]["seq"] + 1
        assert ticks[2]["seq"] == ticks[1]["seq"] + 1


async def test_clinical_completion_is_published_when_it_happens(
    clock: VirtualClock, broker
) -> None:
    """L3: a pump reaching its VTBI stops and says so at that clinical instant (virtual clock)."""
    async with served(clock, broker) as (server, watcher):
        await command(watcher, server, {"id": "v", "op": "set_vtbi", "vtbi_ml": 50})
        await command(watcher, server, {"id": "r", "op": "set_rate", "rate_ml_h": 100})
        await command(watcher, server, {"id": "s", "op": "start"})
        await clock.advance(3600)  # completes at 30 min
        while (status := await watcher.next_json(server.topics.status))["state"] != "stopped":
            pass
        assert status["volume_infused_ml"] == 50
        assert server.model.completed


async def test_alarms_are_named_in_the_status(clock: VirtualClock, broker) -> None:
    """Every alarm the model raises is published by name (interfaces.md section 2)."""
    async with served(clock, broker) as (server, watcher):
        for alarm in Alarm:
            server.model.raise_alarm(alarm)
            status = await watcher.next_json(server.topics.status)
            assert status["state"] == "alarm"
            assert alarm.value in status["alarms"]
        assert len(status["alarms"]) == len(Alarm)


async def test_duplicate_id_is_reacked_not_reexecuted(clock: VirtualClock, broker) -> None:
    """A repeated id gets the same ack again; the command runs once."""
    async with served(clock, broker) as (server, watcher):
        first = await command(watcher, server, {"id": "d", "op": "set_rate", "rate_ml_h": 10})
        await command(watcher, server, {"id": "e", "op": "set_rate", "rate_ml_h": 20})
        again = await command(watcher, server, {"id": "d", "op": "set_rate", "rate_ml_h": 10})
        assert again == first
        assert server.model.status().rate_ml_h == 20
        assert server.executed["set_rate"] == 2


async def test_remembers_at_least_the_last_1024_ids(clock: VirtualClock, broker) -> None:
    """The oldest id beyond 1,024 is forgotten; every later one is still recognised."""
    async with served(clock, broker) as (server, watcher):
        for i in range(REMEMBERED_IDS + 1):
            await watcher.publish(server.topics.cmd, json.dumps({"id": f"n{i}", "op": "status"}))
        for _ in range(REMEMBERED_IDS + 1):
            await watcher.next(server.topics.ack)
        assert server.executed["status"] == REMEMBERED_IDS + 1
        await command(watcher, server, {"id": "n1", "op": "status"})  # still remembered
        assert server.executed["status"] == REMEMBERED_IDS + 1
        await command(watcher, server, {"id": "n0", "op": "status"})  # forgotten: runs again
        assert server.executed["status"] == REMEMBERED_IDS + 2


async def test_refusals_carry_the_error_code(clock: VirtualClock, broker) -> None:
    """refuse_next -> ok=false "NA"; out of range -> "OOR" naming the field; nothing changes."""
    async with served(clock, broker) as (server, watcher):
        server.model.faults.refuse_next = 1
        ack = await command(watcher, server, {"id": "a", "op": "set_rate", "rate_ml_h": 10})
        assert (ack["ok"], ack["error"]) == (False, "NA")
        ack = await command(watcher, server, {"id": "b", "op": "set_rate", "rate_ml_h": 10_000})
        assert (ack["ok"], ack["error"]) == (False, "OOR")
        assert "rate_ml_h" in str(ack["message"])
        assert server.model.status().rate_ml_h == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "m", "op": "launch"}, "op"),
        ({"id": "m", "op": "set_rate"}, "rate_ml_h"),
        ({"id": "m", "op": "set_rate", "rate_ml_h": "50"}, "rate_ml_h"),
        ({"id": "m", "op": "start", "rate_ml_h": 50}, "rate_ml_h"),
        ({"id": "m", "op": "start", "force": True}, "force"),
    ],
)
async def test_malformed_command_is_refused_by_id_and_not_executed(
    clock: VirtualClock, broker, body: dict[str, object], field: str
) -> None:
    """A command that fails validation is answered ok=false "COM" naming the field; no change."""
    async with served(clock, broker) as (server, watcher):
        ack = await command(watcher, server, body)
        assert (ack["id"], ack["ok"], ack["error"]) == ("m", False, "COM")
        assert field in str(ack["message"])
        assert sum(server.executed.values()) == 0


async def test_garbage_without_an_id_is_dropped(clock: VirtualClock, broker) -> None:
    """Bytes that are not a command with an id get no answer at all."""
    async with served(clock, broker) as (server, watcher):
        for junk in (b"\x00\xff", b"{", b"[1]", b'{"op": "start"}'):
            await watcher.publish(server.topics.cmd, junk)
        ack = await command(watcher, server, {"id": "ok", "op": "status"})
        assert ack["id"] == "ok"  # the first ack to arrive is the valid command's
        assert server.executed["status"] == 1


async def test_wire_faults(clock: VirtualClock, broker) -> None:
    """garble -> invalid JSON ack; late_reply_s -> ack that late; rate_delay_s -> rate later."""
    async with served(clock, broker) as (server, watcher):
        faults = server.model.faults
        faults.garble_replies = 1
        await watcher.publish(server.topics.cmd, '{"id": "g", "op": "status"}')
        garbled = await watcher.next(server.topics.ack)
        with pytest.raises(json.JSONDecodeError):
            json.loads(garbled.payload)  # type: ignore[arg-type]
        faults.late_reply_s = 0.2
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await command(watcher, server, {"id": "l", "op": "status"})
        assert loop.time() - sent >= 0.2
        faults.late_reply_s = 0
        faults.rate_delay_s = 0.1
        ack = await command(watcher, server, {"id": "r", "op": "set_rate", "rate_ml_h": 77})
        assert ack["ok"] is True
        assert ack["status"]["rate_ml_h"] == 0  # type: ignore[index]  # not yet
        while (await watcher.next_json(server.topics.status))["rate_ml_h"] != 77:
            pass
        assert server.model.status().rate_ml_h == 77


async def test_no_reply_hangs_the_pump(clock: VirtualClock, broker) -> None:
    """no_reply: commands are swallowed unexecuted; the next command after it is answered."""
    async with served(clock, broker) as (server, watcher):
        server.model.faults.no_reply = True
        await watcher.publish(server.topics.cmd, '{"id": "x", "op": "set_rate", "rate_ml_h": 5}')
        server.model.faults.no_reply = False
        ack = await command(watcher, server, {"id": "y", "op": "status"})
        assert ack["id"] == "y"
        assert server.model.status().rate_ml_h == 0


async def test_drop_connection_fires_the_will_then_reconnects(clock: VirtualClock, broker) -> None:
    """drop_connection: abrupt close -> the broker publishes the will; the pump comes back."""
    async with served(clock, broker, heartbeat_s=0.05) as (server, watcher):
        server.model.faults.drop_connection = True  # picked up by the ticker
        while json.loads((await watcher.next(server.topics.status)).payload) != {  # type: ignore[arg-type]
            "state": "offline"
        }:
            pass  # heartbeats sent before the fault was picked up
        back = await watcher.next_json(server.topics.status)
        assert back["state"] == "stopped"
        assert server.connections == 2
        assert not server.model.faults.drop_connection


async def test_clean_shutdown_leaves_offline_retained(clock: VirtualClock, broker) -> None:
    """Closing the simulator publishes a retained offline (a clean DISCONNECT sends no will)."""
    models = [PumpModel(f"many-{i}", clock) for i in range(3)]
    async with MqttSimulator(models, broker.host, broker.port) as sim:
        async with asyncio.timeout(10):
            await sim.wait_online()
        topics = [s.topics.status for s in sim.servers.values()]
    async with spy(broker, *topics) as late:
        seen = {}
        for _ in topics:
            message = await late.next("#")
            seen[message.topic.value] = json.loads(message.payload)  # type: ignore[arg-type]
    assert seen == {topic: {"state": "offline"} for topic in topics}
