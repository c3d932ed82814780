"""The service's MQTT credentials (pumpctl/settings.py): `mqtt_username` with `mqtt_password`
(PUMPCTL_MQTT_PASSWORD) or `mqtt_password_file`, and a pump URL's own `USER:PASSWORD@`, which
wins for that pump. Parsed, refused in one line naming the setting, and used by every MQTT
connection of the service (the pumps' buses of api/pumps.py, the infusion-state publisher,
simulated MQTT pumps) against a real Mosquitto that refuses anonymous clients.

(Named test_service_mqtt_auth.py: a second test_mqtt_auth.py, beside tests/drivers', would
collide under pytest's default import mode, the test folders having no __init__.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import ApiSteps, settings
from fastapi.testclient import TestClient
from mosquitto_env import AuthBroker, auth_broker_running
from pydantic import SecretStr, ValidationError

from api.app import create_app
from api.pumps import open_pumps
from drivers.base import PumpConnectionError, PumpState
from pumpctl.clock import VirtualClock
from pumpctl.settings import Settings, load_settings, parse_pump_url, parse_tokens
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer

CONTROLLER = "controller"
PASSWORD = "Svc-Right-Pw-2b7d"  # noqa: S105 - throwaway passwords for a throwaway broker
WRONG = "Svc-Wrong-Pw-8e1c"
PUMP_PASSWORD = "Svc-Pump-Pw-c05f"  # noqa: S105
SECRETS = (PASSWORD, WRONG, PUMP_PASSWORD)
BOUND_S = 10.0


def message_of(exc: ValidationError) -> str:
    """What `pumpctl serve` prints of a refused setting (pumpctl/cli: `field: what is wrong`)."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "settings"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


@pytest.fixture(autouse=True)
def no_pumpctl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: PUMPCTL_* of the machine running the tests would win."""
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("PUMPCTL_"):
            monkeypatch.delenv(name)


# -- parsing ---------------------------------------------------------------------------------


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUMPCTL_MQTT_USERNAME", CONTROLLER)
    monkeypatch.setenv("PUMPCTL_MQTT_PASSWORD", PASSWORD)
    loaded = load_settings()
    assert loaded.mqtt_credentials() == (CONTROLLER, PASSWORD)
    assert isinstance(loaded.mqtt_password, SecretStr)
    assert PASSWORD not in repr(loaded)
    assert PASSWORD not in str(loaded)


def test_the_password_from_a_file_its_line_ending_not_part_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text(f"{PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("PUMPCTL_MQTT_PASSWORD_FILE", str(secret))
    assert load_settings(mqtt_username=CONTROLLER).mqtt_credentials() == (CONTROLLER, PASSWORD)
    # from the TOML file too (a systemd credential: PUMPCTL_MQTT_PASSWORD_FILE=%d/mqtt.password)
    monkeypatch.delenv("PUMPCTL_MQTT_PASSWORD_FILE")
    config = tmp_path / "pumpctl.toml"
    config.write_text(f'mqtt_username = "{CONTROLLER}"\nmqtt_password_file = "{secret}"\n')
    assert load_settings(config).mqtt_credentials() == (CONTROLLER, PASSWORD)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "is not readable (No such file or directory)"),
        ("", "is empty"),
        ("\n", "is empty"),
        (f"{PASSWORD}\nmore\n", "has more than one line (the password is its one line)"),
    ],
    ids=["missing", "empty", "empty-line", "two-lines"],
)
def test_a_password_file_that_cannot_be_used_is_refused_naming_the_setting(
    tmp_path: Path, content: str | None, why: str
) -> None:
    secret = tmp_path / "mqtt.password"
    if content is not None:
        secret.write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError) as refused:
        load_settings(mqtt_username=CONTROLLER, mqtt_password_file=secret)
    said = message_of(refused.value)
    assert said == f"mqtt_password_file: {secret} {why}"
    assert "\n" not in said
    assert PASSWORD not in str(refused.value)


def test_an_unreadable_password_file_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """A directory where the file should be (as root, a mode 000 file would still be read)."""
    with pytest.raises(ValidationError) as refused:
        load_settings(mqtt_username=CONTROLLER, mqtt_password_file=tmp_path)
    assert message_of(refused.value).startswith(f"mqtt_password_file: {tmp_path} is not readable")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            {"mqtt_password": PASSWORD},
            "settings: mqtt_password: a password needs mqtt_username",
        ),
        (
            {"mqtt_username": CONTROLLER, "mqtt_password": ""},
            "mqtt_password: empty: unset it, or give the password",
        ),
        (
            {"mqtt_username": CONTROLLER, "mqtt_password": PASSWORD, "mqtt_password_file": "F"},
            "settings: mqtt_password and mqtt_password_file are both set: give one",
        ),
    ],
    ids=["no-user", "empty", "both"],
)
def test_credentials_that_do_not_add_up_are_refused(
    tmp_path: Path, given: dict[str, Any], said: str
) -> None:
    if "mqtt_password_file" in given:
        (tmp_path / "F").write_text(PASSWORD)
        given = {**given, "mqtt_password_file": tmp_path / "F"}
    with pytest.raises(ValidationError) as refused:
        load_settings(**given)
    assert message_of(refused.value) == said
    assert PASSWORD not in str(refused.value)


def test_a_pump_url_s_own_credentials_percent_decoded_win_for_that_pump() -> None:
    loaded = load_settings(
        mqtt_username=CONTROLLER,
        mqtt_password=PASSWORD,
        pumps="bed-1=mqtt://ward%40gw:p%2Fw%3Ax@broker:1884/pump-7,bed-2=mqtt://broker/pump-8",
    )
    own, shared = loaded.pumps
    assert (own.host, own.mqtt_port, own.pump, own.username) == (
        "broker",
        1884,
        "pump-7",
        "ward@gw",
    )
    assert loaded.mqtt_credentials(own) == ("ward@gw", "p/w:x")
    assert loaded.mqtt_credentials(shared) == (CONTROLLER, PASSWORD)
    assert "p/w:x" not in repr(own)
    # a user name alone is a user name without a password
    assert parse_pump_url("p", "mqtt://viewer@broker/p").username == "viewer"


@pytest.mark.parametrize(
    "url",
    [
        f"mqtt://{CONTROLLER}:{PASSWORD}@:1883/pump-1",
        f"mqtt://{CONTROLLER}:{PASSWORD}@broker:99999/pump-1",
        f"mqtt://:{PASSWORD}@broker/pump-1",
        f"serial://{CONTROLLER}:{PASSWORD}@host:4000",
    ],
    ids=["no-broker", "bad-port", "no-user", "serial"],
)
def test_a_bad_pump_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        load_settings(pumps=f"bed-1={url}")
    said = message_of(refused.value)
    assert said.startswith("pumps: pump bed-1: ")
    assert PASSWORD not in str(refused.value)
    assert PASSWORD not in said


# -- against a broker refusing anonymous clients -----------------------------------------------


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[AuthBroker]:
    """Users `controller` (PASSWORD) and `pump-a` (PUMP_PASSWORD); anonymous refused."""
    users = {CONTROLLER: PASSWORD, "pump-a": PUMP_PASSWORD}
    with auth_broker_running(tmp_path / "broker", users) as broker:
        yield broker


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record, DEBUG up (paho's CONNECT lines included)."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_password(*texts: str) -> None:
    for secret in SECRETS:
        for text in texts:
            assert secret not in text


@asynccontextmanager
async def pump_a(broker: AuthBroker) -> AsyncIterator[PumpModel]:
    """Simulated pump `pump-a`, logged in as itself, online on `broker`."""
    model = PumpModel("pump-a", VirtualClock())
    server = MqttPumpServer(
        model, broker.host, broker.port, username="pump-a", password=PUMP_PASSWORD
    )
    async with server:
        async with asyncio.timeout(BOUND_S):
            await server.online.wait()
        yield model


def gateway(tmp_path: Path, **given: Any) -> Settings:
    """A gateway's settings: real pump links (to a simulated pump: a bench)."""
    return Settings(
        database=f"sqlite:///{tmp_path / 'pumpctl.db'}",
        api_tokens=parse_tokens("a-tok-for-the-tests-only-32chars=ada:admin"),
        bench=True,
        link_timeout_s=2.0,
        **given,
    )


@pytest.mark.mosquitto
@pytest.mark.parametrize(
    ("url_login", "settings_login"),
    [("", (CONTROLLER, PASSWORD)), (f"{CONTROLLER}:{PASSWORD}@", (CONTROLLER, WRONG))],
    ids=["the-settings-credentials", "the-url-s-own-win"],
)
async def test_a_configured_mqtt_pump_logs_in_and_its_status_flows(
    tmp_path: Path,
    auth_broker: AuthBroker,
    every_log: pytest.LogCaptureFixture,
    url_login: str,
    settings_login: tuple[str, str],
) -> None:
    user, password = settings_login
    configured = gateway(
        tmp_path,
        mqtt_username=user,
        mqtt_password=password,
        pumps=f"bed-1=mqtt://{url_login}{auth_broker.address}/pump-a",
    )
    async with pump_a(auth_broker), AsyncExitStack() as stack:
        pumps = await open_pumps(configured, stack)
        pump, transport = pumps["bed-1"]
        assert transport == "mqtt"
        assert (await pump.read_status()).state is PumpState.STOPPED
    assert_no_password(every_log.text)


@pytest.mark.mosquitto
async def test_a_refused_pump_login_is_a_lost_link_not_a_failed_start(
    tmp_path: Path, auth_broker: AuthBroker, every_log: pytest.LogCaptureFixture
) -> None:
    """What `pumpctl serve` does with a broker that refuses (as with one that is unreachable):
    the pump opens with its link lost (A2), the service starts for the other pumps, and the
    log says which broker refused whom, without the password; commands fail fast."""
    configured = gateway(
        tmp_path, pumps=f"bed-1=mqtt://{CONTROLLER}:{WRONG}@{auth_broker.address}/pump-a"
    )
    async with AsyncExitStack() as stack:
        pumps = await open_pumps(configured, stack)
        pump, transport = pumps["bed-1"]
        assert transport == "mqtt"
        assert not pump.connected
        with pytest.raises(PumpConnectionError) as refused:
            await pump.read_status()
    said = str(refused.value)
    assert "\n" not in said
    lines = [r.getMessage() for r in every_log.records]
    assert any(
        f"broker {auth_broker.address} refused authentication as user 'controller'" in line
        for line in lines
    ), lines
    assert any("pump pump-a: starts with its link lost (A2)" in line for line in lines), lines
    assert_no_password(said, every_log.text)


@pytest.mark.mosquitto
async def test_simulated_mqtt_pumps_and_the_published_views_log_in_with_the_settings(
    tmp_path: Path,
    auth_broker: AuthBroker,
    every_log: pytest.LogCaptureFixture,
) -> None:
    """`--simulate 2 --link mqtt --broker` on a broker refusing anonymous clients: the simulated
    pumps, their bus and the infusion-state publisher all log in (the password from a file)."""
    secret = tmp_path / "mqtt.password"
    secret.write_text(PASSWORD + "\n")
    app = create_app(
        settings(
            tmp_path,
            link="mqtt",
            broker=auth_broker.address,
            mqtt_username=CONTROLLER,
            mqtt_password_file=secret,
        )
    )
    topic = "pumpctl/v1/infusions/+"
    async with aiomqtt.Client(
        auth_broker.host, auth_broker.port, username=CONTROLLER, password=PASSWORD
    ) as watcher:
        await watcher.subscribe(topic, qos=1)
        with TestClient(app, base_url="http://gateway") as client:
            ward = ApiSteps(client)
            ward.advance(1)  # returns once every pump's status at the new instant is processed
            assert {p["id"]: p["state"] for p in ward.get("/pumps")} == {
                "pump-1": "stopped",
                "pump-2": "stopped",
            }
            infusion = ward.started(ward.patient())
            async with asyncio.timeout(BOUND_S):
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    view = json.loads(message.payload)
                    if view["id"] == infusion and view["state"] == "running":
                        break
    assert_no_password(every_log.text)


class _Seen(logging.Handler):
    """Sets `event` on the first record holding `words` (from whichever thread logs it)."""

    def __init__(self, *words: str) -> None:
        super().__init__(logging.DEBUG)
        self.words = words
        self.event = threading.Event()
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if all(w in message for w in self.words) and not self.event.is_set():
            self.line = message
            self.event.set()


@pytest.mark.mosquitto
def test_a_refused_publisher_login_is_said_once_and_never_stops_the_service(
    tmp_path: Path, auth_broker: AuthBroker, every_log: pytest.LogCaptureFixture
) -> None:
    """The infusion-state publisher refused by the broker (a wrong password): the service
    serves on (its pumps here are simulated serial ones), the publisher says why and retries."""
    seen = _Seen(f"views: broker {auth_broker.address} refused authentication as user 'controller'")
    logging.getLogger("pumpctl.api.publish").addHandler(seen)
    try:
        app = create_app(
            settings(
                tmp_path,
                link="serial",
                broker=auth_broker.address,
                mqtt_username=CONTROLLER,
                mqtt_password=WRONG,
            )
        )
        with TestClient(app, base_url="http://gateway") as client:
            assert seen.event.wait(BOUND_S), "the publisher's refusal was not logged"
            ward = ApiSteps(client)
            ward.advance(1)
            assert len(ward.get("/pumps")) == 2
    finally:
        logging.getLogger("pumpctl.api.publish").removeHandler(seen)
    assert "\n" not in seen.line
    assert_no_password(seen.line, every_log.text)
