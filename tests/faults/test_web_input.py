"""Bounded, identity-first input on the real processes (`pumpctl serve`: the kernel and its web
side; docs/security.md, "Input"; issue 20): a request without a valid token is 401 before its
body is sent, a `Host` not allowed is 400, `X-Forwarded-For` from loopback is not believed,
`/metrics` needs the admin's token, `/docs` loads nothing from elsewhere, and hostile values
sent through the web side answer no 5xx and leave no request input in the service's log (the
kernel's and the web side's, uvicorn's access log included)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from leaks import no_leaked_tasks_on_the_module_loop  # noqa: F401 - on the module's loop
from service_process import TOKENS, Service, serving

BOUND_S = 30.0
#: Seconds a refusal of a request whose body never comes may take (it reads none of it).
PROMPT_S = 3.0
MRN = "MRN-WEBSIDE-90210"
NAME = "Jane Roe-Webside"
FREE_TEXT = "felt faint near Ward-7Q"
MARKERS = (MRN, NAME, FREE_TEXT, "203.0.113.77")


#: The module's tests share the event loop of `unchanged`, a fixture of the module's; the
#: leaked-task check runs on that loop too (tests/helpers/leaks.py).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unchanged(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    """One service for the module's tests that change nothing in it: each request they send is
    refused before anything is done (401, 400, 413) or only reads, and what each asserts of the
    log is about its own requests (its markers, its sentinel ids). One thing they do leave: a
    wrong bearer token counts against the address (api/throttle.py); they send two in all,
    fewer than the throttle lets pass before it answers 429, and a test that sends more belongs
    on `service`. A start is about 2.4 s of CPU (scripts/test-cpu), paid once instead of by
    each of them (issue 22)."""
    async with serving(tmp_path_factory.mktemp("web-input"), simulate=1) as served:
        yield served


@pytest_asyncio.fixture(loop_scope="module")
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """A fresh service, this test's alone: for a test that changes what the service holds."""
    async with serving(tmp_path, simulate=1) as served:
        yield served


async def _head(port: int, request: bytes) -> tuple[bytes, float]:
    """Send `request` (a head, and no body whatever it declares) and read the answer's status
    line: (the line, seconds it took)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        began = loop.time()
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(BOUND_S):
            line = await reader.readline()
        return line, loop.time() - began
    finally:
        writer.close()


def _post_head(authorization: str | None, host: str = "127.0.0.1") -> bytes:
    said = f"Authorization: {authorization}\r\n" if authorization else ""
    return (
        f"POST /api/v1/patients HTTP/1.1\r\nHost: {host}\r\n{said}"
        f"Content-Type: application/json\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n"
    ).encode()


async def test_a_request_without_a_valid_token_is_401_before_its_body_is_sent(
    unchanged: Service,
) -> None:
    """A head declaring 50 MB whose body never comes: 401 at once without a valid token (the
    web side never waits for the body, let alone reads it), 413 at once with one; a valid
    token is then still answered."""
    for authorization in (None, "Bearer not-a-token", f"Basic {TOKENS['nurse']}"):
        line, took = await _head(unchanged.port, _post_head(authorization))
        assert line.startswith(b"HTTP/1.1 401"), (authorization, line)
        assert took < PROMPT_S, took
    line, took = await _head(unchanged.port, _post_head(f"Bearer {TOKENS['clinician']}"))
    assert line.startswith(b"HTTP/1.1 413"), line
    assert took < PROMPT_S, took
    assert (await unchanged.api("GET", "/me", "clinician"))["role"] == "clinician"


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.evil.example", "localhost.", "10.0.0.1", "", "a b"]
)
async def test_a_host_not_allowed_is_400_before_anything_is_done(
    unchanged: Service, host: str
) -> None:
    """DNS rebinding: a page of another site whose name resolves to the gateway sends its own
    name as `Host`; 400, also with a valid token and a body (nothing is made)."""
    assert unchanged.http is not None
    headers = {"Host": host, "Authorization": f"Bearer {TOKENS['clinician']}"}
    answer = await unchanged.http.post(
        "/api/v1/patients", json={"mrn": MRN, "weight_kg": 70}, headers=headers
    )
    assert answer.status_code == 400, answer.text
    health = await unchanged.http.get("/api/v1/health", headers={"Host": host})
    assert health.status_code == 400
    assert MRN not in unchanged.log.read_text()


async def test_the_loopback_names_and_the_bound_host_are_allowed(unchanged: Service) -> None:
    assert unchanged.http is not None
    for host in ("127.0.0.1", f"127.0.0.1:{unchanged.port}", "localhost", "LOCALHOST:1", "[::1]"):
        answer = await unchanged.http.get("/api/v1/health", headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)


async def test_allowed_hosts_names_the_hosts_the_web_side_answers_as(tmp_path: Path) -> None:
    """`PUMPCTL_ALLOWED_HOSTS` replaces the default: the web side (which reads only its own
    settings) answers as those names and no other, `localhost` included."""
    env = {"PUMPCTL_ALLOWED_HOSTS": "gw.ward.example,127.0.0.1"}
    async with serving(tmp_path, simulate=1, env=env) as service:
        assert service.http is not None
        for host, status in [
            ("gw.ward.example", 200),
            ("GW.ward.example:8443", 200),
            ("127.0.0.1", 200),
            ("localhost", 400),
            ("other.ward.example", 400),
        ]:
            answer = await service.http.get("/api/v1/health", headers={"Host": host})
            assert answer.status_code == status, (host, answer.status_code)


async def _logged_through(service: Service, sentinel: int) -> str:
    """The service's log once the web side's access line of `GET /api/v1/infusions/SENTINEL`
    (asked last) is in it: every line the web side logged before it is then written."""
    assert service.http is not None
    await service.http.get(
        f"/api/v1/infusions/{sentinel}", headers={"Authorization": f"Bearer {TOKENS['viewer']}"}
    )
    async with asyncio.timeout(BOUND_S):
        while f"/api/v1/infusions/{sentinel} HTTP" not in (text := service.log.read_text()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling a condition with a deadline
    return text


async def test_x_forwarded_for_from_loopback_is_not_believed(unchanged: Service) -> None:
    """No trusted proxy by default (uvicorn's own `proxy_headers`/`forwarded_allow_ips`): a
    forged `X-Forwarded-For` does not rewrite the peer the access log shows."""
    assert unchanged.http is not None
    forged = {"X-Forwarded-For": "203.0.113.77", "X-Forwarded-Proto": "https"}
    answer = await unchanged.http.get(
        "/api/v1/infusions/424242",
        headers={**forged, "Authorization": f"Bearer {TOKENS['viewer']}"},
    )
    assert answer.status_code == 404
    text = await _logged_through(unchanged, 424243)
    lines = [line for line in text.splitlines() if "/api/v1/infusions/424242 HTTP" in line]
    assert lines, text[-2000:]
    assert all("127.0.0.1:" in line for line in lines), lines
    assert "203.0.113.77" not in text


async def test_metrics_need_the_admins_token(unchanged: Service) -> None:
    assert unchanged.http is not None
    assert (await unchanged.http.get("/metrics")).status_code == 401
    wrong = {"Authorization": "Bearer not-a-token"}
    assert (await unchanged.http.get("/metrics", headers=wrong)).status_code == 401
    for role in ("viewer", "nurse", "clinician"):
        said = {"Authorization": f"Bearer {TOKENS[role]}"}
        answer = await unchanged.http.get("/metrics", headers=said)
        assert answer.status_code == 403, (role, answer.status_code)
    admin = {"Authorization": f"Bearer {TOKENS['admin']}"}
    answer = await unchanged.http.get("/metrics", headers=admin)
    assert answer.status_code == 200
    assert "pumpctl_" in answer.text


async def test_the_docs_page_loads_its_files_from_the_package_and_nothing_from_elsewhere(
    unchanged: Service,
) -> None:
    assert unchanged.http is not None
    page = await unchanged.http.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert not re.search(r"(?i)(https?:)?//[a-z0-9]", html), html  # no URL of another host
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        assert asset.startswith("/docs-static/"), asset
        served = await unchanged.http.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 100, asset
    schema = await unchanged.http.get("/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/infusions" in schema.json()["paths"]


def _sweep(infusion: int) -> list[tuple[str, str, str, str | None]]:
    """(method, url, headers: "json" / "auth" / "none" / a content type, body) of each request
    the hostile sweep sends; a body "forged:..." goes with a forged X-Forwarded-For."""
    patient = f'{{"mrn": "{MRN}", "weight_kg": 70}}'
    sent: list[tuple[str, str, str, str | None]] = [
        ("GET", f"/api/v1/infusions?mrn={MRN}&state=running&note={NAME}", "auth", None),
        ("GET", f"/api/v1/infusions?state={MRN}", "auth", None),
        ("GET", f"/api/v1/infusions?pump_id={MRN}", "auth", None),
        ("GET", f"/api/v1/patients/{MRN}", "auth", None),
        ("GET", f"/{MRN}/{NAME}", "auth", None),
        ("GET", f"/static/{MRN}.js", "none", None),
        ("POST", "/api/v1/patients", "json", f'{{"mrn": "{MRN}", "weight_kg": NaN}}'),
        ("POST", "/api/v1/patients", "json", f'{{"mrn": "{MRN}", "weight_kg": 1e400}}'),
        ("POST", "/api/v1/patients", "json", f'{{"mrn": "{MRN}\\ud800", "weight_kg": 70}}'),
        ("POST", "/api/v1/patients", "json", patient[:-1] + f', "name": "{NAME}"}}'),
        ("POST", "/api/v1/patients", "text/plain", patient),
        ("POST", "/api/v1/patients", "application/x-www-form-urlencoded", f"mrn={MRN}"),
        ("POST", "/api/v1/patients", "json", '{"mrn": "' + "1" * 5000 + '", "weight_kg": 70}'),
        ("POST", "/api/v1/patients", "json", patient.replace("70", "1" * 5000)),
        ("POST", "/api/v1/patients", "json", f'forged:{{"mrn": "{MRN}-3", "weight_kg": 70}}'),
    ]
    on = f"/api/v1/infusions/{infusion}"
    for when in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00", "2030-01-01T10:00:00"):
        made = {"patient_id": 1, "pump_id": "pump-1", "premedication_at": when}
        sent += [
            ("POST", "/api/v1/infusions", "json", json.dumps(made)),
            ("POST", f"{on}/bag", "json", json.dumps({"prepared_at": when})),
        ]
    reaction = {"grade": 1, "signs": ["other"], "onset_at": "0001-01-01T00:00:00Z"}
    return [
        *sent,
        ("POST", f"{on}/reactions", "json", json.dumps({**reaction, "note": FREE_TEXT})),
        ("POST", f"{on}/cancel", "json", json.dumps({"reason": FREE_TEXT})),
        ("POST", f"{on}/stop", "json", json.dumps({"reason": f"{NAME} {FREE_TEXT}"})),
    ]


async def _raw_status(port: int, request: bytes) -> bytes:
    line, _took = await _head(port, request)
    return line


async def test_hostile_input_through_the_web_side_is_no_5xx_and_never_logged(
    service: Service,
) -> None:
    """Markers (a fake MRN, a name, free text) in a query string, a path, a body (valid and
    invalid), a header, a method; NaN, 1e400, lone surrogates, year 0001 and 9999 times, a time
    without its offset, `Last-Event-ID: ²` (latin-1 and UTF-8), wrong content types: no 5xx,
    and none of the markers in any line of the service's log, the access log included."""
    assert service.http is not None
    infusion = await service.running("pump-1", MRN)  # a valid MRN: not logged either
    auth = {"Authorization": f"Bearer {TOKENS['clinician']}"}
    json_type = {**auth, "Content-Type": "application/json"}
    answers: list[tuple[str, int]] = []

    async def send(method: str, url: str, **kwargs: object) -> None:
        r = await service.http.request(method, url, **kwargs)  # type: ignore[union-attr,arg-type]
        answers.append((f"{method} {url}", r.status_code))

    for method, url, kind, body in _sweep(infusion):
        headers = {"json": json_type, "auth": auth, "none": {}}.get(kind)
        if headers is None:  # a content type of its own
            headers = {**auth, "Content-Type": kind}
        if body is not None and body.startswith("forged:"):
            headers = {**json_type, "X-Forwarded-For": "203.0.113.77", "User-Agent": NAME}
        sent = None if body is None else body.removeprefix("forged:")
        await send(method, url, headers=headers, content=sent)
    for last in ("²".encode("latin-1"), "²".encode(), MRN.encode()):
        line = await _raw_status(
            service.port,
            b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TOKENS["viewer"].encode()
            + b"\r\nLast-Event-ID: "
            + last
            + b"\r\n\r\n",
        )
        answers.append((f"events Last-Event-ID {last!r}", int(line.split()[1])))
    for raw in (
        f"{MRN.replace('-', '')} /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        f"GET /api/v1/health?{MRN} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: {NAME}\r\n\r\n".encode(),
        f"GET /{MRN}\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{MRN}\r\n\r\n".encode(),
    ):
        line = await _raw_status(service.port, raw)
        answers.append((f"raw {raw[:30]!r}", int(line.split()[1]) if line else 0))
    assert all(0 < status < 500 for _what, status in answers), answers
    assert (await service.pump("pump-1"))["state"] != "running"  # the valid stop went through
    text = await _logged_through(service, 424244)
    for marker in MARKERS:
        assert marker not in text, [line for line in text.splitlines() if marker in line]
    assert "/api/v1/patients/* HTTP" in text  # the access log ran, without the MRN
