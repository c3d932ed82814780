"""config/pumpctl.example.toml loads through the real settings loader (pumpctl/settings.py,
`pumpctl serve --config`), as shipped and with every optional "#key = ..." line switched on."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from tls_env import make_pki

from pumpctl.settings import Role, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pumpctl.example.toml"
#: an optional setting or table, commented out ("#key = ..." or "#[table]"), not prose ("# ...")
OPTIONAL = re.compile(r"^#(?=[a-z_\[])", flags=re.MULTILINE)
EXAMPLE_PASSWORD = "s3cret"  # noqa: S105 - the test's stand-in for the gateway's password file


@pytest.fixture(autouse=True)
def no_pumpctl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file alone: PUMPCTL_* variables of the machine running the tests would win over it."""
    for name in list(os.environ):
        if name.startswith("PUMPCTL_"):
            monkeypatch.delenv(name)


def with_optional_lines_on(tmp_path: Path) -> Path:
    text = EXAMPLE.read_text(encoding="utf-8")
    switched, count = OPTIONAL.subn("", text)
    assert count >= 5, "the example shows optional settings as '#key = ...' lines"
    # the MQTT password file it names is the gateway's: here one in tmp_path (read at start)
    secret = tmp_path / "mqtt.password"
    secret.write_text(f"{EXAMPLE_PASSWORD}\n", encoding="utf-8")
    switched, count = re.subn(r'"/etc/pumpctl/mqtt\.password"', f'"{secret}"', switched)
    assert count == 1, "the example names /etc/pumpctl/mqtt.password"
    # the MQTT TLS files it names are the gateway's: here ones a test CA made (read at start)
    pki = make_pki(tmp_path / "pki")
    for name, made in (
        ("ward-ca.crt", pki.ca_file),
        ("controller.crt", pki.client_cert),
        ("controller.key", pki.client_key),
    ):
        switched, count = re.subn(f'"/etc/pumpctl/tls/{name}"', f'"{made}"', switched)
        assert count == 1, f"the example names /etc/pumpctl/tls/{name}"
    path = tmp_path / "pumpctl.toml"
    path.write_text(switched, encoding="utf-8")
    return path


def test_example_loads_as_shipped() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.clock == "real"
    assert settings.data_dir == Path("/var/lib/pumpctl")
    assert settings.database is None  # the data directory's SQLite file
    assert not settings.bench
    assert settings.simulate == 0
    serial, mqtt = settings.pumps
    assert (serial.id, serial.transport, serial.port) == ("bed-1", "serial", "/dev/ttyUSB0")
    assert (serial.address, serial.safe_mode_s, serial.baud) == (0, 30, 19200)
    assert (mqtt.id, mqtt.transport, mqtt.host, mqtt.mqtt_port, mqtt.pump) == (
        "bed-2",
        "mqtt",
        "127.0.0.1",
        1883,
        "pump-7",
    )
    assert settings.api_tokens == {}  # tokens belong in /etc/pumpctl/tokens.env


def test_example_loads_with_every_optional_line_on(tmp_path: Path) -> None:
    settings = load_settings(with_optional_lines_on(tmp_path))
    assert settings.database == "sqlite:////var/lib/pumpctl/pumpctl.db"
    assert settings.command_timeout_s == 2.0
    assert settings.stop_answer_s == 4.5
    (entry,) = settings.api_tokens.values()
    assert (entry.name, entry.role) == ("nina", Role.NURSE)


def test_every_key_of_the_example_is_a_setting(tmp_path: Path) -> None:
    """The loader forbids unknown keys already; this names them should one slip in."""
    document = tomllib.loads(with_optional_lines_on(tmp_path).read_text(encoding="utf-8"))
    assert set(document) <= set(Settings.model_fields)


def test_tokens_from_the_environment_replace_the_files_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the systemd unit does: PUMPCTL_API_TOKENS from /etc/pumpctl/tokens.env wins, whole
    (the file's table is not merged in), and PUMPCTL_DATA_DIR (the unit's) wins over data_dir."""
    monkeypatch.setenv(
        "PUMPCTL_API_TOKENS",
        "t-c-for-the-tests-only-at-32-chars=carl:clinician,t-v-for-the-tests-only-at-32-chars=vera:viewer",
    )
    monkeypatch.setenv("PUMPCTL_DATA_DIR", str(tmp_path / "state"))
    settings = load_settings(with_optional_lines_on(tmp_path))
    assert set(settings.api_tokens) == {
        "t-c-for-the-tests-only-at-32-chars",
        "t-v-for-the-tests-only-at-32-chars",
    }
    assert settings.api_tokens["t-c-for-the-tests-only-at-32-chars"].role is Role.CLINICIAN
    assert settings.data_dir == tmp_path / "state"


def test_the_example_s_mqtt_login_is_the_acl_s_controller_and_a_password_file(
    tmp_path: Path,
) -> None:
    """As shipped the login is commented out (anonymous); switched on, it is the shipped ACL's
    `controller` with the password read from the file the example names."""
    assert load_settings(EXAMPLE).mqtt_credentials() == (None, None)
    assert "/etc/pumpctl/mqtt.password" in EXAMPLE.read_text(encoding="utf-8")
    settings = load_settings(with_optional_lines_on(tmp_path))
    assert settings.mqtt_credentials() == ("controller", EXAMPLE_PASSWORD)
    assert EXAMPLE_PASSWORD not in repr(settings)
    acl = (EXAMPLE.parent / "mosquitto.acl").read_text(encoding="utf-8")
    assert re.search(r"^user controller$", acl, flags=re.MULTILINE)
