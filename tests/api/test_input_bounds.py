"""Bounded, identity-first input in the kernel's app (docs/security.md, "Input"; issue 20): the
token before the body, bodies capped, hostile values 422 naming the field and never echoed,
`Last-Event-ID` garbage taken as none, the access log's and the tracebacks' redaction, the
`allowed_hosts` setting. The same on the real processes, through the web side:
tests/faults/test_web_input.py."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH, ApiSteps, settings
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.accesslog import QuietAccess, route_words
from api.app import create_app
from api.fanout import event_stream_id
from api.guard import MAX_BODY
from api.page import STATIC_DIR
from pumpctl.cli.logsetup import Withheld
from pumpctl.settings import Settings

MARKER = "MRN-HOSTILE-4711"


async def _asgi(app: Any, method: str, path: str, headers: dict[str, str]) -> tuple[int, bool]:
    """`app` called as a server would call it, for a request whose head declares a 50 MB body
    that never comes: (status, whether the app asked for any of the body)."""
    asked: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        asked.append(True)
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(50 * 1024 * 1024).encode()),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return sent[0]["status"], bool(asked)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic bi10b2s="}],
    ids=["none", "wrong", "basic"],
)
@pytest.mark.parametrize(
    "path", ["/api/v1/patients", "/api/v1/infusions/1/reactions", "/api/v1/sim/advance"]
)
async def test_the_kernel_answers_401_before_it_reads_a_byte_of_the_body(
    tmp_path: Path, headers: dict[str, str], path: str
) -> None:
    """FastAPI reads and parses a body before its route's dependencies check the token; the
    kernel's `IdentityFirst` answers first: 401, the body never asked for."""
    app = create_app(settings(tmp_path))
    assert await _asgi(app, "POST", path, headers) == (401, False)


async def test_the_kernel_answers_413_to_a_declared_body_past_the_cap_before_reading_it(
    tmp_path: Path,
) -> None:
    app = create_app(settings(tmp_path))
    assert await _asgi(app, "POST", "/api/v1/patients", AUTH["clinician"]) == (413, False)


def test_a_body_past_the_cap_is_413_naming_it_declared_or_chunked(ward: ApiSteps) -> None:
    big = b'{"mrn": "' + b"x" * MAX_BODY + b'", "weight_kg": 70}'
    headers = {**AUTH["clinician"], "content-type": "application/json"}
    declared = ward.c.post("/api/v1/patients", content=big, headers=headers)
    assert declared.status_code == 413, declared.text
    assert declared.json() == {"detail": f"the body may have at most {MAX_BODY} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    chunked = ward.c.post("/api/v1/patients", content=chunks(), headers=headers)
    assert chunked.status_code == 413, chunked.text
    assert str(MAX_BODY) in chunked.json()["detail"]
    small = json.dumps({"mrn": "MRN-CHUNKED", "weight_kg": 70}).encode()
    fine = ward.c.post("/api/v1/patients", content=iter([small[:5], small[5:]]), headers=headers)
    assert fine.status_code == 201, fine.text


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:30:00+01:00",  # before the year 1 in UTC: an overflow in the store
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:30:00-01:00",  # past the year 9999 in UTC
        "9999-12-31T23:59:59Z",
        "1999-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
    ],
)
@pytest.mark.parametrize("field", ["premedication_at", "bag_prepared_at"])
def test_a_time_outside_what_the_rules_take_is_422_naming_it_never_echoed(
    ward: ApiSteps, when: str, field: str
) -> None:
    """Year 0001 with an offset east of UTC was a 500 (OverflowError in the store, its SQL
    parameters in the traceback); now 422 naming the field, the value never repeated, and no
    infusion made."""
    patient = ward.patient()
    body = {"patient_id": patient, "pump_id": "pump-2", field: when}
    answer = ward.post("/infusions", "clinician", body, 422)
    assert [d["loc"] for d in answer["detail"]] == [["body", field]], answer
    assert answer["detail"][0]["type"] == "clinical_time"
    assert when not in json.dumps(answer)
    assert ward.get("/infusions") == []


@pytest.mark.parametrize(
    ("path", "field", "role"),
    [
        ("premedication", "given_at", "nurse"),
        ("bag", "prepared_at", "nurse"),
        ("reactions", "onset_at", "nurse"),
    ],
)
def test_a_time_of_year_0001_or_9999_on_an_action_is_422_naming_it(
    ward: ApiSteps, path: str, field: str, role: str
) -> None:
    infusion = ward.started(ward.patient())
    for when in ("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"):
        body: dict[str, Any] = {field: when}
        if path == "reactions":
            body |= {"grade": 1, "signs": ["other"]}
        answer = ward.post(f"/infusions/{infusion}/{path}", role, body, 422)
        assert [d["loc"] for d in answer["detail"]] == [["body", field]], answer
        assert when not in json.dumps(answer)
    assert ward.pump()["state"] == "running"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "ü"],
)
def test_a_body_that_is_not_json_is_422_naming_the_body(ward: ApiSteps, content_type: str) -> None:
    headers = {**AUTH["clinician"], "content-type": content_type.encode("latin-1")}
    text = f'{{"mrn": "{MARKER}", "weight_kg": 70}}'
    r = ward.c.post("/api/v1/patients", content=text, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]
    assert MARKER not in r.text


def test_a_lone_surrogate_is_422_naming_its_field(ward: ApiSteps) -> None:
    headers = {**AUTH["clinician"], "content-type": "application/json"}
    for text, field in [
        ('{"mrn": "MRN-\\ud800", "weight_kg": 70}', "mrn"),
        ('{"mrn": "MRN-1", "weight_kg": 70, "protocol": "\\udfff"}', "protocol"),
    ]:
        r = ward.c.post("/api/v1/patients", content=text, headers=headers)
        assert r.status_code == 422, r.text
        assert [d["loc"] for d in r.json()["detail"]] == [["body", field]]


@pytest.mark.parametrize(
    "header", ["²", "¹²³", "٣", "12abc", "-1", "9" * 30, "", " ", "x.1", "0x10"]
)
def test_a_last_event_id_that_is_no_id_of_ours_is_taken_as_none(header: str) -> None:
    """`"²".isdigit()` is true and `int("²")` raises: `Last-Event-ID: ²` was a 500."""
    assert event_stream_id(header, 2**31 - 1) is None or header == "9" * 30


def test_a_last_event_id_of_ours_is_read() -> None:
    assert event_stream_id("42", 100) == 42
    assert event_stream_id("42.pump-1", 100) == 42
    assert event_stream_id("420", 100) == 100


def test_the_access_log_shows_no_query_and_no_segment_that_is_not_a_word_of_the_routes() -> None:
    quiet = QuietAccess(route_words(STATIC_DIR))
    cases = {
        f"/api/v1/infusions?pump_id={MARKER}&state=running": "/api/v1/infusions",
        f"/api/v1/patients/{MARKER}": "/api/v1/patients/*",
        "/api/v1/infusions/12/reactions/3/resolve": "/api/v1/infusions/12/reactions/3/resolve",
        f"/{MARKER}/x%20y": "/*/*",
        "/static/page.js": "/static/page.js",
        "/api/v1/sim/pumps/pump-1/faults/no_reply": "/api/v1/sim/pumps/*/faults/*",
        "/api/v1/infusions/²": "/api/v1/infusions/*",
    }
    for path, shown in cases.items():
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            0,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "GET", path, "1.1", 200),
            None,
        )
        assert quiet.filter(record)
        assert record.getMessage() == f'127.0.0.1:5 - "GET {shown} HTTP/1.1" 200', path
    odd = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", MARKER, "/", "1.1", 405), None,
    )  # fmt: skip
    quiet.filter(odd)
    assert MARKER not in odd.getMessage()


def test_a_traceback_in_the_log_names_no_exception_message() -> None:
    """A database driver's error quotes the statement's parameters (a 500 of year 0001 logged
    them); the log's tracebacks show frames and types only (OSError: errno and words)."""

    def fail() -> None:
        sqlite3.connect(":memory:").execute("SELECT ?", (MARKER,)).fetchone()
        raise ValueError(f"bad parameters: {MARKER}")

    def fail_again() -> None:
        try:
            fail()
        except ValueError as error:
            raise RuntimeError(f"while writing {MARKER}") from error

    try:
        fail_again()
    except RuntimeError:
        record = logging.getLogger("test").makeRecord(
            "test", logging.ERROR, __file__, 0, "failed", (), __import__("sys").exc_info()
        )
    text = Withheld().format(record)
    assert MARKER not in text
    assert "ValueError: (message withheld" in text
    assert "RuntimeError: (message withheld" in text
    assert "direct cause" in text
    assert "test_a_traceback_in_the_log_names_no_exception_message" in text  # the frames stay
    try:
        Path(f"/nonexistent/{MARKER}").read_text()
    except OSError:
        record = logging.getLogger("test").makeRecord(
            "test", logging.ERROR, __file__, 0, "failed", (), __import__("sys").exc_info()
        )
    text = Withheld().format(record)
    assert "FileNotFoundError: [Errno 2] No such file or directory" in text
    assert MARKER not in text


def test_allowed_hosts_default_to_the_loopback_names_and_the_bound_host() -> None:
    assert Settings().trusted_hosts() == ["localhost", "127.0.0.1", "[::1]"]
    assert Settings(host="0.0.0.0").trusted_hosts() == ["localhost", "127.0.0.1", "[::1]"]
    assert Settings(host="::1").trusted_hosts() == ["localhost", "127.0.0.1", "[::1]"]
    assert Settings(host="10.0.0.5").trusted_hosts()[-1] == "10.0.0.5"
    assert Settings(host="GW.Ward.example").trusted_hosts()[-1] == "gw.ward.example"


def test_allowed_hosts_from_the_environment_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUMPCTL_ALLOWED_HOSTS", "gw.ward.example, 10.0.0.5,*.ward.local,::1")
    assert Settings().trusted_hosts() == ["gw.ward.example", "10.0.0.5", "*.ward.local", "[::1]"]
    monkeypatch.setenv("PUMPCTL_ALLOWED_HOSTS", '["gw", "fe80::1"]')
    assert Settings().trusted_hosts() == ["gw", "[fe80::1]"]
    for bad in ("gw:8000", "*", "http://gw", "gw/x", "[]", "a..b"):
        monkeypatch.setenv("PUMPCTL_ALLOWED_HOSTS", bad)
        with pytest.raises(ValidationError) as refused:
            Settings()
        assert "allowed_hosts" in str(refused.value), bad


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as c:
        yield c


def test_the_kernel_serves_no_documentation_page_that_loads_from_elsewhere(
    served: TestClient,
) -> None:
    """FastAPI's own /docs and /redoc load their scripts from a CDN: the kernel serves
    neither (the web side serves /docs from the package; tests/faults/test_web_input.py)."""
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert served.get(path).status_code == 404, path
    assert served.get("/openapi.json").status_code == 200
