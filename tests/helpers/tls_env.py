"""TLS for the tests: a certificate authority and certificates made by each test (trustme), a
Mosquitto of the test's own with a TLS listener, and a home directory whose NSS database
trusts the test CA, for Chromium.

Chromium trusts the test CA the way a hospital's workstation trusts its own CA: the CA is added
to the NSS database of the browser's user (`$HOME/.pki/nssdb`, with NSS's `certutil`), and
Chromium then verifies the service's chain and its name as it would any site's. (Not
`--ignore-certificate-errors-spki-list`, which would accept that key whatever the name or the
chain, and not Playwright's `ignore_https_errors`, which accepts anything.) `certutil` is
Debian's libnss3-tools, which scripts/test installs; missing, the test fails in CI.
"""

from __future__ import annotations

import getpass
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from mosquitto_env import Broker, mosquitto_binary
from needs import free_port, missing

__all__ = ["Pki", "TlsBroker", "make_pki", "nss_home", "tls_broker_running"]

BOUND_S = 10.0
#: The names the service's and the broker's certificates are for (the tests connect to these).
NAMES = ("127.0.0.1", "localhost")


@dataclass
class Pki:
    """A test CA and the PEM files it signed, in `directory`."""

    directory: Path
    ca: trustme.CA = field(repr=False)
    ca_file: Path
    server_cert: Path  # the chain: leaf first
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client's context trusting this CA alone (verifies the chain and the name)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def make_pki(directory: Path, *, server_names: tuple[str, ...] = NAMES) -> Pki:
    """A new CA; a server certificate for `server_names` and a client certificate
    ("controller"), each with its key, written to `directory` (keys 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="pumpctl test CA")
    server = ca.issue_cert(*server_names)
    client = ca.issue_cert("controller")
    pki = Pki(
        directory=directory,
        ca=ca,
        ca_file=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    ca.cert_pem.write_to_path(str(pki.ca_file))
    pki.server_cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    keys = ((pki.server_key, server.private_key_pem), (pki.client_key, client.private_key_pem))
    for key, blob in keys:
        key.touch(mode=0o600)
        blob.write_to_path(str(key))
    return pki


@dataclass
class TlsBroker(Broker):
    """A broker whose one listener is MQTT over TLS with `pki`'s server certificate; with
    `require_certificate`, a client must present a certificate of `pki`'s CA."""

    pki: Pki | None = None
    require_certificate: bool = True

    def conf(self) -> str:
        assert self.pki is not None
        return (
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.pki.ca_file}\n"
            f"certfile {self.pki.server_cert}\n"
            f"keyfile {self.pki.server_key}\n"
            f"require_certificate {'true' if self.require_certificate else 'false'}\n"
            "tls_version tlsv1.2\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type all\n"  # its "running" line is what start() waits for; handshake errors
            f"user {getpass.getuser()}\n"  # as root, it would drop to "mosquitto"
        )


@contextmanager
def tls_broker_running(
    workdir: Path, pki: Pki, *, require_certificate: bool = True
) -> Iterator[TlsBroker]:
    """A TlsBroker on a free loopback port in `workdir`, started, killed at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = TlsBroker(
        binary=mosquitto_binary(),
        port=free_port(),
        workdir=workdir,
        pki=pki,
        require_certificate=require_certificate,
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def certutil_binary() -> str:
    """NSS's certutil (Debian's libnss3-tools); fails (never skips) in CI when it is missing."""
    found = shutil.which("certutil")
    if found is None:
        missing("certutil not found (scripts/test installs libnss3-tools through apt)")
    return found


def nss_home(directory: Path, ca_file: Path) -> Path:
    """A home directory whose NSS database (`.pki/nssdb`, Chromium's on Linux) trusts the CA in
    `ca_file` to identify web sites; give it to Chromium as HOME."""
    certutil = certutil_binary()
    database = directory / ".pki" / "nssdb"
    database.mkdir(parents=True, exist_ok=True)
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-n", "pumpctl test CA", "-t", "C,,", "-i", str(ca_file)],
    ):
        subprocess.run(
            [certutil, "-d", f"sql:{database}", *args],
            check=True, capture_output=True, timeout=BOUND_S,
        )  # fmt: skip
    return directory
