"""The shipped TLS configuration: config/mosquitto.conf's TLS listener block, switched on with
a test CA's files in place of its paths, runs on the installed Mosquitto and does its job (a
client with the CA, its certificate and its login connects over TLS and is served; one with no
certificate, or speaking plain MQTT to the TLS port, is refused); config/pumpctl-web.service
loads the credentials pumpctl takes its certificate from (pumpctl/tls.py)."""

from __future__ import annotations

import getpass
import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from mosquitto_env import Broker, mosquitto_binary, mosquitto_passwd_binary
from needs import free_port
from tls_env import Pki, make_pki

from pumpctl.tls import CREDENTIAL_CERTIFICATE, CREDENTIAL_KEY

CONFIG = Path(__file__).resolve().parents[2] / "config"
PASSWORD = "Tls-Conf-Pw-5a1e"  # noqa: S105 - a throwaway password for a throwaway broker
BOUND_S = 10.0
REFUSED_WITHIN_S = 3.0
#: The commented TLS block of the shipped mosquitto.conf, from its listener to its last option.
TLS_BLOCK = re.compile(r"^#listener 8883 .*?^#tls_version \S+$", flags=re.MULTILINE | re.DOTALL)


def shipped_with_tls(tmp: Path, plain_port: int, tls_port: int, pki: Pki) -> str:
    """The shipped configuration, its TLS block switched on with `pki`'s files and `tls_port`,
    its other paths, port and log target moved into `tmp`."""
    text = (CONFIG / "mosquitto.conf").read_text(encoding="utf-8")
    block = TLS_BLOCK.search(text)
    assert block is not None, "mosquitto.conf ships a commented TLS listener block"
    on = re.sub(r"^#", "", block.group(0), flags=re.MULTILINE)
    for pattern, replacement in [
        (r"^listener 8883 \S+$", f"listener {tls_port} 127.0.0.1"),
        (r"^cafile .*$", f"cafile {pki.ca_file}"),
        (r"^certfile .*$", f"certfile {pki.server_cert}"),
        (r"^keyfile .*$", f"keyfile {pki.server_key}"),
    ]:
        on, count = re.subn(pattern, replacement, on, flags=re.MULTILINE)
        assert count == 1, f"the TLS block: expected one line matching {pattern!r}"
    assert re.search(r"^require_certificate true$", on, flags=re.MULTILINE)
    text = text.replace(block.group(0), on)
    for pattern, replacement in [
        (r"^listener 1883 127\.0\.0\.1$", f"listener {plain_port} 127.0.0.1"),
        (r"^password_file .*$", f"password_file {tmp / 'passwd'}"),
        (r"^acl_file .*$", f"acl_file {tmp / 'acl'}"),
        (r"^persistence_location .*$", f"persistence_location {tmp}/"),
        (r"^log_dest syslog$", "log_dest stderr"),
    ]:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count == 1, f"mosquitto.conf: expected one line matching {pattern!r}"
    return text + f"\nuser {getpass.getuser()}\nlog_type information\n"


class ShippedBroker(Broker):
    """Mosquitto on the configuration text given (the shipped one, adapted)."""

    text = ""

    def conf(self) -> str:
        return self.text


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def shipped_tls_broker(tmp_path: Path, pki: Pki) -> Iterator[ShippedBroker]:
    """The shipped conf and ACL with its TLS listener on; user `controller` knows PASSWORD."""
    binary = mosquitto_binary()
    subprocess.run(
        [mosquitto_passwd_binary(), "-c", "-b", str(tmp_path / "passwd"), "controller", PASSWORD],
        check=True, capture_output=True, timeout=BOUND_S,
    )  # fmt: skip
    shutil.copy(CONFIG / "mosquitto.acl", tmp_path / "acl")
    broker = ShippedBroker(binary=binary, port=free_port(), workdir=tmp_path)
    broker.text = shipped_with_tls(tmp_path, free_port(), broker.port, pki)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def with_certificate(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


@pytest.mark.mosquitto
async def test_the_shipped_tls_listener_serves_a_client_with_its_certificate_and_login(
    shipped_tls_broker: ShippedBroker, pki: Pki
) -> None:
    host, port = shipped_tls_broker.host, shipped_tls_broker.port
    async with aiomqtt.Client(
        host, port, username="controller", password=PASSWORD, tls_context=with_certificate(pki)
    ) as client:
        await client.subscribe("pumpctl/v1/pumps/pump-1/status", qos=1)  # the ACL's controller
        await client.publish("pumpctl/v1/pumps/pump-1/cmd", b"{}", qos=1)


@pytest.mark.mosquitto
@pytest.mark.parametrize("fault", ["no client certificate", "plain MQTT", "no login"])
async def test_the_shipped_tls_listener_refuses_what_it_must(
    shipped_tls_broker: ShippedBroker, pki: Pki, fault: str
) -> None:
    host, port = shipped_tls_broker.host, shipped_tls_broker.port
    options: dict[str, object] = {"username": "controller", "password": PASSWORD}
    if fault == "no client certificate":
        options["tls_context"] = ssl.create_default_context(cafile=str(pki.ca_file))
    elif fault == "no login":
        options = {"tls_context": with_certificate(pki)}
    # (a refused TLS 1.3 client learns it only when no CONNACK comes: a short bound; a client
    # let in is answered within milliseconds)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, timeout=REFUSED_WITHIN_S, **options):  # type: ignore[arg-type]
            pass


def test_the_web_unit_loads_the_credentials_pumpctl_reads() -> None:
    web = (CONFIG / "pumpctl-web.service").read_text(encoding="utf-8")
    loaded = re.findall(r"^LoadCredential=([^:\s]+):(\S+)$", web, flags=re.MULTILINE)
    assert dict(loaded) == {
        CREDENTIAL_CERTIFICATE: "/etc/pumpctl/tls/gateway.crt",
        CREDENTIAL_KEY: "/etc/pumpctl/tls/gateway.key",
    }
    kernel = (CONFIG / "pumpctl-kernel.service").read_text(encoding="utf-8")
    assert "tls.key" not in kernel  # the web side's key is none of the kernel's business
