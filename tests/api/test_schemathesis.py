"""Property tests of the generated OpenAPI (schemathesis): every operation, sent with every
role's token, answers no 5xx and nothing outside the schema (status code and body), and a 409
names a rule of docs/clinical-rules.md and no storage name. Non-finite numbers (NaN, Infinity,
-Infinity, 1e400) in every numeric field of every body are 422 naming the field. The live
event stream GET /api/v1/events is left out: it never ends (tests/api/test_live_process.py
reads it).

The app is built here only to generate its OpenAPI (nothing is built before its lifespan);
each operation's cases are sent through a fresh service (TestClient, its own lifespan) that
already holds a patient with a running infusion (id 1), so that ids 1 and 2 reach the rules
(200, 409) and not only 404."""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import schemathesis
from conftest import AUTH, ApiSteps, settings
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app

with tempfile.TemporaryDirectory(prefix="pumpctl-openapi-") as _tmp:
    OPENAPI = create_app(settings(Path(_tmp))).openapi()

#: The rule ids docs/clinical-rules.md defines (`- **L1** ...`).
RULES = frozenset(
    re.findall(
        r"^- \*\*([LIAD]\d+)\*\*",
        (Path(__file__).parents[2] / "docs" / "clinical-rules.md").read_text(),
        re.MULTILINE,
    )
)
#: Words of the store that a refusal's message must not carry (constraint and key names, the
#: database's own errors).
STORAGE = re.compile(
    r"\b(?:uq|pk|ck|fk|ix)_|constraint|integrity|sqlite|psycopg|duplicate key", re.IGNORECASE
)


def a_conflict_names_its_rule(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 409's `detail.rule` is a rule id of docs/clinical-rules.md and its message names nothing
    of the store."""
    del ctx
    if response.status_code != 409:
        return None
    detail = json.loads(response.content)["detail"]
    where = f"{case.method} {case.formatted_path}: {detail}"
    rule = detail.get("rule") if isinstance(detail, dict) else None
    assert isinstance(rule, str), f"a 409 names no rule: {where}"
    assert re.fullmatch(r"[LIAD]\d+", rule), f"a 409's rule is not a rule id: {where}"
    assert rule in RULES, f"a 409 names a rule docs/clinical-rules.md does not define: {where}"
    assert not STORAGE.search(str(detail.get("message"))), f"a 409 names the store: {where}"
    return None


schema = schemathesis.openapi.from_dict(OPENAPI).exclude(path="/api/v1/events", method="GET")
service = schema.exclude(path_regex="^/api/v1/sim/")
simulation = schema.include(path_regex="^/api/v1/sim/")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    a_conflict_names_its_rule,
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TestClient]:
    """A service with a patient and a running first infusion (id 1) on pump-1."""
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as c:
        ward = ApiSteps(c)
        ward.started(ward.patient())
        yield c


def _send(client: TestClient, case: Any, role: str) -> Any:
    kwargs = case.as_transport_kwargs(base_url="http://gateway", headers=AUTH[role])
    kwargs.pop("timeout", None)
    kwargs.pop("verify", None)
    kwargs.pop("allow_redirects", None)
    if cookies := kwargs.pop("cookies", None):  # none in this API's schema; never per request
        client.cookies.update(cookies)
    if "data" in kwargs:  # requests' name for a raw body; httpx calls it content
        kwargs["content"] = kwargs.pop("data")
    return client.request(**kwargs)


@pytest.mark.timeout(180)
@service.parametrize()
@hypothesis_settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_5xx_and_nothing_outside_the_schema_for_any_role(case: Any, served: TestClient) -> None:
    for role in ("viewer", "nurse", "clinician", "admin"):
        response = _send(served, case, role)
        case.validate_response(response, checks=CHECKS, headers=AUTH[role])


@pytest.mark.timeout(180)
@simulation.parametrize()
@hypothesis_settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_simulation_routes_answer_nothing_outside_the_schema_either(
    case: Any, served: TestClient
) -> None:
    for role in ("viewer", "nurse", "clinician", "admin"):
        response = _send(served, case, role)
        case.validate_response(response, checks=CHECKS, headers=AUTH[role])


def _narrowed(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """The operations that may answer 409, with every id narrowed to what `refusing` holds
    (patients and infusions 1 and 2, reaction 1, pump-1 and pump-2), so that the generated
    cases reach the rules rather than 404."""
    ids = {
        "patient_id": {"type": "integer", "enum": [1, 2]},
        "infusion_id": {"type": "integer", "enum": [1, 2]},
        "reaction_id": {"type": "integer", "enum": [1]},
        "pump_id": {"type": "string", "enum": ["pump-1", "pump-2"]},
    }
    narrowed = copy.deepcopy(dict(openapi))
    paths: dict[str, Any] = {}
    for path, operations in narrowed["paths"].items():
        kept = {m: op for m, op in operations.items() if "409" in op.get("responses", {})}
        for op in kept.values():
            for parameter in op.get("parameters", []):
                if parameter["name"] in ids:
                    parameter["schema"] = ids[parameter["name"]]
        if kept:
            paths[path] = kept
    narrowed["paths"] = paths
    for component in narrowed["components"]["schemas"].values():
        for name, prop in component.get("properties", {}).items():
            if name in ids:
                prop.clear()
                prop.update(ids[name])
    return narrowed


refusals = schemathesis.openapi.from_dict(_narrowed(OPENAPI))


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[TestClient]:
    """A patient with a running first infusion (id 1) on pump-1, a reaction (1) reported on it,
    and a second patient with no infusion: a new infusion for either is refused by a rule
    (a busy pump, a course with a live infusion), as are many other requests."""
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as c:
        ward = ApiSteps(c)
        ward.started(ward.patient())
        ward.patient("MRN-2")
        ward.post("/infusions/1/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201)
        yield c


@pytest.mark.timeout(120)
@refusals.parametrize()
@hypothesis_settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_409_names_a_rule_and_nothing_of_the_store(case: Any, refusing: TestClient) -> None:
    """Clarification All: a request forbidden by a rule is 409 naming the rule (`detail.rule`,
    an id of docs/clinical-rules.md), never a storage name, on every route that may refuse."""
    role = "admin" if case.path.startswith("/api/v1/sim/") else "clinician"
    response = _send(refusing, case, role)
    case.validate_response(response, checks=CHECKS, headers=AUTH[role])


@pytest.mark.parametrize(
    "detail",
    [
        {"rule": None, "message": "pump pump-1 is busy with infusion 1"},
        {"rule": "L99", "message": "no such rule"},
        {"rule": "store", "message": "refused"},
        {"rule": "L8", "message": "UNIQUE constraint failed: infusions.course_id"},
        {"rule": "A5", "message": "uq_live_infusion_per_pump"},
        "refused",
    ],
)
def test_the_409_check_refuses_a_409_without_a_rule_or_with_the_stores_words(
    detail: Any,
) -> None:
    case = SimpleNamespace(method="POST", formatted_path="/api/v1/infusions")
    refused = SimpleNamespace(status_code=409, content=json.dumps({"detail": detail}).encode())
    with pytest.raises(AssertionError):
        a_conflict_names_its_rule(None, refused, case)
    named = {"detail": {"rule": "A5", "message": "pump pump-1 is busy with infusion 1 (A5)"}}
    answer = SimpleNamespace(status_code=409, content=json.dumps(named).encode())
    assert a_conflict_names_its_rule(None, answer, case) is None


#: Numbers JSON has no room for, as their text (Python's json reads 1e400 as infinity).
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]
_MARK = "@non-finite@"
Where = tuple[str | int, ...]


def _resolved(node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = OPENAPI["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _numbers(node: Mapping[str, Any], where: Where = ()) -> Iterator[Where]:
    """Where a body of schema `node` may hold a number (an array's by its first item)."""
    node = _resolved(node)
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            yield from _numbers(branch, where)
    if node.get("type") in {"integer", "number"}:
        yield where
    for name, prop in node.get("properties", {}).items():
        yield from _numbers(prop, (*where, name))
    if "items" in node:
        yield from _numbers(node["items"], (*where, 0))


def _put(body: Any, where: Where, value: Any) -> Any:
    """`body` with `value` at `where`, making the objects and the array's first item on the
    way (`body` itself is not changed)."""
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


#: The body's root (a body that is just NaN) and every number in it, for each operation with a
#: body (the simulator's fault `value` too: the body is checked before the pump is looked up).
NUMBERS = {
    (method.upper(), path): list(
        dict.fromkeys([(), *_numbers(op["requestBody"]["content"]["application/json"]["schema"])])
    )
    for path, operations in OPENAPI["paths"].items()
    for method, op in operations.items()
    if "requestBody" in op
}


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"{name} in an answer")


@pytest.fixture(scope="module")
def validating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One service for every operation's bodies: each is refused before it reaches the ward."""
    tmp = tmp_path_factory.mktemp("validating")
    with TestClient(create_app(settings(tmp)), base_url="http://gateway") as c:
        yield c


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("method", "path"), list(NUMBERS), ids=[" ".join(k) for k in NUMBERS])
@hypothesis_settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_all_a_non_finite_number_anywhere_in_a_body_is_422_naming_it(
    validating: TestClient, method: str, path: str, data: st.DataObject
) -> None:
    """Clarification All: invalid input is 422 naming the field. Any valid case of the
    operation, with NaN, Infinity, -Infinity or 1e400 in place of any one of its numbers (or
    of the whole body): 422, an error whose loc is that number's, the answer strict JSON."""
    case = data.draw(schema[path][method].as_strategy())
    role = "admin" if path.startswith("/api/v1/sim/") else "clinician"
    headers = {**AUTH[role], "content-type": "application/json"}
    for where in NUMBERS[(method, path)]:
        for literal in NON_FINITE:
            text = json.dumps(_put(case.body, where, _MARK)).replace(json.dumps(_MARK), literal)
            r = validating.request(method, case.formatted_path, content=text, headers=headers)
            assert r.status_code == 422, (case.formatted_path, text, r.status_code, r.text)
            answer = json.loads(r.text, parse_constant=_refuse_constant)
            locs = [d["loc"] for d in answer["detail"]]
            assert ["body", *where] in locs, (case.formatted_path, text, answer)
