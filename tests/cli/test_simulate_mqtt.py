"""`pumpctl simulate mqtt` as a real subprocess against the fixture's Mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from pumpctl_process import BOUND_S, PUMPCTL, pumpctl_server, read_lines, run_pumpctl

from drivers.base import PumpState
from drivers.mqtt import MqttPump
from simulator.control import control_request

pytestmark = pytest.mark.mosquitto


@asynccontextmanager
async def simulate_mqtt(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict]]:
    """Run `pumpctl simulate mqtt ARGS`; yield the process and its first line (JSON)."""
    async with pumpctl_server("simulate", "mqtt", *args) as process:
        (first,) = await read_lines(process, 1)
        assert first, "the simulator exited before announcing itself"
        yield process, json.loads(first)


async def test_simulate_mqtt_serves_pumps_and_the_pump_cli_reads_them(broker) -> None:
    """The first line names pumps, topics and control; `pumpctl pump status --mqtt` reads JSON."""
    address = f"{broker.host}:{broker.port}"
    async with simulate_mqtt("--broker", address, "--pumps", "2") as (process, line):
        assert line["transport"] == "mqtt"
        assert line["broker"] == address
        assert set(line["pumps"]) == {"pump-1", "pump-2"}
        assert line["pumps"]["pump-2"]["cmd"] == "pumpctl/v1/pumps/pump-2/cmd"
        answer = await run_pumpctl("pump", "status", "--mqtt", address, "--pump", "pump-2")
        assert answer.returncode == 0, answer.stderr
        status = json.loads(answer.stdout)
        assert status["pump_id"] == "pump-2"
        assert status["state"] == "stopped"
        # the control interface of the running simulator reaches its pumps
        host, port = line["control"].removeprefix("tcp://").rsplit(":", 1)
        reply = await control_request(host, int(port), {"pump": "pump-1", "alarm": "door_open"})
        assert reply["ok"] is True
        async with MqttPump("pump-1", broker.host, broker.port) as pump:
            seen = await pump.read_status()
        assert seen.state is PumpState.ALARM
        assert {a.value for a in seen.alarms} == {"door_open"}
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BOUND_S):
            await process.communicate()  # drains its pipes: wait() could block on a full one
        assert process.returncode == 0
    # a clean stop leaves every pump marked offline (retained)
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe("pumpctl/v1/pumps/+/status", qos=1)
        seen_offline = {}
        async with asyncio.timeout(BOUND_S):
            async for message in client.messages:
                seen_offline[message.topic.value] = json.loads(message.payload)  # type: ignore[arg-type]
                if len(seen_offline) == 2:
                    break
    assert list(seen_offline.values()) == [{"state": "offline"}] * 2


async def test_simulate_mqtt_pumps_beat_at_the_heartbeat_given(broker) -> None:
    """`--heartbeat S`: each status names it (contract 2) and a stopped pump beats unasked;
    `--contract 1` serves the contract before it (no `contract`, no beat while stopped)."""
    address = f"{broker.host}:{broker.port}"
    async with (
        simulate_mqtt("--broker", address, "--heartbeat", "0.2"),
        aiomqtt.Client(broker.host, broker.port) as client,
    ):
        await client.subscribe("pumpctl/v1/pumps/pump-1/status", qos=1)
        beats = []
        async with asyncio.timeout(BOUND_S):
            async for message in client.messages:
                beats.append(json.loads(message.payload))  # type: ignore[arg-type]
                if len(beats) == 3:  # the retained status, then two beats
                    break
        assert [(b["contract"], b["heartbeat_s"], b["state"]) for b in beats] == [
            (2, 0.2, "stopped")
        ] * 3
        assert beats[2]["seq"] == beats[1]["seq"] + 1
    async with (
        simulate_mqtt("--broker", address, "--contract", "1"),
        aiomqtt.Client(broker.host, broker.port) as client,
    ):
        await client.subscribe("pumpctl/v1/pumps/pump-1/status", qos=1)
        async with asyncio.timeout(BOUND_S):
            async for message in client.messages:
                status = json.loads(message.payload)  # type: ignore[arg-type]
                if status != {"state": "offline"}:  # the first run's clean stop, retained
                    break
        assert "contract" not in status
        assert "heartbeat_s" not in status


def test_simulate_mqtt_refuses_a_bad_broker_address() -> None:
    """A malformed --broker is a usage error naming the option; nothing is served."""
    result = subprocess.run(
        [*PUMPCTL, "simulate", "mqtt", "--broker", "localhost"],
        capture_output=True, text=True, timeout=BOUND_S, check=False,
        env={**os.environ, "COLUMNS": "200"}, cwd=Path(__file__).parent,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--broker" in result.stderr or "HOST:PORT" in result.stderr


async def test_pump_status_of_an_unknown_pump_id_says_so(broker) -> None:
    """No pump ever published under that id: the one-line error says where it looked."""
    answer = await run_pumpctl(
        "pump", "status", "--mqtt", f"{broker.host}:{broker.port}", "--pump", "pump-9"
    )
    assert answer.returncode == 1
    assert answer.stdout == ""
    (line,) = answer.stderr.strip().splitlines()
    assert "pumpctl/v1/pumps/pump-9/status" in line
    assert "pump id" in line
