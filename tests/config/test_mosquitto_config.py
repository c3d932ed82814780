"""The shipped Mosquitto configuration and ACL run on the installed Mosquitto and do their job."""

from __future__ import annotations

import asyncio
import getpass
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest

from drivers.base import PumpConnectionError, PumpState
from drivers.mqtt import MqttBus, MqttPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto

CONFIG = Path(__file__).resolve().parents[2] / "config"
PASSWORD = "s3cret"  # noqa: S105 - a throwaway password for a throwaway broker
BOUND_S = 10.0


def shipped_conf_for_test(port: int, tmp: Path) -> str:
    """The shipped configuration with its port, file paths and log target moved into `tmp`."""
    text = (CONFIG / "mosquitto.conf").read_text(encoding="utf-8")
    for pattern, replacement in [
        (r"^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1"),
        (r"^password_file .*$", f"password_file {tmp / 'passwd'}"),
        (r"^acl_file .*$", f"acl_file {tmp / 'acl'}"),
        (r"^persistence_location .*$", f"persistence_location {tmp}/"),
        (r"^log_dest syslog$", "log_dest stderr"),
    ]:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"mosquitto.conf: expected one line matching {pattern!r}"
    # started as root, Mosquitto would drop to user "mosquitto", who cannot read pytest's tmp
    # "running" (the readiness line the fixture waits for) is logged at level information
    return text + f"\nuser {getpass.getuser()}\nlog_type information\n"


@pytest.fixture
def secured_broker(tmp_path: Path, broker: Any) -> Iterator[int]:
    """Mosquitto running the shipped conf + ACL (users controller, pump-1, pump-2); its port.

    The plain `broker` fixture is asked for its binary (it fails, never skips, under CI=true).
    """
    binary = broker.binary
    passwd_tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for i, user in enumerate(("controller", "pump-1", "pump-2")):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            [passwd_tool, *create, "-b", str(tmp_path / "passwd"), user, PASSWORD],
            check=True, capture_output=True, timeout=BOUND_S,
        )  # fmt: skip
    shutil.copy(CONFIG / "mosquitto.acl", tmp_path / "acl")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "mosquitto.conf").write_text(shipped_conf_for_test(port, tmp_path))
    process = subprocess.Popen(
        [binary, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    running = threading.Event()  # set on Mosquitto's own "running" line, or when it exits
    log: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if " running" in line:
                running.set()
        running.set()

    reader = threading.Thread(target=drain, name="mosquitto-log", daemon=True)
    reader.start()
    try:
        if not running.wait(BOUND_S) or process.poll() is not None:
            pytest.fail(f"shipped mosquitto.conf did not start: {''.join(log)}")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=BOUND_S)
        reader.join(timeout=BOUND_S)
        if process.stderr is not None:
            process.stderr.close()


def client(port: int, user: str | None) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, username=user, password=PASSWORD if user else None)


async def next_on(messages: asyncio.Queue[aiomqtt.Message]) -> aiomqtt.Message:
    async with asyncio.timeout(BOUND_S):
        return await messages.get()


async def test_shipped_conf_sets_tcp_nodelay_and_refuses_anonymous(secured_broker: int) -> None:
    """interfaces.md section 2: `set_tcp_nodelay true`, accepted by this Mosquitto; no anonymous."""
    text = (CONFIG / "mosquitto.conf").read_text(encoding="utf-8")
    assert re.search(r"^set_tcp_nodelay true$", text, flags=re.MULTILINE)
    with pytest.raises(aiomqtt.MqttError):
        async with client(secured_broker, None):
            pass


async def test_acl_pumps_write_only_their_own_status_and_only_the_controller_commands(
    secured_broker: int,
) -> None:
    """A pump cannot impersonate another pump nor command one; the controller can command."""
    port = secured_broker
    received: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    async with (
        client(port, "controller") as controller,
        client(port, "pump-1") as pump1,
        client(port, "pump-2") as pump2,
    ):
        await controller.subscribe("pumpctl/v1/pumps/+/status", qos=1)
        await pump2.subscribe("pumpctl/v1/pumps/pump-2/cmd", qos=1)

        async def collect(c: aiomqtt.Client) -> None:
            async for message in c.messages:
                received.put_nowait(message)

        async with asyncio.TaskGroup() as tg:
            readers = [
                tg.create_task(collect(controller), name="test-acl-controller"),
                tg.create_task(collect(pump2), name="test-acl-pump-2"),
            ]
            # pump-1 impersonating pump-2 is dropped; its own status passes
            await pump1.publish("pumpctl/v1/pumps/pump-2/status", b'{"state":"running"}', qos=1)
            await pump1.publish("pumpctl/v1/pumps/pump-1/status", b'{"state":"stopped"}', qos=1)
            first = await next_on(received)
            assert first.topic.value == "pumpctl/v1/pumps/pump-1/status"
            # pump-1 commanding pump-2 is dropped; the controller's command passes
            await pump1.publish("pumpctl/v1/pumps/pump-2/cmd", b'{"id":"evil","op":"start"}', qos=1)
            await controller.publish(
                "pumpctl/v1/pumps/pump-2/cmd", b'{"id":"c1","op":"stop"}', qos=1
            )
            second = await next_on(received)
            assert second.topic.value == "pumpctl/v1/pumps/pump-2/cmd"
            assert second.payload == b'{"id":"c1","op":"stop"}'
            for reader in readers:
                reader.cancel()


async def test_pumpctl_logs_in_as_the_controller_and_commands_a_pump_through_the_acl(
    secured_broker: int, clock: VirtualClock
) -> None:
    """The shipped conf and the service work together: pumpctl's bus logs in as `controller`
    (settings mqtt_username / mqtt_password), a simulated pump as its pump id (the ACL's %u);
    the pump's retained status reaches the controller and the controller's commands the pump."""
    model = PumpModel("pump-1", clock)
    server = MqttPumpServer(
        model, "127.0.0.1", secured_broker, username="pump-1", password=PASSWORD
    )
    bus = MqttBus("127.0.0.1", secured_broker, username="controller", password=PASSWORD)
    async with server:
        async with asyncio.timeout(BOUND_S):
            await server.online.wait()
        async with bus, MqttPump("pump-1", bus=bus) as pump:
            assert (await pump.read_status()).state is PumpState.STOPPED
            await pump.set_rate(40.0)
            await pump.set_vtbi(5.0)
            status = await pump.run()
            assert (status.state, status.rate_ml_h) == (PumpState.RUNNING, 40.0)
            assert model.state is PumpState.RUNNING  # the simulated pump itself


async def test_pumpctl_without_credentials_is_refused_by_the_shipped_conf(
    secured_broker: int,
) -> None:
    pump = MqttPump("pump-1", "127.0.0.1", secured_broker, link_timeout_s=1.0)
    with pytest.raises(PumpConnectionError, match="refused authentication as anonymous"):
        await pump.connect()


#: A burst to the controller's one connection: 1,000 pumps' statuses and acks several times over.
BURST = 5000


def test_shipped_conf_drops_nothing_to_a_controller_that_reads_slower_than_a_fleet_burst(
    secured_broker: int,
) -> None:
    """interfaces.md section 2, "Sizing for a fleet": a burst of QoS 1 statuses to the
    controller, which takes each message more slowly than they come (a busy loop), is queued
    by the broker, never dropped: Mosquitto's defaults (20 in flight, 1,000 queued) dropped
    most of such a burst, and a dropped ack is a false A3."""
    port, topic = secured_broker, "pumpctl/v1/pumps/pump-1/status"
    received: list[int] = []
    all_in, subscribed = threading.Event(), threading.Event()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        del c, userdata, message
        time.sleep(0.0005)  # the controller slower than the burst (its loop busy elsewhere)
        received.append(1)
        if len(received) == BURST:
            all_in.set()

    controller = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="controller-burst")
    controller.username_pw_set("controller", PASSWORD)
    controller.on_message = on_message
    controller.on_subscribe = lambda *_: subscribed.set()
    pump = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pump-1-burst")
    pump.username_pw_set("pump-1", PASSWORD)
    pump.max_inflight_messages_set(BURST)
    controller.connect("127.0.0.1", port)
    controller.loop_start()
    try:
        controller.subscribe(topic, qos=1)
        assert subscribed.wait(BOUND_S)
        pump.connect("127.0.0.1", port)
        pump.loop_start()
        try:
            sent = [pump.publish(topic, b'{"state":"running"}', qos=1) for _ in range(BURST)]
            for info in sent:
                info.wait_for_publish(BOUND_S)
            assert all_in.wait(60.0), f"{len(received)} of {BURST} reached the controller"
        finally:
            pump.loop_stop()
            pump.disconnect()
    finally:
        controller.loop_stop()
        controller.disconnect()
    assert len(received) == BURST
