"""Property tests of the generated OpenAPI (schemathesis): every operation, sent with every
role's token, answers no 5xx and nothing outside the schema (status code and body). The live
event stream GET /api/v1/events is left out: it never ends (tests/api/test_live_process.py
reads it).

The app is built here only to generate its OpenAPI (nothing is built before its lifespan);
each operation's cases are sent through a fresh service (TestClient, its own lifespan) that
already holds a patient with a running infusion (id 1), so that ids 1 and 2 reach the rules
(200, 409) and not only 404."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import AUTH, Ward, settings
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app

with tempfile.TemporaryDirectory(prefix="pumpctl-openapi-") as _tmp:
    OPENAPI = create_app(settings(Path(_tmp))).openapi()

schema = schemathesis.openapi.from_dict(OPENAPI).exclude(path="/api/v1/events", method="GET")
service = schema.exclude(path_regex="^/api/v1/sim/")
simulation = schema.include(path_regex="^/api/v1/sim/")
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TestClient]:
    """A service with a patient and a running first infusion (id 1) on pump-1."""
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as c:
        ward = Ward(c)
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
