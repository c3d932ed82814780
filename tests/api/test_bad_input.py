"""Bad input through HTTP (interfaces.md, section 3): 422 naming the field, 404 for unknown ids,
and an invalid or refused request changes nothing it asked for (the infusion as GET shows it, and
the audit trail's rows other than refusals, are the same before and after)."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import AUTH, HOUR, ApiSteps
from pydantic import BaseModel, ValidationError

from api import schemas
from api.sim.routes import AdvanceIn, FaultIn

#: Fields of GET /infusions/{id} that move with the clock or the pump's own progress.
MOVING = {
    "running_min",
    "volume_infused_ml",
    "bag_infused_ml",
    "time_left_min",
    "next_escalation_at",
    "bag_expires_at",
}
#: Audit rows a refusal itself writes (the core records what it refused and why).
REFUSALS = {"refused", "invalid"}


def _fields(body: Any) -> list[str]:
    """The fields a 422 body points at: the name after `body` in each `loc` (["body", "signs",
    0] names `signs`)."""
    assert isinstance(body["detail"], list), body
    return [str(d["loc"][1]) for d in body["detail"] if len(d["loc"]) > 1]


def _locs(body: Any) -> list[list[Any]]:
    return [list(d["loc"]) for d in body["detail"]]


def _snapshot(ward: ApiSteps, infusion: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    state = {k: v for k, v in ward.get(f"/infusions/{infusion}").items() if k not in MOVING}
    trail = [e for e in ward.get(f"/infusions/{infusion}/events") if e["type"] not in REFUSALS]
    return state, trail


@pytest.fixture
def running(ward: ApiSteps) -> int:
    return ward.started(ward.patient())


def _unchanged(ward: ApiSteps, infusion: int, before: Any) -> None:
    assert _snapshot(ward, infusion) == before
    assert ward.pump()["state"] == "running"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grade": 0, "signs": ["other"]}, "grade"),
        ({"grade": 5, "signs": ["other"]}, "grade"),
        ({"grade": True, "signs": ["other"]}, "grade"),
        ({"grade": "2", "signs": ["other"]}, "grade"),
        ({"grade": 2.0, "signs": ["other"]}, "grade"),
        ({"grade": None, "signs": ["other"]}, "grade"),
        ({"signs": ["other"]}, "grade"),
        ({"grade": 2, "signs": ["hives"]}, "signs"),
        ({"grade": 2, "signs": []}, "signs"),
        ({"grade": 2}, "signs"),
        ({"grade": 2, "signs": "other"}, "signs"),
        ({"grade": 2, "signs": ["other"], "onset_at": "2030-01-01T10:00:00"}, "onset_at"),
        ({"grade": 2, "signs": ["other"], "colour": "red"}, "colour"),
    ],
)
def test_a_bad_reaction_is_422_naming_the_field_and_does_not_stop_the_pump(
    ward: ApiSteps, running: int, body: dict[str, Any], field: str
) -> None:
    before = _snapshot(ward, running)
    answer = ward.post(f"/infusions/{running}/reactions", "nurse", body, 422)
    assert field in _fields(answer), answer
    assert all(loc[0] == "body" for loc in _locs(answer)), answer
    _unchanged(ward, running, before)


def test_onset_outside_the_running_period_is_422_i10_from_the_core(
    ward: ApiSteps, running: int
) -> None:
    now = datetime.fromisoformat(ward.get("/clock")["now"])
    before = _snapshot(ward, running)
    for onset in (now - timedelta(hours=2), now + timedelta(minutes=5)):
        answer = ward.post(
            f"/infusions/{running}/reactions",
            "nurse",
            {"grade": 2, "signs": ["other"], "onset_at": onset.isoformat()},
            422,
        )
        assert _locs(answer) == [["body", "onset_at"]], answer
    _unchanged(ward, running, before)
    # inside the running period it is accepted (the refusal above was about the instant)
    inside = (now - timedelta(seconds=1)).isoformat()
    ward.post(
        f"/infusions/{running}/reactions",
        "nurse",
        {"grade": 1, "signs": ["other"], "onset_at": inside},
        201,
    )


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_blank_stop_reason_is_422_and_the_infusion_runs_on(
    ward: ApiSteps, running: int, reason: str | None
) -> None:
    before = _snapshot(ward, running)
    answer = ward.post(f"/infusions/{running}/stop", "nurse", {"reason": reason}, 422)
    assert "reason" in _fields(answer)
    answer = ward.post(f"/infusions/{running}/stop", "nurse", {}, 422)
    assert "reason" in _fields(answer)
    _unchanged(ward, running, before)


@pytest.mark.parametrize("weight", [-70, 0, "70kg", 1e9])
def test_a_bad_weight_is_422_and_no_patient_is_made(ward: ApiSteps, weight: Any) -> None:
    answer = ward.post("/patients", "clinician", {"mrn": "MRN-9", "weight_kg": weight}, 422)
    assert "weight_kg" in _fields(answer)
    ward.patient("MRN-9")  # the MRN is still free: the refused request made nothing


def test_a_negative_weight_on_a_new_infusion_is_422_and_makes_no_infusion(ward: ApiSteps) -> None:
    patient = ward.patient()
    body = {"patient_id": patient, "pump_id": "pump-1", "weight_kg": -1}
    assert "weight_kg" in _fields(ward.post("/infusions", "clinician", body, 422))
    assert ward.get("/infusions") == []


@pytest.mark.parametrize("seconds", [86_401, 1e9, -1, "forever"])
def test_advance_beyond_a_day_or_backwards_is_422_and_time_stands(
    ward: ApiSteps, seconds: Any
) -> None:
    now = ward.get("/clock")["now"]
    answer = ward.post("/sim/advance", "admin", {"seconds": seconds}, 422)
    assert "seconds" in _fields(answer)
    assert ward.get("/clock")["now"] == now


def test_advance_of_exactly_a_day_is_allowed(ward: ApiSteps) -> None:
    before = datetime.fromisoformat(ward.get("/clock")["now"])
    ward.post("/sim/advance", "admin", {"seconds": 86_400})
    after = datetime.fromisoformat(ward.get("/clock")["now"])
    assert after - before == timedelta(days=1)


def test_naive_datetimes_are_422(ward: ApiSteps) -> None:
    patient = ward.patient()
    naive = "2030-01-01T09:00:00"
    body = {"patient_id": patient, "pump_id": "pump-1", "premedication_at": naive}
    assert "premedication_at" in _fields(ward.post("/infusions", "clinician", body, 422))
    assert ward.get("/infusions") == []
    inf = ward.post("/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-1"}, 201)
    before = _snapshot(ward, inf["id"])
    for path, field in [("premedication", "given_at"), ("bag", "prepared_at")]:
        answer = ward.post(f"/infusions/{inf['id']}/{path}", "nurse", {field: naive}, 422)
        assert field in _fields(answer), answer
    assert _snapshot(ward, inf["id"]) == before


@pytest.mark.parametrize(
    ("path", "role", "body", "unknown"),
    [
        ("/patients", "clinician", {"mrn": "MRN-7", "weight_kg": 70, "ward": "3B"}, "ward"),
        ("/infusions/{id}/stop", "nurse", {"reason": "done", "force": True}, "force"),
        ("/infusions/{id}/resume", "nurse", {"rate_ml_h": 200}, "rate_ml_h"),
        ("/infusions/{id}/start", "clinician", {"override_reason": "x", "now": True}, "now"),
        ("/infusions/{id}/bag", "nurse", {"prepared_at": "2030-01-01T09:00:00Z", "ml": 5}, "ml"),
        ("/sim/advance", "admin", {"seconds": 1, "fast": True}, "fast"),
    ],
)
def test_unknown_fields_are_422_naming_them(
    ward: ApiSteps, running: int, *, path: str, role: str, body: dict[str, Any], unknown: str
) -> None:
    before = _snapshot(ward, running)
    clock = ward.get("/clock")["now"]
    answer = ward.post(path.format(id=running), role, body, 422)
    assert unknown in _fields(answer), answer
    assert _snapshot(ward, running) == before
    assert ward.get("/clock")["now"] == clock


def test_a_refused_request_changes_nothing(ward: ApiSteps, running: int) -> None:
    before = _snapshot(ward, running)
    # a second infusion on a busy pump; a resume of a running infusion; a reinstate of an active
    # course; a cancel of a started infusion
    patient = ward.get(f"/infusions/{running}")["patient_id"]
    other = ward.patient("MRN-2")
    ward.post("/infusions", "clinician", {"patient_id": other, "pump_id": "pump-1"}, 409)
    ward.post("/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-2"}, 409)
    ward.post(f"/infusions/{running}/resume", "nurse", {}, 409)
    ward.post(f"/infusions/{running}/cancel", "clinician", {"reason": "x"}, 409)
    ward.advance(1)
    _unchanged(ward, running, before)
    assert [i["id"] for i in ward.get("/infusions")] == [running]


UNKNOWN = 987_654


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/patients/{u}", None),
        ("POST", "/patients/{u}/reinstate", {"reason": "ok"}),
        ("POST", "/patients/{u}/history", {"infusion_number": 1, "highest_rate_ml_h": 100}),
        ("GET", "/infusions/{u}", None),
        ("GET", "/infusions/{u}/events", None),
        ("GET", "/infusions/{u}/resume", None),
        ("POST", "/infusions/{u}/stop", {"reason": "done"}),
        ("POST", "/infusions/{u}/reactions", {"grade": 1, "signs": ["other"]}),
        ("POST", "/infusions/{u}/hold", {}),
        ("POST", "/infusions/{i}/reactions/{u}/resolve", {}),
        ("POST", "/infusions/{i}/reactions/{u}/reassess", {"grade": 1, "signs": ["other"]}),
        ("POST", "/sim/pumps/pump-99/faults", {"alarm": "occlusion"}),
        ("DELETE", "/sim/pumps/pump-99/faults/occlusion", None),
    ],
)
def test_unknown_ids_are_404(
    ward: ApiSteps, running: int, method: str, path: str, body: Any
) -> None:
    before = _snapshot(ward, running)
    role = {"GET": "viewer", "DELETE": "admin"}.get(method, "clinician")
    if path.startswith("/sim"):
        role = "admin"
    url = "/api/v1" + path.format(u=UNKNOWN, i=running)
    r = ward.c.request(method, url, json=body, headers=AUTH[role])
    assert r.status_code == 404, (url, r.status_code, r.text)
    assert _snapshot(ward, running) == before


def test_an_infusion_on_an_unknown_pump_or_patient_is_404_and_makes_nothing(
    ward: ApiSteps,
) -> None:
    patient = ward.patient()
    for body in (
        {"patient_id": patient, "pump_id": "pump-99"},
        {"patient_id": UNKNOWN, "pump_id": "pump-1"},
    ):
        ward.post("/infusions", "clinician", body, 404)
    assert ward.get("/infusions") == []
    ward.advance(HOUR)
    assert ward.pump()["state"] != "running"


@pytest.mark.parametrize("too_big", [2**31, 2**64, 10**30])
@pytest.mark.parametrize(
    ("method", "path", "body", "name"),
    [
        ("GET", "/patients/{u}", None, "patient_id"),
        ("POST", "/patients/{u}/reinstate", {"reason": "ok"}, "patient_id"),
        ("GET", "/infusions/{u}", None, "infusion_id"),
        ("POST", "/infusions/{u}/start", {}, "infusion_id"),
        ("POST", "/infusions/{u}/reactions", {"grade": 1, "signs": ["other"]}, "infusion_id"),
        ("POST", "/infusions/{i}/reactions/{u}/resolve", {}, "reaction_id"),
    ],
)
def test_an_id_past_what_the_store_holds_is_422_naming_it_and_changes_nothing(
    ward: ApiSteps, running: int, *, method: str, path: str, body: Any, name: str, too_big: int
) -> None:
    """An id no row can have (the store's ids are 32-bit on PostgreSQL): 422 naming the path
    parameter, never a 500 from the database driver (schemathesis found the SQLite
    OverflowError)."""
    before = _snapshot(ward, running)
    role = "viewer" if method == "GET" else "clinician"
    url = "/api/v1" + path.format(u=too_big, i=running)
    r = ward.c.request(method, url, json=body, headers=AUTH[role])
    assert r.status_code == 422, (url, r.status_code, r.text)
    assert _locs(r.json()) == [["path", name]]
    assert _snapshot(ward, running) == before


def test_a_patient_id_past_what_the_store_holds_is_422_naming_it(ward: ApiSteps) -> None:
    body = {"patient_id": 2**63, "pump_id": "pump-1"}
    assert _fields(ward.post("/infusions", "clinician", body, 422)) == ["patient_id"]
    assert ward.get("/infusions") == []


#: Numbers JSON has no room for, as their text: Python's json reads NaN and +-Infinity, and reads
#: 1e400 as infinity.
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]
_MARK = "@non-finite@"

Where = tuple[str | int, ...]


def _text(body: Any, path: Where, literal: str) -> str:
    """`body` as JSON text with the value at `path` (a missing last key is added) written as
    `literal`, as is."""
    if not path:
        return literal
    body = copy.deepcopy(body)
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = _MARK
    return json.dumps(body).replace(json.dumps(_MARK), literal)


def _strict_json(text: str) -> Any:
    """The answer as JSON that every parser takes (no NaN, no Infinity)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in the answer: {text}")

    return json.loads(text, parse_constant=refuse)


def _ago(ward: ApiSteps, minutes: float) -> str:
    now = datetime.fromisoformat(ward.get("/clock")["now"])
    return (now - timedelta(minutes=minutes)).isoformat()


#: Seconds within which a scene's records are written (a loaded CI machine).
SCENE_BOUND_S = 10.0


def _scene(ward: ApiSteps, on: str) -> dict[str, int]:
    """A patient, and as `on` says: no infusion, one created on pump-1, one running on pump-1,
    or one with a grade 2 reaction reported; the pumps linked."""
    ward.advance(1)
    ids = {"patient": ward.patient()}
    if on == "created":
        body = {"patient_id": ids["patient"], "pump_id": "pump-1"}
        ids["infusion"] = ward.post("/infusions", "clinician", body, 201)["id"]
    elif on in {"running", "reacted"}:
        ids["infusion"] = ward.started(ids["patient"])
    if on == "reacted":
        body = {"grade": 2, "signs": ["other"]}
        answer = ward.post(f"/infusions/{ids['infusion']}/reactions", "nurse", body, 201)
        ids["reaction"] = answer["reaction_id"]
        # the stop's confirmation is recorded after the answer (I1: the answer waits for the
        # pump, not the disk): the scene is whole once the trail has it, or a loaded machine
        # writes it between `before` and the comparison
        deadline = time.monotonic() + SCENE_BOUND_S
        while not any(
            e["type"] == "confirmed_stopped"
            for e in ward.get(f"/infusions/{ids['infusion']}/events")
        ):
            assert time.monotonic() < deadline, "the stop's confirmation was never recorded"
            time.sleep(0.02)  # polling a condition with a deadline
    return ids


def _world(ward: ApiSteps, patient: int) -> dict[str, Any]:
    """What a request could change: the clock, the pumps, every infusion (as _snapshot shows
    it), the patient."""
    return {
        "clock": ward.get("/clock")["now"],
        "pumps": {p["id"]: p["state"] for p in ward.get("/pumps")},
        "infusions": {i["id"]: _snapshot(ward, i["id"]) for i in ward.get("/infusions")},
        "patient": ward.get(f"/patients/{patient}"),
    }


Body = Callable[[ApiSteps, dict[str, int]], dict[str, Any]]

#: Every route with a body: its path, role, a valid body, the fields (paths into the body) each
#: non-finite number is put in, the scene it is sent in, and what the valid body then answers.
BODY_ROUTES: list[tuple[str, str, Body, list[Where], str, int]] = [
    (
        "/patients",
        "clinician",
        lambda w, ids: {"mrn": "MRN-9", "weight_kg": 70},
        [("mrn",), ("weight_kg",), ("protocol",)],
        "patient",
        201,
    ),
    (
        "/patients/{patient}/history",
        "clinician",
        lambda w, ids: {
            "infusion_number": 1,
            "highest_rate_ml_h": 100,
            "completed": True,
            "reactions": [
                {"grade": 1, "max_grade": 1, "signs": ["other"], "rate_ml_h": 50, "running_min": 30}
            ],
        },
        [
            ("infusion_number",),
            ("day",),
            ("highest_rate_ml_h",),
            ("completed",),
            ("reactions",),
            ("reactions", 0),
            ("reactions", 0, "grade"),
            ("reactions", 0, "max_grade"),
            ("reactions", 0, "signs"),
            ("reactions", 0, "signs", 0),
            ("reactions", 0, "rate_ml_h"),
            ("reactions", 0, "running_min"),
        ],
        "patient",
        201,
    ),
    (
        "/patients/{patient}/reinstate",
        "clinician",
        lambda w, ids: {"reason": "reviewed"},
        [("reason",)],
        "patient",
        409,  # I8: the course is not withdrawn
    ),
    (
        "/infusions",
        "clinician",
        lambda w, ids: {"patient_id": ids["patient"], "pump_id": "pump-1"},
        [
            ("patient_id",),
            ("pump_id",),
            ("weight_kg",),
            ("premedication_at",),
            ("bag_prepared_at",),
        ],
        "patient",
        201,
    ),
    (
        "/infusions/{infusion}/premedication",
        "nurse",
        lambda w, ids: {"given_at": _ago(w, 60)},
        [("given_at",)],
        "created",
        200,
    ),
    (
        "/infusions/{infusion}/start",
        "clinician",
        lambda w, ids: {"override_reason": "given on the ward"},
        [("override_reason",), ("schedule_override_reason",)],
        "created",
        200,
    ),
    (
        "/infusions/{infusion}/cancel",
        "clinician",
        lambda w, ids: {"reason": "not needed"},
        [("reason",)],
        "created",
        200,
    ),
    (
        "/infusions/{infusion}/reactions",
        "nurse",
        lambda w, ids: {"grade": 2, "signs": ["other"], "onset_at": _ago(w, 0.01)},
        [("grade",), ("signs",), ("signs", 0), ("onset_at",)],
        "running",
        201,
    ),
    (
        "/infusions/{infusion}/reactions/{reaction}/reassess",
        "nurse",
        lambda w, ids: {"grade": 2, "signs": ["other"]},
        [("grade",), ("signs",), ("signs", 0)],
        "reacted",
        200,
    ),
    (
        "/infusions/{infusion}/resume",
        "nurse",
        lambda w, ids: {"reaction": False},
        [("reaction",)],
        "running",
        409,  # I9: a running infusion has nothing to resume
    ),
    (
        "/infusions/{infusion}/bag",
        "nurse",
        lambda w, ids: {"prepared_at": _ago(w, 1)},
        [("prepared_at",)],
        "running",
        409,  # L9: a bag is changed only while the pump is stopped
    ),
    (
        "/infusions/{infusion}/stop",
        "nurse",
        lambda w, ids: {"reason": "done"},
        [("reason",)],
        "running",
        200,
    ),
    (
        "/sim/advance",
        "admin",
        lambda w, ids: {"seconds": 60},
        [("seconds",)],
        "running",
        200,
    ),
    (
        "/sim/pumps/pump-1/faults",
        "admin",
        lambda w, ids: {"alarm": "occlusion"},
        [("alarm",), ("fault",)],
        "running",
        200,
    ),
]


@pytest.mark.parametrize(
    ("path", "role", "body", "fields", "on", "valid"),
    BODY_ROUTES,
    ids=[route[0] for route in BODY_ROUTES],
)
def test_all_a_non_finite_number_in_any_field_is_422_naming_it_and_changes_nothing(
    ward: ApiSteps, *, path: str, role: str, body: Body, fields: list[Where], on: str, valid: int
) -> None:
    """Clarification All: invalid input is 422 naming the field. NaN, Infinity, -Infinity and
    1e400 (infinity to Python's json) in any field, top level or nested, or as the whole body:
    422 whose one error's loc is the field's, the answer strict JSON with none of the input,
    and nothing changed; the same body without them is not refused as input."""
    ids = _scene(ward, on)
    url = "/api/v1" + path.format(**ids)
    headers = {**AUTH[role], "content-type": "application/json"}
    before = _world(ward, ids["patient"])
    for field in [(), *fields]:
        for literal in NON_FINITE:
            text = _text(body(ward, ids), field, literal)
            r = ward.c.post(url, content=text, headers=headers)
            assert r.status_code == 422, (text, r.status_code, r.text)
            answer = _strict_json(r.text)
            assert _locs(answer) == [["body", *field]], (text, answer)
            assert all("input" not in d for d in answer["detail"]), answer
    assert _world(ward, ids["patient"]) == before
    ward.post(path.format(**ids), role, body(ward, ids), valid)


@pytest.mark.parametrize("fault", ["late_reply_s", "refuse_next"])
def test_all_a_non_finite_fault_value_is_422_naming_it(ward: ApiSteps, fault: str) -> None:
    """Clarification All, on the simulation's fault route (its `value` is a number)."""
    headers = {**AUTH["admin"], "content-type": "application/json"}
    for literal in NON_FINITE:
        text = f'{{"fault": "{fault}", "value": {literal}}}'
        r = ward.c.post("/api/v1/sim/pumps/pump-2/faults", content=text, headers=headers)
        assert r.status_code == 422, (text, r.status_code, r.text)
        assert _locs(_strict_json(r.text)) == [["body", "value"]]


def test_a_422_is_fastapis_shape_without_the_input_in_the_answer_or_the_log(
    ward: ApiSteps, caplog: pytest.LogCaptureFixture
) -> None:
    """Clarification All: 422 naming the field, as FastAPI words it (`loc`, `msg`, `type`, and
    `ctx` where it is plain JSON), but never the request's input: no MRN, no free text, no
    value, in the answer or in any log line."""
    caplog.set_level(logging.DEBUG)
    patient = ward.patient()
    infusion = ward.post(
        "/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-1"}, 201
    )
    mrn = "MRN-SECRET-4711"
    words = "Mrs Jane Roe felt faint"
    sent = [
        # a missing field: FastAPI's own answer holds the whole body as its input
        ("/patients", {"mrn": mrn}, [["body", "weight_kg"]]),
        ("/patients", {"mrn": mrn, "weight_kg": 70, "ward": words}, [["body", "ward"]]),
        ("/patients", {"mrn": mrn, "weight_kg": 987.654}, [["body", "weight_kg"]]),
        (f"/infusions/{infusion['id']}/cancel", {"reason": words, "by": mrn}, [["body", "by"]]),
    ]
    for path, body, locs in sent:
        answer = ward.post(path, "clinician", body, 422)
        assert _locs(answer) == locs, answer
        for error in answer["detail"]:
            assert set(error) <= {"type", "loc", "msg", "ctx"}, error
            assert {"type", "loc", "msg"} <= set(error), error
        for text in (mrn, words, "987.654"):
            assert text not in json.dumps(answer), answer
    # FastAPI's own words and limits stay
    weight = ward.post("/patients", "clinician", {"mrn": mrn, "weight_kg": 987.654}, 422)
    assert weight["detail"] == [
        {
            "type": "less_than_equal",
            "loc": ["body", "weight_kg"],
            "msg": "Input should be less than or equal to 500",
            "ctx": {"le": 500.0},
        }
    ]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "422" in logged  # the requests were logged (httpx), their answers' codes with them
    for text in (mrn, words, "987.654"):
        assert text not in logged


def _input_fields() -> list[Any]:
    """Every field of every request body model (api/schemas.py's and the simulation's)."""
    models = [
        m for m in vars(schemas).values() if isinstance(m, type) and issubclass(m, schemas.In)
    ]
    params = [(m, name) for m in [*models, AdvanceIn, FaultIn] for name in m.model_fields]
    return [pytest.param(m, name, id=f"{m.__name__}.{name}") for m, name in params]


@pytest.mark.parametrize(("model", "name"), _input_fields())
def test_all_no_field_of_a_request_body_takes_a_non_finite_number(
    model: type[BaseModel], name: str
) -> None:
    """Clarification All: a NaN or an infinity never passes validation silently, in any field
    of any body model (also one added later without bounds)."""
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValidationError) as refused:
            model.model_validate({name: value})
        assert any(e["loc"][:1] == (name,) for e in refused.value.errors()), refused.value
