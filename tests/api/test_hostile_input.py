"""A property test (hypothesis): hostile values sent to every route of the kernel's API answer no
5xx, a 422 never repeats them, and no log line carries them (docs/security.md, "Input"; issue
20, "How to show it").

tests/api/test_schemathesis.py sends values its schema allows (and non-finite numbers into the
numeric fields); this test sends what a schema-driven generator never makes: any value of
`HOSTILE` (NaN, Infinity, 1e400, integers past 64 bits and past Python's 4,300-digit limit, a
lone surrogate, times of the year 0001 and 9999 with offsets, a time without its offset,
non-ASCII digits, a fake MRN and a patient's name as marker strings, wrong JSON types) in place
of any one field of a valid body (nested fields too), as the whole body, as an unknown field,
as any path or query parameter, with a wrong content type, and `Last-Event-ID` garbage on the
live events. Every log record the service made meanwhile is formatted as the service's log
formats it (`pumpctl.cli.logsetup.Withheld`: tracebacks too) and must not carry a marker.

The same through the web side on the real processes, with uvicorn's access log:
tests/faults/test_web_input.py."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
import schemathesis
from conftest import AUTH, ApiSteps, settings
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from api.app import create_app
from pumpctl.cli.logsetup import Withheld

with tempfile.TemporaryDirectory(prefix="pumpctl-openapi-") as _tmp:
    OPENAPI = create_app(settings(Path(_tmp))).openapi()

MRN = "MRN-HOSTILE-4711"
NAME = "Jane Roe-Hostile"
MARKERS = (MRN, NAME)
#: JSON texts, each put as it is in place of a value.
HOSTILE = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1e-400",
    str(2**64),
    str(-(10**30)),
    "1" + "0" * 5000,  # past Python's int-from-text limit
    '"\\ud800"',
    f'"{MRN}\\udfff"',
    '"0001-01-01T00:30:00+01:00"',
    '"0001-01-01T00:00:00Z"',
    '"9999-12-31T23:30:00-01:00"',
    '"2030-01-01T10:00:00"',  # no offset
    '"²"',
    '"\\u0000"',
    f'"{MRN}"',
    f'"{NAME} felt faint"',
    '"' + "x" * 3000 + '"',
    "null",
    "true",
    "[]",
    f'{{"mrn": "{MRN}"}}',
    f'["{MRN}"]',
]
#: Text put in a path or a query parameter.
HOSTILE_TEXT = [
    MRN,
    NAME,
    "²",
    "NaN",
    "1e400",
    "-1",
    str(2**64),
    "1" + "0" * 5000,
    "0001-01-01T00:30:00+01:00",
    "%ud800",
    "\u00e9",
]
CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "application/xml", "ü"]
_MARK = "@hostile@"
Where = tuple[str | int, ...]


def _resolved(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = OPENAPI["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _fields(node: Mapping[str, Any], where: Where = ()) -> Iterator[Where]:
    """Every place a body of schema `node` holds a value (an array's by its first item)."""
    node = _resolved(node)
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            yield from _fields(branch, where)
    for name, prop in node.get("properties", {}).items():
        yield (*where, name)
        yield from _fields(prop, (*where, name))
    if "items" in node:
        yield (*where, 0)
        yield from _fields(node["items"], (*where, 0))


def _put(body: Any, where: Where, value: Any) -> Any:
    """`body` with `value` at `where` (objects and an array's first item made on the way)."""
    if not where:
        return value
    key, rest = where[0], where[1:]
    if isinstance(key, int):
        items = list(body) if isinstance(body, list) and body else [None]
        items[0] = _put(items[0], rest, value)
        return items
    fields = dict(body) if isinstance(body, dict) else {}
    fields[key] = _put(fields.get(key), rest, value)
    return fields


#: Ids the module's service holds (its fixture), put in place of generated ones.
KNOWN: dict[str, Any] = {"patient_id": 1, "infusion_id": 1, "reaction_id": 1, "pump_id": "pump-1"}
#: In a body: a new infusion goes to the free pump.
KNOWN_BODY: dict[str, Any] = {"patient_id": 1, "pump_id": "pump-2"}
OPERATIONS = [
    (method.upper(), path)
    for path, operations in OPENAPI["paths"].items()
    for method in operations
    if path != "/api/v1/events"  # an endless stream: its own test below
]
schema = schemathesis.openapi.from_dict(OPENAPI)


def _role(path: str) -> str:
    return "admin" if path.startswith("/api/v1/sim/") else "clinician"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One service for the whole module: a patient (1) with a running first infusion (1) on
    pump-1 and a reaction (1) reported on it, so that ids 1 reach the routes' rules."""
    tmp = tmp_path_factory.mktemp("hostile")
    with TestClient(create_app(settings(tmp)), base_url="http://gateway") as c:
        ward = ApiSteps(c)
        infusion = ward.started(ward.patient())
        ward.post(
            f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201
        )
        yield c


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    withheld = Withheld("%(levelname)s %(name)s: %(message)s")
    for record in caplog.records:
        line = withheld.format(record)
        for marker in MARKERS:
            assert marker not in line, line


def _answered(r: Any, what: str) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:500])
    if r.status_code == 422:
        answer = json.loads(r.text, parse_constant=lambda name: pytest.fail(f"{name}: {what}"))
        assert all("input" not in d for d in answer["detail"]), (what, answer)
        for marker in MARKERS:
            assert marker not in r.text, (what, r.text[:500])


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[" ".join(o) for o in OPERATIONS])
@hypothesis_settings(
    max_examples=2,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_values_anywhere_are_no_5xx_and_never_logged(
    served: TestClient, logged: pytest.LogCaptureFixture, method: str, path: str, data: Any
) -> None:
    del logged  # checked once the test's examples are done
    operation = OPENAPI["paths"][path][method.lower()]
    case = data.draw(schema[path][method].as_strategy())
    # ids the service holds, so that the hostile values reach the rules and the store
    ids = {k: v for k, v in KNOWN.items() if k in (case.path_parameters or {})}
    case.path_parameters = {**(case.path_parameters or {}), **ids}
    url = path.format(**{k: quote(str(v), safe="") for k, v in case.path_parameters.items()})
    headers = {**AUTH[_role(path)], "content-type": "application/json"}
    params = [p for p in operation.get("parameters", []) if p["in"] in {"path", "query"}]
    places: list[str] = ["query:mrn"] + [f"{p['in']}:{p['name']}" for p in params]
    body_schema = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema")
    )
    fields: list[Where] = []
    if body_schema is not None:
        fields = [(), ("mrn_unknown",), *dict.fromkeys(_fields(body_schema))]
        places += ["body", "content-type"]
    body: Any = None
    if body_schema is not None:  # an optional body schemathesis left out: an empty object
        body = case.body if isinstance(case.body, dict | list) else {}
        if isinstance(body, dict):
            body = {**body, **{k: v for k, v in KNOWN_BODY.items() if k in body}}
    sent: list[tuple[str, str, dict[str, Any], str | None, dict[str, Any]]] = []
    for where in fields:  # every hostile value in every field, the whole body, an unknown one
        for literal in HOSTILE:
            text = json.dumps(_put(body, where, _MARK)).replace(json.dumps(_MARK), literal)
            sent.append((f"body {where}", url, dict(case.query or {}), text, headers))
    if body_schema is not None:
        marked = json.dumps(_put(body, ("mrn",), MRN))
        for kind in CONTENT_TYPES:
            typed = {**headers, "content-type": kind.encode("latin-1")}
            sent.append((f"type {kind}", url, dict(case.query or {}), marked, typed))
    content = None if body is None else json.dumps(body)
    for place in places:  # every hostile text in every path and query parameter
        kind, _, name = place.partition(":")
        for text in HOSTILE_TEXT:
            query = dict(case.query or {})
            where_url = url
            if kind == "path":
                value = quote(str(case.path_parameters[name]), safe="")
                where_url = url.replace(f"/{value}", f"/{quote(text, safe='')}", 1)
            else:
                query[name] = text
            sent.append((place, where_url, query, content, headers))
    for place, where_url, query, text, said in sent:
        raw = None if text is None else text.encode("utf-8", "surrogatepass")
        r = served.request(method, where_url, params=query, content=raw, headers=said)
        _answered(r, f"{method} {where_url} {place} {query} {(text or '')[:200]}")


async def _stream_status(app: Any, last: bytes) -> int:
    """The status of `GET /api/v1/events` with `Last-Event-ID: LAST` sent as raw bytes (a
    client library sends only text), the client gone once the answer began."""
    began = anyio.Event()
    statuses: list[int] = []
    asked = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        if asked == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await began.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
            began.set()

    token = AUTH["viewer"]["Authorization"].encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/events",
        "raw_path": b"/api/v1/events",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"gateway"), (b"authorization", token), (b"last-event-id", last)],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway", 80),
        "state": {},
    }
    with anyio.fail_after(20):
        await app(scope, receive, send)
    return statuses[0]


@pytest.mark.parametrize(
    "last",
    [b"\xb2", "²".encode(), b"\xb9\xb2\xb3", b"\xff\xfe", MRN.encode(), b"1" * 200, b"-5"],
)
def test_a_hostile_last_event_id_opens_the_stream_afresh(
    served: TestClient, logged: pytest.LogCaptureFixture, last: bytes
) -> None:
    """`Last-Event-ID: ²` (latin-1 b"\\xb2", a digit to Python's `isdigit`, not to `int`) was a
    500; any garbage is taken as no id and the stream opens."""
    del logged
    assert served.portal is not None
    expected = 422 if len(last) > 64 else 200  # a header past 64 characters: 422 naming it
    assert served.portal.call(_stream_status, served.app, last) == expected
