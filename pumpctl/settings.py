"""The service's settings: defaults, then a TOML file (`--config`), then `PUMPCTL_*` environment
variables, then the command line (each later source wins). pydantic-settings reads them.

Tokens (`api_tokens`) and pumps (`pumps`) may be given as tables in the TOML file or as one
string each in the environment: `PUMPCTL_API_TOKENS="token=name:role,..."` (interfaces.md,
section 3) and `PUMPCTL_PUMPS="ID=URL,..."`. A pump URL is `serial:///dev/ttyUSB0?address=0&safe=N`
or `mqtt://[USER:PASSWORD@]HOST:PORT/PUMP_ID`. `config/pumpctl.example.toml` shows every key.

MQTT credentials (a broker with `allow_anonymous false`, config/mosquitto.conf): `mqtt_username`
with `mqtt_password` (PUMPCTL_MQTT_PASSWORD) or `mqtt_password_file` (PUMPCTL_MQTT_PASSWORD_FILE,
e.g. a systemd credential `%d/mqtt.password`, or /etc/pumpctl/mqtt.password mode 0600), one of
the two: both is refused, as is a password without a user name (MQTT 3.1.1, 3.1.2.9). The file
is read once, at start: unreadable, empty or more than one line is refused naming the setting (a
trailing newline is not part of the password). They are used by every MQTT connection of the
service (the pumps' buses, the infusion-state publisher, simulated MQTT pumps); a pump URL's own
`USER:PASSWORD@` (percent-encoded) wins for that pump. Passwords are `SecretStr`: never in a
repr, a log line or an error message.

TLS (pumpctl/tls.py, docs/security.md): the web side serves HTTPS with `tls_certificate` and
`tls_key` (or systemd's credentials `tls.crt` and `tls.key`, taken when both are unset); a
non-loopback `host` without them is refused at start unless `tls_proxy` names the
TLS-terminating proxy in front. Every MQTT connection uses TLS when `mqtt_tls_ca` is set, with
`mqtt_tls_certificate` and `mqtt_tls_key` as its client certificate when given.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pumpctl.credentials import MIN_TOKEN_CHARS
from pumpctl.tls import MQTT_TLS_VERSIONS, credential_files, mqtt_tls_context

__all__ = [
    "DEFAULT_PORT",
    "LOOPBACK_HOSTS",
    "PumpLink",
    "Role",
    "Settings",
    "TokenEntry",
    "load_settings",
    "parse_pump_url",
    "parse_tokens",
    "read_password_file",
    "redact_url",
]

DEFAULT_HOST = "127.0.0.1"
#: The `Host` names the web side always answers as unless `allowed_hosts` says otherwise.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: Binds that name no host a client could use (a `Host` header never is one of these).
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - names, not a bind


def _host_name(name: str) -> str:
    """`name` as a `Host` header carries it: lower case, an IPv6 address in brackets; a
    `*.domain` pattern kept; ValueError for anything else (a port, a path, `*` alone)."""
    name = name.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        pattern = name[2:] if name.startswith("*.") else name
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*", pattern):
            raise ValueError(f"{name!r} is not a host name, an IP address or *.domain") from None
        return name
    return f"[{address}]" if address.version == 6 else str(address)


DEFAULT_PORT = 8000
#: Seconds of the serial safe-mode watchdog when a `--pump` URL names none: longer than a
#: restart of the service (the pump stops itself only when the gateway is really gone).
DEFAULT_SAFE_MODE_S = 30


class Role(StrEnum):
    """The roles of interfaces.md, section 3."""

    VIEWER = "viewer"
    NURSE = "nurse"
    CLINICIAN = "clinician"
    ADMIN = "admin"


class TokenEntry(BaseModel):
    """Who a bearer token speaks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=100)]
    role: Role


class PumpLink(BaseModel):
    """One configured pump: its id and how it is reached."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")]
    transport: Literal["serial", "mqtt"]
    port: str = ""  # serial: the device, pseudo-terminal or socket:// URL
    address: Annotated[int, Field(ge=0, le=99)] = 0
    safe_mode_s: Annotated[int, Field(ge=0, le=255)] | None = DEFAULT_SAFE_MODE_S
    baud: int = 19200
    host: str = ""  # mqtt: the broker
    mqtt_port: Annotated[int, Field(ge=1, le=65535)] = 1883
    pump: str = ""  # mqtt: the pump's id on the broker
    # mqtt: the controller's credentials for this pump's broker (None: the settings' own)
    username: Annotated[str, Field(min_length=1)] | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _credentials(self) -> PumpLink:
        if self.password is not None and self.username is None:
            raise ValueError(f"pump {self.id}: an MQTT password needs a user name")
        if self.transport == "serial" and self.username is not None:
            raise ValueError(f"pump {self.id}: a serial link has no user name")
        return self


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo replaced by `***` (for messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{tail}"


def parse_pump_url(pump_id: str, url: str) -> PumpLink:
    """`serial:///dev/ttyUSB0?address=0&safe=N` or `mqtt://[user:pass@]host:1883/PUMP_ID` as a
    `PumpLink` (ValueError naming the part that is wrong; a password is never in it)."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"pump {pump_id}: not a URL ({shown!r})") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "serial":
        unknown = set(query) - {"address", "safe", "baud"}
        if unknown:
            raise ValueError(f"pump {pump_id}: unknown serial option(s) {sorted(unknown)}")
        port = parts.path or ""
        if parts.netloc:  # serial://socket-host:port for a TCP-served line
            port = f"socket://{parts.netloc}"
        if parts.username is not None:
            raise ValueError(f"pump {pump_id}: a serial URL has no user name ({shown!r})")
        if not port:
            raise ValueError(f"pump {pump_id}: serial URL names no port ({shown!r})")
        try:
            address = int(query.get("address", "0"))
            safe_text = query.get("safe", str(DEFAULT_SAFE_MODE_S))
            safe = None if safe_text in {"off", "none"} else int(safe_text)
            baud = int(query.get("baud", "19200"))
        except ValueError:
            raise ValueError(
                f"pump {pump_id}: address, safe and baud are numbers ({shown!r})"
            ) from None
        return PumpLink(
            id=pump_id,
            transport="serial",
            port=port,
            address=address,
            safe_mode_s=safe,
            baud=baud,
        )
    if parts.scheme == "mqtt":
        if not parts.hostname:
            raise ValueError(f"pump {pump_id}: MQTT URL names no broker ({shown!r})")
        try:
            mqtt_port = parts.port or 1883
        except ValueError:  # urllib's message would not name the pump
            raise ValueError(
                f"pump {pump_id}: MQTT URL's port is not 1-65535 ({shown!r})"
            ) from None
        remote = parts.path.strip("/") or pump_id
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if not username and (username is not None or password is not None):
            raise ValueError(f"pump {pump_id}: MQTT URL has no user name before '@' ({shown!r})")
        return PumpLink(
            id=pump_id,
            transport="mqtt",
            host=parts.hostname,
            mqtt_port=mqtt_port,
            pump=remote,
            username=username,
            password=SecretStr(password) if password is not None else None,
        )
    raise ValueError(f"pump {pump_id}: URL must start serial:// or mqtt://, got {shown!r}")


def read_password_file(path: Path) -> SecretStr:
    """The password in `path`: its one line, without the line ending. ValueError (naming
    neither the password nor more of the file than its path) if it is unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path} is not readable ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ValueError(f"{path} is empty")
    if "\n" in password or "\r" in password:
        raise ValueError(f"{path} has more than one line (the password is its one line)")
    return SecretStr(password)


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def parse_tokens(text: str) -> dict[str, TokenEntry]:
    """`token=name:role,...` (PUMPCTL_API_TOKENS) as a mapping (ValueError naming the entry)."""
    tokens: dict[str, TokenEntry] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        token, eq, who = entry.partition("=")
        name, colon, role = who.partition(":")
        if not eq or not colon or not token.strip() or not name.strip():
            raise ValueError("api_tokens: each entry is token=name:role")
        try:
            tokens[token.strip()] = TokenEntry(name=name.strip(), role=Role(role.strip()))
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise ValueError(f"api_tokens: role {role.strip()!r} is not one of {roles}") from None
    return tokens


class Settings(BaseSettings):
    """Everything `create_app` needs; see the module docstring for where it comes from."""

    # hide_input_in_errors: a ValidationError's text would otherwise show the value given
    # (a password, a pump URL with one), wherever it is printed
    model_config = SettingsConfigDict(
        env_prefix="PUMPCTL_", extra="forbid", hide_input_in_errors=True
    )

    host: str = DEFAULT_HOST
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT
    database: str | None = None  # a SQLAlchemy URL; default sqlite in the data directory
    data_dir: Path | None = None
    clock: str = "real"  # real | scaled:F[@EPOCH] | virtual
    bench: bool = False  # the pumps on the far side are simulators (a bench, never a patient)
    simulate: Annotated[int, Field(ge=0, le=100)] = 0  # N simulated pumps instead of `pumps`
    # how simulated pumps are reached: a pseudo-terminal, a broker, or "memory": in process,
    # no wire (rule-level tests and demos; it proves nothing about a transport)
    link: Literal["serial", "mqtt", "memory"] = "serial"
    # simulated serial pumps answer as late as a 19200 baud line would (benchmarks)
    sim_wire_time: bool = False
    broker: str | None = None  # HOST:PORT: simulated MQTT pumps, infusion states published
    mqtt_prefix: str = "pumpctl/v1"
    # credentials of every MQTT connection (module docstring); a pump URL's own win for it
    mqtt_username: Annotated[str, Field(min_length=1)] | None = None
    mqtt_password: SecretStr | None = None
    mqtt_password_file: Path | None = None  # read at start into mqtt_password
    gateway_id: str = "gateway-1"
    protocol: str = "daratumumab"  # the protocol of a new course when a request names none
    api_tokens: Annotated[dict[str, TokenEntry], NoDecode] = Field(default_factory=dict)
    # a sign-in's session ends this long after it began (a shift; docs/architecture.md,
    # "Personal accounts, sessions and machine tokens")
    session_max_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 12 * 3600.0
    pumps: Annotated[list[PumpLink], NoDecode] = Field(default_factory=list)
    command_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    link_timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    stop_answer_s: Annotated[float, Field(gt=0, le=60)] = 4.5  # a reaction's answer waits this
    events_replay: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    # reads a second one caller (account and address) may make of the kernel through the web
    # side, with a burst of twice that (api/readcache.py; 429 beyond)
    read_budget_per_s: Annotated[float, Field(gt=0, le=100_000)] = 100.0
    # the audit trail's hash chain (docs/architecture.md): verified from the row verified last
    # every audit_verify_s, whole every audit_full_verify_s; its head logged every
    # audit_head_log_s (and at start and stop)
    audit_verify_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    audit_full_verify_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    audit_head_log_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    # the kernel's Unix socket (the web side's only way in); default: $RUNTIME_DIRECTORY (systemd)
    # or the data directory, kernel.sock
    kernel_socket: Path | None = None
    # the user a web side started as root becomes (default nobody; never root); started as
    # another user it runs as that user (docs/architecture.md, "Two processes")
    web_user: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    # the names and addresses the web side answers as (the Host header); default: the loopback
    # names and `host` (docs/security.md, "Input"); a JSON list or NAME,NAME in the environment
    allowed_hosts: Annotated[list[str], NoDecode] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # HTTPS of the web side (pumpctl/tls.py): a PEM certificate chain and its unencrypted key;
    # unset, systemd's credentials tls.crt and tls.key are taken when the unit loads them
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    # the address of the TLS-terminating proxy in front: plain HTTP on a non-loopback host is
    # allowed only with it, and it is the only address trusted for X-Forwarded-*
    tls_proxy: str | None = None
    # MQTT over TLS, for every MQTT connection: the CA that signed the broker's certificate,
    # optionally the client's certificate and key, and the lowest TLS version accepted
    mqtt_tls_ca: Path | None = None
    mqtt_tls_certificate: Path | None = None
    mqtt_tls_key: Path | None = None
    mqtt_tls_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        return parse_tokens(value) if isinstance(value, str) else value

    @field_validator("api_tokens")
    @classmethod
    def _long_tokens(cls, value: dict[str, TokenEntry]) -> dict[str, TokenEntry]:
        for token, entry in value.items():
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"the token of {entry.name!r} has {len(token)} characters, at least "
                    f"{MIN_TOKEN_CHARS} are needed (`pumpctl user token` makes 43)"
                )
        return value

    @field_validator("pumps", mode="before")
    @classmethod
    def _pumps(cls, value: Any) -> Any:
        if isinstance(value, str):
            links = []
            for raw in value.split(","):
                if not raw.strip():
                    continue
                pump_id, eq, url = raw.strip().partition("=")
                if not eq:
                    raise ValueError("pumps: each entry is ID=URL")
                links.append(parse_pump_url(pump_id.strip(), url.strip()))
            return links
        if isinstance(value, list):
            return [
                parse_pump_url(*item.split("=", 1))
                if isinstance(item, str) and "=" in item
                else item
                for item in value
            ]
        return value

    @field_validator("mqtt_password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("empty: unset it, or give the password")
        return value

    @field_validator("mqtt_password_file")
    @classmethod
    def _password_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_password_file(value)  # refused at start, naming this setting
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)  # a JSON list (an IPv6 name alone is written [::1])
            return [name for name in (n.strip() for n in text.split(",")) if name]
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("at least one name (unset: the loopback names and host)")
        return [_host_name(name) for name in value]

    def trusted_hosts(self) -> list[str]:
        """The `Host` names the web side answers as: `allowed_hosts`, or by default the
        loopback names and `host` itself unless it is a wildcard (0.0.0.0, ::)."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        names = list(LOOPBACK_HOSTS)
        if self.host not in WILDCARD_HOSTS and (own := _host_name(self.host)) not in names:
            names.append(own)
        return names

    @field_validator("tls_proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError("one IP address (the TLS-terminating proxy's), not a name") from None

    @field_validator("clock")
    @classmethod
    def _clock(cls, value: str) -> str:
        kind, _, arg = value.partition(":")
        if kind in {"real", "virtual"} and not arg:
            return value
        if kind == "scaled":
            factor = arg.partition("@")[0]
            try:
                ok = math.isfinite(float(factor)) and float(factor) > 0
            except ValueError:
                ok = False
            if ok:
                return value
        raise ValueError("clock: real, virtual, scaled:FACTOR or scaled:FACTOR@EPOCH")

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        ids = [p.id for p in self.pumps]
        if len(ids) != len(set(ids)):
            raise ValueError("pumps: a pump id is configured twice")
        if self.simulate and self.pumps:
            raise ValueError("simulate: simulated pumps replace configured ones; give one")
        if self.clock != "real" and self.pumps and not self.bench:
            raise ValueError(
                f"clock: {self.clock!r} with real pump links is refused; clinical time runs "
                "scaled or virtual only against simulators (say so with --bench)"
            )
        if self.simulate and self.link == "mqtt" and not self.broker:
            raise ValueError("broker: simulated MQTT pumps need --broker HOST:PORT")
        if self.mqtt_password_file is not None:
            if self.mqtt_password is not None:
                raise ValueError("mqtt_password and mqtt_password_file are both set: give one")
            self.mqtt_password = read_password_file(self.mqtt_password_file)
        if self.mqtt_password is not None and self.mqtt_username is None:
            raise ValueError("mqtt_password: a password needs mqtt_username")
        self._tls_files()
        return self

    def _tls_files(self) -> None:
        """The web side's certificate and key: both or neither (else systemd's credentials);
        the MQTT context built now, so a file that cannot be read is refused at start."""
        if (self.tls_certificate is None) != (self.tls_key is None):
            given, other = (
                ("tls_certificate", "tls_key")
                if self.tls_key is None
                else ("tls_key", "tls_certificate")
            )
            raise ValueError(f"{given} without {other}: give both")
        if self.tls_certificate is None and (found := credential_files()) is not None:
            self.tls_certificate, self.tls_key = found
        if (self.mqtt_tls_certificate is None) != (self.mqtt_tls_key is None):
            raise ValueError("mqtt_tls_certificate and mqtt_tls_key: give both, or neither")
        if self.mqtt_tls_certificate is not None and self.mqtt_tls_ca is None:
            raise ValueError("mqtt_tls_certificate: a client certificate needs mqtt_tls_ca")
        self.mqtt_tls()

    def mqtt_tls(self) -> ssl.SSLContext | None:
        """The SSL context of every MQTT connection (pumpctl/tls.py), None: plain MQTT."""
        if self.mqtt_tls_ca is None:
            return None
        assert self.mqtt_tls_version in MQTT_TLS_VERSIONS
        return mqtt_tls_context(
            self.mqtt_tls_ca, self.mqtt_tls_certificate, self.mqtt_tls_key, self.mqtt_tls_version
        )

    def mqtt_credentials(self, link: PumpLink | None = None) -> tuple[str | None, str | None]:
        """(user name, password) for an MQTT connection: `link`'s own if its URL or table
        gives a user name, else the settings' (None, None: anonymous)."""
        if link is not None and link.username is not None:
            return link.username, _reveal(link.password)
        return self.mqtt_username, _reveal(self.mqtt_password)

    @property
    def clock_mode(self) -> Literal["real", "scaled", "virtual"]:
        """`real`, `scaled` or `virtual` (GET /clock's `mode`)."""
        kind = self.clock.partition(":")[0]
        assert kind in {"real", "scaled", "virtual"}
        return kind  # type: ignore[return-value]


class _Only(PydanticBaseSettingsSource):
    """A source's values for the settings named in `keep` alone (the others left unread)."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        inner: PydanticBaseSettingsSource,
        keep: frozenset[str],
    ) -> None:
        super().__init__(settings_cls)
        self.inner = inner
        self.keep = keep

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.inner().items() if k in self.keep}


def load_settings(
    config_file: Path | None = None, *, only: frozenset[str] | None = None, **overrides: Any
) -> Settings:
    """Settings from defaults < `config_file` (TOML) < `PUMPCTL_*` < `overrides` (None ignored).

    `only`: the settings a process needs (the web side's): the others in the file and the
    environment are neither read nor checked (a kernel's MQTT password file the web side's
    user may not read is none of its business)."""
    if config_file is not None and not config_file.is_file():
        raise ValueError(f"config: {config_file} is not a file")

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            del dotenv_settings, file_secret_settings
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            if only is not None:
                sources = [_Only(settings_cls, source, only) for source in sources]
            return tuple(sources)

    given = {k: v for k, v in overrides.items() if v is not None}
    return _Loaded(**given)
