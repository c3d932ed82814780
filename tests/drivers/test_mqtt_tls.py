"""MQTT over TLS against a real Mosquitto TLS listener that requires a client certificate
(tests/helpers/tls_env.py), with certificates each test makes: a bus and a simulated pump
given the right context link and the pump's status and commands flow; a broker signed by
another CA, a broker certificate for another name, or no client certificate is a link that
is down (A2), its reason the TLS failure, said once in the log, never an exception out of the
bus (the service goes on).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mqtt_env import RELINK_BOUND_S, wait_status
from tls_env import Pki, TlsBroker, make_pki, tls_broker_running

from drivers.base import PumpState
from drivers.mqtt import MqttBus, MqttPump
from pumpctl.clock import VirtualClock
from pumpctl.tls import mqtt_tls_context
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    with tls_broker_running(tmp_path / "broker", pki) as broker:
        yield broker


def client_context(pki: Pki, ca: Path | None = None) -> ssl.SSLContext:
    """What pumpctl builds from mqtt_tls_ca, mqtt_tls_certificate and mqtt_tls_key."""
    return mqtt_tls_context(ca or pki.ca_file, pki.client_cert, pki.client_key)


@asynccontextmanager
async def simulated_pump(
    broker: TlsBroker, clock: VirtualClock, context: ssl.SSLContext
) -> AsyncIterator[MqttPumpServer]:
    """Pump `pump-a` online on `broker` over TLS."""
    server = MqttPumpServer(
        PumpModel("pump-a", clock), broker.host, broker.port, tls_context=context
    )
    async with server:
        async with asyncio.timeout(RELINK_BOUND_S):
            await server.online.wait()
        yield server


async def test_over_tls_the_pump_links_and_its_status_and_commands_flow(
    tls_broker: TlsBroker, pki: Pki, clock: VirtualClock
) -> None:
    context = client_context(pki)
    async with (
        simulated_pump(tls_broker, clock, context) as server,
        MqttBus(tls_broker.host, tls_broker.port, tls_context=context) as bus,
        MqttPump(server.model.pump_id, bus=bus, command_timeout_s=RELINK_BOUND_S) as pump,
    ):
        assert bus.connected
        status = await pump.read_status()
        assert status.state is PumpState.STOPPED
        await pump.set_rate(25.0)
        await pump.set_vtbi(10.0)
        await pump.run()
        running = await wait_status(pump, lambda s: s.state is PumpState.RUNNING)
        assert running.rate_ml_h == 25.0
        assert bus.last_failure is None


@pytest.mark.parametrize("fault", ["another CA", "another name", "no client certificate"])
async def test_a_broker_that_does_not_verify_is_a_lost_link_with_its_reason(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """A2: the pump starts unlinked (as the service's pumps do), the bus keeps retrying, and
    `last_failure` (the pump's reason) names the broker and the TLS failure, said in the log."""
    caplog.set_level(logging.WARNING, logger="drivers.mqtt.bus")
    broker_pki, context, expected = pki, client_context(pki), "CERTIFICATE_VERIFY_FAILED"
    if fault == "another CA":
        context = client_context(pki, ca=make_pki(tmp_path / "other").ca_file)
    elif fault == "another name":  # the client connects to 127.0.0.1: not a name of this one
        broker_pki = make_pki(tmp_path / "named", server_names=("pumps.ward.example",))
        context = client_context(broker_pki)
        expected = "IP address mismatch"
    else:
        context = mqtt_tls_context(pki.ca_file)  # the CA, but no certificate of its own
        expected = "link lost"  # the broker ends the handshake (its alert says why)
    with tls_broker_running(tmp_path / "broker", broker_pki) as broker:
        async with (
            MqttBus(broker.host, broker.port, tls_context=context, reconnect_max_s=0.5) as bus,
            MqttPump("pump-a", bus=bus, link_timeout_s=1.0, start_unlinked=True) as pump,
        ):
            async with asyncio.timeout(RELINK_BOUND_S):
                while bus.last_failure is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)  # polling a condition with a deadline
            assert not pump.connected
            assert not bus.connected
            assert bus.connections == 0
            failure = bus.last_failure
            assert failure.startswith(f"broker {broker.host}:{broker.port} link lost: ")
            assert expected in failure, failure
            said = [r.getMessage() for r in caplog.records if failure in r.getMessage()]
            assert said, caplog.text
            with pytest.raises(Exception, match="link"):
                await pump.read_status()
