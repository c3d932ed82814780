"""The controller's ledger id travels with every command, so a command's fate traces to it.

MQTT sends it as the command's `id` (seen here on the wire by a subscriber of the test's own on
a real Mosquitto); the serial driver records it with each exchange (its logs) and every error
of the command carries it (`PumpError.command_id`, and the error's text).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from mqtt_env import mqtt_env, spy
from serial_env import serial_env

from drivers.base import PumpCommandRejected, PumpTimeout
from drivers.mqtt import MqttPump
from pumpctl.clock import VirtualClock


async def test_a_timed_out_command_carries_its_ledger_id(pump_env: Any) -> None:
    pump_env.model.faults.no_reply = True
    with pytest.raises(PumpTimeout) as info:
        await pump_env.driver.set_rate(40, command_id="ledger-11")
    assert info.value.command_id == "ledger-11"
    assert "[command ledger-11]" in str(info.value)


async def test_a_refused_command_carries_its_ledger_id(pump_env: Any) -> None:
    pump_env.model.faults.refuse_next = 1
    with pytest.raises(PumpCommandRejected) as info:
        await pump_env.driver.set_vtbi(100, command_id="ledger-12")
    assert (info.value.code, info.value.command_id) == ("NA", "ledger-12")


async def test_a_command_refused_before_sending_carries_its_ledger_id(pump_env: Any) -> None:
    with pytest.raises(PumpCommandRejected) as info:
        await pump_env.driver.set_rate(float("inf"), command_id="ledger-13")
    assert info.value.command_id == "ledger-13"


async def test_without_a_ledger_id_errors_name_the_id_sent_if_any(pump_env: Any) -> None:
    """Serial: no id, none named. MQTT: the fresh id the command went out with."""
    pump_env.model.faults.refuse_next = 1
    with pytest.raises(PumpCommandRejected) as info:
        await pump_env.driver.run()
    if isinstance(pump_env.driver, MqttPump):
        assert info.value.command_id is not None
        assert len(info.value.command_id) == 32
        assert f"[command {info.value.command_id}]" in str(info.value)
    else:
        assert info.value.command_id is None
        assert "[command" not in str(info.value)


async def test_serial_exchanges_are_logged_with_their_ledger_id(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each try of each exchange of the command names the id: which of them failed is traced."""
    async with serial_env(clock) as env:
        caplog.set_level(logging.DEBUG, logger="drivers.serial")
        env.model.faults.no_reply = True
        with pytest.raises(PumpTimeout) as info:
            await env.driver.set_rate(25, command_id="ledger-21")
        assert info.value.command_id == "ledger-21"
        sent = [r.getMessage() for r in caplog.records if "sends" in r.getMessage()]
        failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
        assert len(sent) == 3  # RAT 25 MH, tried three times
        assert all("'0RAT25.00MH'" in m and "[command ledger-21]" in m for m in sent), sent
        assert all("[command ledger-21]" in m for m in failed), failed
        caplog.clear()
        env.model.faults.no_reply = False
        await env.driver.read_status(command_id="ledger-22")
        sent = [r.getMessage() for r in caplog.records if "sends" in r.getMessage()]
        assert [m.split("'")[1] for m in sent] == ["0RAT", "0VOL", "0DIS"]
        assert all("[command ledger-22]" in m for m in sent)


@pytest.mark.mosquitto
async def test_mqtt_sends_the_ledger_id_as_the_command_id(clock: VirtualClock, broker) -> None:
    async with mqtt_env(clock, broker) as env, spy(broker, env.driver.topics.cmd) as wire:
        status = await env.driver.set_rate(42, command_id="ledger-31")
        sent = await wire.next_json(env.driver.topics.cmd)
        assert sent == {"id": "ledger-31", "op": "set_rate", "rate_ml_h": 42}
        assert status.rate_ml_h == 42
        await env.driver.stop(command_id="ledger-32")
        assert (await wire.next_json(env.driver.topics.cmd))["id"] == "ledger-32"
        await env.driver.read_status()  # without one: a fresh id each time
        fresh = (await wire.next_json(env.driver.topics.cmd))["id"]
        assert fresh not in {"ledger-31", "ledger-32"}


@pytest.mark.mosquitto
async def test_a_ledger_id_sent_again_is_not_executed_twice(clock: VirtualClock, broker) -> None:
    """A controller resending a ledger command (its fate was unknown) gets the first ack back;
    the pump does not execute it a second time, even after another command."""
    async with mqtt_env(clock, broker) as env:
        first = await env.driver.set_rate(50, command_id="ledger-41")
        await env.driver.set_rate(60, command_id="ledger-42")
        again = await env.driver.set_rate(50, command_id="ledger-41")
        assert again.same_reading(first)  # the original ack, re-sent
        assert env.model.status().rate_ml_h == 60
        assert env.server.executed["set_rate"] == 2
