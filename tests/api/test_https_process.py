"""TLS on the real `pumpctl serve` (docs/security.md, "TLS"), with certificates each test makes:

- HTTPS from the service's own settings (PUMPCTL_TLS_CERTIFICATE/KEY, or systemd's credentials
  tls.crt and tls.key in $CREDENTIALS_DIRECTORY), on a non-loopback bind; HSTS on every
  HTTPS response; plain HTTP and a client that does not trust the CA get nothing;
- a TLS-terminating proxy in front (tls_proxy): plain HTTP allowed on a non-loopback bind,
  its X-Forwarded-For believed, and no other address's;
- MQTT over TLS to a real Mosquitto TLS listener that requires a client certificate: the
  simulated pumps and the infusion-state publisher connect; with the wrong CA the pump's link
  is lost (A2) with the TLS error as its reason, and the service goes on.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
import pytest
from pumpctl_process import run_pumpctl
from service_process import Service, serving, terminate
from tls_env import Pki, TlsBroker, make_pki, tls_broker_running

from api.edge import GRACEFUL_S

BOUND_S = 20.0


#: Seconds a stop may take beyond the web side's bound on its connections: the kernel's own
#: stop after it, on a loaded machine (a stop that waits on the client took 10 s).
STOP_SLACK_S = 5.0


@pytest.fixture(autouse=True)
def no_credentials_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's TLS comes from what each test sets, never from the machine's systemd."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def https(pki: Pki, data: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    """`serving` options for an HTTPS service trusting only `pki`'s CA."""
    data.mkdir(parents=True, exist_ok=True)
    return {
        "scheme": "https",
        "verify": pki.client_context(),
        "env": env,
        "args": list(args),
    }


def tls_files(pki: Pki) -> dict[str, str]:
    return {"PUMPCTL_TLS_CERTIFICATE": str(pki.server_cert), "PUMPCTL_TLS_KEY": str(pki.server_key)}


async def test_the_api_and_the_page_are_served_over_https_with_hsts(
    tmp_path: Path, pki: Pki
) -> None:
    data = tmp_path / "data"
    # 0.0.0.0: a non-loopback bind is allowed with TLS (the client speaks to 127.0.0.1)
    options = https(pki, data, tls_files(pki), "--host", "0.0.0.0")
    async with serving(data, **options) as service:  # type: ignore[arg-type]
        assert service.http is not None
        health = await service.http.get("/api/v1/health")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        page = await service.http.get("/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        refused = await service.http.get("/api/v1/pumps")  # no token: 401, still HSTS
        assert refused.status_code == 401
        assert refused.headers["strict-transport-security"] == "max-age=31536000"
        pumps = await service.api("GET", "/pumps", "nurse")
        assert [p["id"] for p in pumps] == ["pump-1", "pump-2"]

        # plain HTTP on the same port gets no answer at all
        async with httpx.AsyncClient(timeout=5.0) as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{service.port}/api/v1/health")
        # a client that trusts another CA (the default store) does not connect
        async with httpx.AsyncClient(timeout=5.0) as untrusting:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(f"https://127.0.0.1:{service.port}/api/v1/health")
        # a client that offers nothing newer than TLS 1.1 is refused (the floor is TLS 1.2)
        old = pki.client_context()
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with warnings.catch_warnings():  # the point: an old client
            warnings.simplefilter("ignore", DeprecationWarning)
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client would speak TLS 1.1: the server says no
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # an alert, or a reset
            await asyncio.open_connection("127.0.0.1", service.port, ssl=old)
        # the same client allowed TLS 1.2 is served: the version was what was refused
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        _reader, writer = await asyncio.open_connection("127.0.0.1", service.port, ssl=old)
        writer.close()
        await writer.wait_closed()
    assert "Traceback" not in service.log.read_text()


async def test_systemd_credentials_give_the_service_its_certificate(
    tmp_path: Path, pki: Pki
) -> None:
    credentials = tmp_path / "credentials"  # what LoadCredential=tls.crt:... makes
    credentials.mkdir(mode=0o700)
    (credentials / "tls.crt").write_bytes(pki.server_cert.read_bytes())
    (credentials / "tls.key").write_bytes(pki.server_key.read_bytes())
    data = tmp_path / "data"
    options = https(pki, data, {"CREDENTIALS_DIRECTORY": str(credentials)}, "--host", "0.0.0.0")
    async with serving(data, **options) as service:  # type: ignore[arg-type]
        assert service.http is not None
        health = await service.http.get("/api/v1/health")
        assert health.status_code == 200
        assert health.headers["strict-transport-security"] == "max-age=31536000"


def _access_lines(service: Service, path: str) -> list[str]:
    return [line for line in service.log.read_text().splitlines() if f"GET {path} " in line]


async def test_behind_a_tls_proxy_only_the_proxy_is_trusted_for_forwarded_headers(
    tmp_path: Path,
) -> None:
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    # the proxy at 127.0.0.1 (nginx on the gateway): a non-loopback plain bind is allowed, and
    # what the proxy forwards is believed
    data = tmp_path / "proxied"
    data.mkdir()
    env = {"PUMPCTL_TLS_PROXY": "127.0.0.1"}
    async with serving(data, env=env, args=["--host", "0.0.0.0"]) as service:
        assert service.http is not None
        # (a route the harness never asks, so its one access line is this request's)
        answer = await service.http.get("/api/v1/pumps", headers=forged)
        assert answer.status_code == 401
        async with asyncio.timeout(BOUND_S):
            while not (lines := _access_lines(service, "/api/v1/pumps")):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling the log with a deadline
        assert "203.0.113.9" in lines[0], lines
        # the proxy said https: the response is an HTTPS one, with HSTS left to the proxy
        assert "strict-transport-security" not in answer.headers
    # the proxy is elsewhere (192.0.2.1): a request from loopback is not believed
    data = tmp_path / "elsewhere"
    data.mkdir()
    async with serving(data, env={"PUMPCTL_TLS_PROXY": "192.0.2.1"}) as service:
        assert service.http is not None
        answer = await service.http.get("/api/v1/pumps", headers=forged)
        assert answer.status_code == 401
        async with asyncio.timeout(BOUND_S):
            while not (lines := _access_lines(service, "/api/v1/pumps")):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling the log with a deadline
        assert "203.0.113.9" not in lines[0], lines
        assert "127.0.0.1" in lines[0], lines


# -- MQTT over TLS ---------------------------------------------------------------------------


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    """A Mosquitto TLS listener requiring a client certificate of `pki`'s CA (fails, never
    skips, under CI=true without Mosquitto)."""
    with tls_broker_running(tmp_path / "broker", pki) as running:
        yield running


def mqtt_tls(pki: Pki, ca: Path | None = None) -> dict[str, str]:
    return {
        "PUMPCTL_MQTT_TLS_CA": str(ca or pki.ca_file),
        "PUMPCTL_MQTT_TLS_CERTIFICATE": str(pki.client_cert),
        "PUMPCTL_MQTT_TLS_KEY": str(pki.client_key),
    }


@pytest.mark.mosquitto
async def test_simulated_pumps_and_the_publisher_speak_mqtt_over_tls(
    tmp_path: Path, pki: Pki, tls_broker: TlsBroker
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    args = ["--link", "mqtt", "--broker", tls_broker.address]
    async with serving(data, simulate=1, env=mqtt_tls(pki), args=args) as service:
        async with asyncio.timeout(BOUND_S):
            while not (await service.pump("pump-1"))["connected"]:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # polling a condition with a deadline
        infusion = await service.running("pump-1", "TLS-0001")
        pump = await service.pump("pump-1")
        assert pump["state"] == "running"
        # the infusion's state, published over TLS, read by a client of the same CA
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        async with (
            asyncio.timeout(BOUND_S),
            aiomqtt.Client(tls_broker.host, tls_broker.port, tls_context=context) as client,
        ):
            await client.subscribe(f"pumpctl/v1/infusions/{infusion}", qos=1)
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                view = json.loads(message.payload)
                if view["id"] == infusion and view["state"] == "running":
                    break
    log = service.log.read_text()
    assert "CERTIFICATE_VERIFY_FAILED" not in log
    assert "Traceback" not in log


@pytest.mark.mosquitto
async def test_a_broker_signed_by_another_ca_is_a_lost_link_with_its_reason_not_a_crash(
    tmp_path: Path, pki: Pki, tls_broker: TlsBroker
) -> None:
    """A2: the pump's link is lost, the reason (the TLS verification) in the log, the service
    and its API go on; nothing is sent to a broker that could not prove who it is."""
    other = make_pki(tmp_path / "other")
    data = tmp_path / "data"
    data.mkdir()
    upgraded = await run_pumpctl("db", "upgrade", "--database", f"sqlite:///{data}/pumpctl.db")
    assert upgraded.returncode == 0, upgraded.stderr  # real pump links: a migrated store
    pump_url = f"pump-1=mqtt://{tls_broker.host}:{tls_broker.port}/pump-1"
    env = mqtt_tls(pki, ca=other.ca_file)
    args = ["--pump", pump_url, "--bench"]
    async with serving(data, simulate=0, clock="real", env=env, args=args) as service:
        reason = f"broker {tls_broker.host}:{tls_broker.port} link lost: "
        async with asyncio.timeout(BOUND_S):
            while "CERTIFICATE_VERIFY_FAILED" not in (log := service.log.read_text()):  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # polling the log with a deadline
        line = next(x for x in log.splitlines() if "CERTIFICATE_VERIFY_FAILED" in x)
        assert reason in line, line
        pump = await service.pump("pump-1")
        assert pump["connected"] is False
        assert pump["state"] == "offline"
        health = await service.api("GET", "/health", "viewer")
        assert [p["connected"] for p in health["pumps"]] == [False]
        assert service.process is not None
        assert service.process.returncode is None
    assert "Traceback" not in service.log.read_text()


async def test_a_stop_of_the_web_side_does_not_wait_on_a_tls_client_that_never_answers(
    tmp_path: Path, pki: Pki
) -> None:
    """A client holds an idle keep-alive TLS connection and reads nothing more (httpx's pool:
    its TLS is read only when a request is, so the server's close is never answered): the
    service's stop ends within the web side's bound on its connections (api/edge.py
    GRACEFUL_S, 2 s), not when the client lets it. Without the bound such a stop took 10 s
    (the HTTPS tests' teardowns, measured)."""
    data = tmp_path / "data"
    async with serving(data, **https(pki, data, tls_files(pki))) as service:  # type: ignore[arg-type]
        assert service.http is not None
        assert service.process is not None
        assert (await service.http.get("/api/v1/health")).status_code == 200  # kept alive
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await terminate(service.process)  # the client's idle connection stays open meanwhile
        took = loop.time() - asked
        assert service.process.returncode == 0, service.log.read_text()[-2000:]
        assert took < GRACEFUL_S + STOP_SLACK_S, took
