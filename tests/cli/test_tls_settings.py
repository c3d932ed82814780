"""TLS settings (pumpctl/settings.py, pumpctl/tls.py): what is accepted and refused, the uvicorn
options the web side gets from them, and the refusal of a plain listener on a non-loopback
address by the real `pumpctl serve` and `pumpctl web` (one line naming the setting, exit 2,
nothing opened)."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from pathlib import Path

import pytest
from pumpctl_process import BOUND_S, PUMPCTL
from tls_env import make_pki

from pumpctl.cli.configured import SettingsError, settings_for
from pumpctl.settings import Settings
from pumpctl.tls import HSTS, is_loopback, plain_bind_refusal, web_listener_options

TOKENS = "a-tok-for-the-tests-only-32chars=ada:admin,n-tok-for-the-tests-only-32chars=nina:nurse"


@pytest.fixture(autouse=True)
def no_pumpctl_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: PUMPCTL_* or a systemd credentials directory of the machine
    running the tests would win."""
    for name in list(os.environ):
        if name.startswith("PUMPCTL_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
        ("gateway.ward.example", False),  # a name: not known to stay on this machine
    ],
)
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_plain_non_loopback_listener_is_refused_naming_the_settings() -> None:
    refusal = plain_bind_refusal(Settings(host="0.0.0.0"))
    assert refusal is not None
    assert refusal.startswith("host: 0.0.0.0 is not loopback")
    for named in ("tls_certificate", "tls_key", "tls_proxy", "PUMPCTL_TLS_PROXY"):
        assert named in refusal
    assert "\n" not in refusal


def test_loopback_tls_or_a_named_proxy_lift_the_refusal(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    assert plain_bind_refusal(Settings(host="127.0.0.1")) is None
    assert plain_bind_refusal(Settings(host="0.0.0.0", tls_proxy="10.1.2.3")) is None
    tls = Settings(host="0.0.0.0", tls_certificate=pki.server_cert, tls_key=pki.server_key)
    assert plain_bind_refusal(tls) is None


def test_without_a_proxy_no_address_is_trusted_for_forwarded_headers() -> None:
    options = web_listener_options(Settings())
    assert options["proxy_headers"] is False
    assert options["forwarded_allow_ips"] == ""
    assert "ssl_certfile" not in options
    assert "headers" not in options  # no HSTS on plain HTTP


def test_the_proxy_is_the_only_trusted_address() -> None:
    options = web_listener_options(Settings(host="0.0.0.0", tls_proxy="10.1.2.3"))
    assert options["proxy_headers"] is True
    assert options["forwarded_allow_ips"] == "10.1.2.3"


def test_tls_gives_uvicorn_its_files_hsts_and_a_tls12_floor(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    options = web_listener_options(
        Settings(tls_certificate=pki.server_cert, tls_key=pki.server_key)
    )
    assert options["ssl_certfile"] == str(pki.server_cert)
    assert options["ssl_keyfile"] == str(pki.server_key)
    assert options["headers"] == [HSTS]
    assert HSTS == ("Strict-Transport-Security", "max-age=31536000")
    context = options["ssl_context_factory"](None, lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tls_certificate": "/c.pem"}, "tls_certificate without tls_key: give both"),
        ({"tls_key": "/k.pem"}, "tls_key without tls_certificate: give both"),
        ({"tls_proxy": "proxy.ward.example"}, "tls_proxy: one IP address"),
        ({"mqtt_tls_certificate": "/c.pem"}, "mqtt_tls_certificate and mqtt_tls_key: give both"),
        ({"mqtt_tls_ca": "/nowhere/ca.pem"}, "mqtt_tls_ca: /nowhere/ca.pem is not a readable"),
        ({"mqtt_tls_version": "1.1"}, "mqtt_tls_version: Input should be '1.2' or '1.3'"),
    ],
)
def test_bad_tls_settings_are_refused_in_one_line_naming_the_setting(
    given: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        settings_for(None, **given)
    assert message in str(refused.value)


def test_a_client_certificate_needs_a_ca_and_a_key_that_is_one(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with pytest.raises(SettingsError, match="a client certificate needs mqtt_tls_ca"):
        settings_for(None, mqtt_tls_certificate=pki.client_cert, mqtt_tls_key=pki.client_key)
    with pytest.raises(SettingsError, match=r"mqtt_tls_certificate: .* are not a readable"):
        settings_for(
            None,
            mqtt_tls_ca=pki.ca_file,
            mqtt_tls_certificate=pki.client_cert,
            mqtt_tls_key=pki.ca_file,  # not the certificate's key
        )


def test_the_mqtt_context_verifies_the_broker_and_carries_the_client_certificate(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    settings = settings_for(
        None,
        mqtt_tls_ca=pki.ca_file,
        mqtt_tls_certificate=pki.client_cert,
        mqtt_tls_key=pki.client_key,
        mqtt_tls_version="1.3",
    )
    context = settings.mqtt_tls()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert settings.mqtt_tls() is context  # built once: every client shares it
    assert Settings().mqtt_tls() is None


def test_systemd_credentials_give_the_certificate_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path / "pki")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "tls.crt").write_bytes(pki.server_cert.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    with pytest.raises(SettingsError, match=r"systemd credential tls\.key is missing"):
        settings_for(None)
    (credentials / "tls.key").write_bytes(pki.server_key.read_bytes())
    settings = settings_for(None, host="0.0.0.0")
    assert settings.tls_certificate == credentials / "tls.crt"
    assert settings.tls_key == credentials / "tls.key"
    assert plain_bind_refusal(settings) is None
    # the settings' own files win over the credentials
    given = settings_for(None, tls_certificate=pki.server_cert, tls_key=pki.server_key)
    assert given.tls_certificate == pki.server_cert


async def _run(cwd: Path, *args: str, settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env |= {"PUMPCTL_DATA_DIR": str(cwd / "data"), "PUMPCTL_API_TOKENS": TOKENS, **settings}
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env,
    )  # fmt: skip
    async with asyncio.timeout(BOUND_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


@pytest.mark.parametrize("command", ["serve", "web"])
async def test_a_plain_non_loopback_bind_is_refused_at_start(tmp_path: Path, command: str) -> None:
    done = await _run(tmp_path, command, "--host", "0.0.0.0", "--port", "0", settings={})
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"pumpctl {command}: host: 0.0.0.0 is not loopback"), lines
    assert "tls_certificate" in lines[0]
    assert "tls_proxy" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened


async def test_a_key_that_cannot_be_read_stops_the_web_side_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    missing_key = tmp_path / "pki" / "gone.key"
    done = await _run(
        tmp_path,
        "web",
        "--port",
        "0",
        settings={
            "PUMPCTL_TLS_CERTIFICATE": str(pki.server_cert),
            "PUMPCTL_TLS_KEY": str(missing_key),
        },
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"pumpctl web: tls_certificate, tls_key: {pki.server_cert}, {missing_key} cannot be used "
        "(No such file or directory)"
    ]
