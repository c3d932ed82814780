"""TLS from the settings: the web side's HTTPS listener and the MQTT clients' SSL context.

The web side (docs/architecture.md, "Two processes") serves HTTPS with uvicorn's own TLS
(`ssl_certfile`, `ssl_keyfile`; its `ssl_context_factory` hook only raises the floor to TLS 1.2)
when `tls_certificate` and `tls_key` are set, or when systemd hands the unit the credentials
`tls.crt` and `tls.key` (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`). Every HTTPS
response carries `Strict-Transport-Security` (uvicorn's `headers`).

A listener on anything but loopback without TLS is refused at start (`plain_bind_refusal`),
unless `tls_proxy` names the TLS-terminating proxy in front: then plain HTTP is served and that
address alone is trusted for `X-Forwarded-*` (uvicorn's `forwarded_allow_ips`); without it no
address is (`proxy_headers` off).

MQTT (`mqtt_tls_ca`, optional `mqtt_tls_certificate` with `mqtt_tls_key`, optional
`mqtt_tls_version`): one `ssl.SSLContext`, built once (at settings load, so a file that cannot
be read is refused at start naming its setting) and handed to every aiomqtt client as
`tls_context`, so no file is read on the event loop when a client (re)connects. It verifies
the broker's certificate against the CA and its name against the host connected to. (The
handshake runs in aiomqtt's executor thread, off the loop, as paho's connect does.)
"""

from __future__ import annotations

import functools
import ipaddress
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pumpctl.settings import Settings

__all__ = [
    "CREDENTIAL_CERTIFICATE",
    "CREDENTIAL_KEY",
    "HSTS",
    "MQTT_TLS_VERSIONS",
    "credential_files",
    "is_loopback",
    "mqtt_tls_context",
    "plain_bind_refusal",
    "web_listener_options",
]

#: The systemd credentials (config/pumpctl-web.service, `LoadCredential=`) the web side takes
#: its certificate chain and key from when `tls_certificate` and `tls_key` are unset.
CREDENTIAL_CERTIFICATE = "tls.crt"
CREDENTIAL_KEY = "tls.key"
#: The HSTS header of every HTTPS response: browsers use HTTPS only, for a year.
HSTS = ("Strict-Transport-Security", "max-age=31536000")
#: `mqtt_tls_version`: the lowest TLS version an MQTT connection accepts.
MQTT_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def credential_files() -> tuple[Path, Path] | None:
    """(certificate, key) from systemd's `$CREDENTIALS_DIRECTORY` when both credentials are
    there; None when neither is (or no directory); ValueError naming the one missing."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    certificate = Path(directory) / CREDENTIAL_CERTIFICATE
    key = Path(directory) / CREDENTIAL_KEY
    if certificate.is_file() and key.is_file():
        return certificate, key
    if certificate.is_file() or key.is_file():
        missing = CREDENTIAL_KEY if certificate.is_file() else CREDENTIAL_CERTIFICATE
        raise ValueError(
            f"tls_certificate: systemd credential {missing} is missing beside the other "
            "(LoadCredential= both tls.crt and tls.key)"
        )
    return None


def is_loopback(host: str) -> bool:
    """True if listening on `host` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: whatever it resolves to, not known to be loopback


def plain_bind_refusal(settings: Settings) -> str | None:
    """Why the web side must not listen as configured (one line naming the settings), or None:
    a non-loopback `host` needs TLS, or `tls_proxy` for a TLS-terminating proxy in front."""
    if is_loopback(settings.host) or settings.tls_certificate is not None:
        return None
    if settings.tls_proxy is not None:
        return None
    return (
        f"host: {settings.host} is not loopback and the web side has no TLS: set tls_certificate "
        "and tls_key (PUMPCTL_TLS_CERTIFICATE, PUMPCTL_TLS_KEY, or the systemd credentials "
        "tls.crt and tls.key), or tls_proxy (PUMPCTL_TLS_PROXY) to the address of the "
        "TLS-terminating proxy in front"
    )


def _tls12_floor(config: Any, default: Any) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: uvicorn's own context, refusing TLS below 1.2."""
    del config
    context: ssl.SSLContext = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def web_listener_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options of the web side's listener: TLS and HSTS, and the one trusted
    proxy (module docstring). Every TLS and proxy option of the listener is here."""
    options: dict[str, Any] = {
        "proxy_headers": settings.tls_proxy is not None,
        "forwarded_allow_ips": settings.tls_proxy or "",
    }
    if settings.tls_certificate is not None:
        assert settings.tls_key is not None  # the settings refuse one without the other
        options |= {
            "ssl_certfile": str(settings.tls_certificate),
            "ssl_keyfile": str(settings.tls_key),
            "ssl_context_factory": _tls12_floor,
            "headers": [HSTS],
        }
    return options


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails. paho's connect leaves a
    socket whose handshake failed (a broker of another CA) unclosed, held by the exception until
    it is collected: one more open socket per failed attempt until then."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


@functools.cache
def mqtt_tls_context(
    ca: Path, certificate: Path | None = None, key: Path | None = None, version: str = "1.2"
) -> ssl.SSLContext:
    """The MQTT clients' context: the broker verified against `ca` (certificate and host
    name), the client's own certificate when given, TLS `version` or later. One per set of
    files (cached: every client shares it). ValueError naming the setting on a bad file."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"mqtt_tls_ca: {ca} is not a readable PEM CA file ({_why(exc)})") from None
    context.minimum_version = MQTT_TLS_VERSIONS[version]
    context.sslsocket_class = _ClosingSSLSocket
    if certificate is not None:
        try:
            context.load_cert_chain(
                str(certificate), None if key is None else str(key), password=_no_password
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"mqtt_tls_certificate: {certificate} and mqtt_tls_key: {key} are not a readable "
                f"PEM certificate and its key ({_why(exc)})"
            ) from None
    return context


def _no_password() -> str:
    """OpenSSL's question for an encrypted key: never a prompt on a terminal."""
    raise ValueError("the key is encrypted; give it unencrypted, readable by the service only")


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)
