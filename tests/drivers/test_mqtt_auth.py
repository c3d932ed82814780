"""MQTT credentials against a real Mosquitto that refuses anonymous clients (`allow_anonymous
false` and a `password_file`, as config/mosquitto.conf ships): the right user name and password
link a pump and its status flows; a wrong password, or none, is a link that is down (A2), said
in one line naming the broker and that authentication failed, retried with backoff until the
broker accepts (its password file fixed, SIGHUP), and the password is in no log line at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mosquitto_env import AuthBroker, auth_broker_running
from mqtt_env import RELINK_BOUND_S, wait_status

from drivers.base import PumpConnectionError, PumpState
from drivers.mqtt import MqttBus, MqttPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

pytestmark = pytest.mark.mosquitto

CONTROLLER = "controller"
#: throwaway passwords for a throwaway broker, distinctive enough to search the logs for
PASSWORD = "Right-Pw-6d1f0c"  # noqa: S105
WRONG = "Wrong-Pw-93ab7e"
PUMP_PASSWORD = "Pump-Pw-41c2aa"  # noqa: S105


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[AuthBroker]:
    """Users `controller` (PASSWORD) and `pump-a` (PUMP_PASSWORD); anonymous refused."""
    with auth_broker_running(tmp_path, {CONTROLLER: PASSWORD, "pump-a": PUMP_PASSWORD}) as broker:
        yield broker


class LogWatch(logging.Handler):
    """Every log record of the test (all loggers, DEBUG up), and a wait for a line to come."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._new = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {self.format(record)}")
        self._new.set()  # records come from this loop's tasks (the bus, the pump)

    async def wait_for(self, *words: str, bound_s: float = RELINK_BOUND_S) -> str:
        """The first line holding every one of `words` (logged already or to come), bounded."""
        async with asyncio.timeout(bound_s):
            while True:
                self._new.clear()
                for line in self.lines:
                    if all(w in line for w in words):
                        return line
                await self._new.wait()

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    root = logging.getLogger()
    level = root.level
    root.addHandler(watch)
    root.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        root.setLevel(level)


@asynccontextmanager
async def simulated_pump(broker: AuthBroker, clock: VirtualClock) -> AsyncIterator[MqttPumpServer]:
    """Pump `pump-a` (`.model`), logged in as itself, online on `broker`."""
    model = PumpModel("pump-a", clock)
    server = MqttPumpServer(
        model, broker.host, broker.port, username="pump-a", password=PUMP_PASSWORD
    )
    async with server:
        async with asyncio.timeout(RELINK_BOUND_S):
            await server.online.wait()
        yield server


def assert_no_password(logs: LogWatch, *texts: str) -> None:
    for secret in (PASSWORD, WRONG, PUMP_PASSWORD):
        assert secret not in logs.text()
        for text in texts:
            assert secret not in text


async def test_the_right_credentials_link_the_pump_and_its_status_flows(
    auth_broker: AuthBroker, clock: VirtualClock, logs: LogWatch
) -> None:
    async with (
        simulated_pump(auth_broker, clock) as server,
        MqttPump(
            server.model.pump_id,
            auth_broker.host,
            auth_broker.port,
            username=CONTROLLER,
            password=PASSWORD,
            command_timeout_s=RELINK_BOUND_S,  # acks' timing is not under test here
        ) as pump,
    ):
        status = await pump.read_status()
        assert status.state is PumpState.STOPPED
        await pump.set_rate(25.0)
        await pump.set_vtbi(10.0)
        await pump.run()
        running = await wait_status(pump, lambda s: s.state is PumpState.RUNNING)
        assert running.rate_ml_h == 25.0
    assert_no_password(logs)


@pytest.mark.parametrize(
    "login",
    [(CONTROLLER, WRONG, f"user {CONTROLLER!r}"), (None, None, "anonymous")],
    ids=["wrong-password", "anonymous"],
)
async def test_a_refused_login_is_no_link_said_in_one_line_without_the_password(
    auth_broker: AuthBroker,
    clock: VirtualClock,
    logs: LogWatch,
    login: tuple[str | None, str | None, str],
) -> None:
    username, password, who = login
    broker = f"{auth_broker.host}:{auth_broker.port}"
    async with simulated_pump(auth_broker, clock) as server:
        pump = MqttPump(
            server.model.pump_id,
            auth_broker.host,
            auth_broker.port,
            username=username,
            password=password,
            link_timeout_s=1.0,
        )
        with pytest.raises(PumpConnectionError) as refused:
            await pump.connect()
        assert not pump.connected
    said = str(refused.value)
    assert f"broker {broker} refused authentication as {who}" in said
    line = await logs.wait_for(f"broker {broker} refused authentication", who)
    assert "\n" not in line
    assert_no_password(logs, said)


async def test_a_refused_login_is_retried_and_links_once_the_broker_accepts(
    auth_broker: AuthBroker, clock: VirtualClock, logs: LogWatch
) -> None:
    """A linked pump whose broker comes back refusing its credentials is link-lost (A2): its
    commands fail at once, the bus says why once and retries; the broker's password file fixed
    (SIGHUP), the pump links again by itself and its status flows.

    The simulated pump reconnects on its own backoff: a command sent before it is back on the
    restarted broker (no persistence: no subscriber, no retained status) is dropped by the broker
    and unconfirmed after the command timeout (A3), so the test commands it once it is back."""
    broker = f"{auth_broker.host}:{auth_broker.port}"
    async with simulated_pump(auth_broker, clock) as server:
        bus = MqttBus(
            auth_broker.host,
            auth_broker.port,
            username=CONTROLLER,
            password=PASSWORD,
            reconnect_max_s=0.2,
        )
        # acks' timing is not under test here: a loaded machine may answer slowly
        pump = MqttPump(server.model.pump_id, bus=bus, command_timeout_s=RELINK_BOUND_S)
        async with bus, pump:
            assert (await pump.read_status()).state is PumpState.STOPPED

            # the broker restarts with another password for the controller
            auth_broker.stop()
            async with asyncio.timeout(RELINK_BOUND_S):
                await pump.wait_unlinked()
                await server.offline.wait()
            auth_broker.set_password(CONTROLLER, WRONG)
            auth_broker.start()
            await logs.wait_for(f"broker {broker} refused authentication", CONTROLLER)
            assert not bus.connected
            assert not pump.connected
            with pytest.raises(PumpConnectionError):
                await pump.read_status()

            # fixed on the broker: the bus, still retrying, links the pump again
            auth_broker.set_password(CONTROLLER, PASSWORD)
            auth_broker.reload()
            async with asyncio.timeout(RELINK_BOUND_S):
                await pump.wait_linked()
                await server.online.wait()  # the simulated pump is back on its own backoff
            assert (await pump.read_status()).state is not PumpState.OFFLINE
            assert pump.reconnections == 1
            await logs.wait_for("broker link recovered")
    assert_no_password(logs)
    # one line per kind of failure, not one per attempt
    refusals = [line for line in logs.lines if "refused authentication" in line]
    assert len(refusals) == 1, refusals


async def test_credentials_are_the_bus_s_and_a_password_needs_a_user() -> None:
    bus = MqttBus("127.0.0.1", 1883, username=CONTROLLER, password=PASSWORD)
    with pytest.raises(Exception, match="credentials are the bus's"):
        MqttPump("pump-a", bus=bus, username=CONTROLLER, password=PASSWORD)
    with pytest.raises(Exception, match="needs a user name"):
        MqttPump("pump-a", "127.0.0.1", password=PASSWORD)
    with pytest.raises(Exception, match="needs a user name"):
        MqttBus("127.0.0.1", password=PASSWORD)
    assert PASSWORD not in repr(bus)
