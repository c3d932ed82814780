"""Bad input through HTTP (interfaces.md, section 3): 422 naming the field, 404 for unknown ids,
and an invalid or refused request changes nothing it asked for (the infusion as GET shows it, and
the audit trail's rows other than refusals, are the same before and after)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import AUTH, HOUR, Ward

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


def _snapshot(ward: Ward, infusion: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    state = {k: v for k, v in ward.get(f"/infusions/{infusion}").items() if k not in MOVING}
    trail = [e for e in ward.get(f"/infusions/{infusion}/events") if e["type"] not in REFUSALS]
    return state, trail


@pytest.fixture
def running(ward: Ward) -> int:
    return ward.started(ward.patient())


def _unchanged(ward: Ward, infusion: int, before: Any) -> None:
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
    ward: Ward, running: int, body: dict[str, Any], field: str
) -> None:
    before = _snapshot(ward, running)
    answer = ward.post(f"/infusions/{running}/reactions", "nurse", body, 422)
    assert field in _fields(answer), answer
    assert all(loc[0] == "body" for loc in _locs(answer)), answer
    _unchanged(ward, running, before)


def test_onset_outside_the_running_period_is_422_i10_from_the_core(
    ward: Ward, running: int
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
    ward: Ward, running: int, reason: str | None
) -> None:
    before = _snapshot(ward, running)
    answer = ward.post(f"/infusions/{running}/stop", "nurse", {"reason": reason}, 422)
    assert "reason" in _fields(answer)
    answer = ward.post(f"/infusions/{running}/stop", "nurse", {}, 422)
    assert "reason" in _fields(answer)
    _unchanged(ward, running, before)


@pytest.mark.parametrize("weight", [-70, 0, "70kg", 1e9])
def test_a_bad_weight_is_422_and_no_patient_is_made(ward: Ward, weight: Any) -> None:
    answer = ward.post("/patients", "clinician", {"mrn": "MRN-9", "weight_kg": weight}, 422)
    assert "weight_kg" in _fields(answer)
    ward.patient("MRN-9")  # the MRN is still free: the refused request made nothing


def test_a_negative_weight_on_a_new_infusion_is_422_and_makes_no_infusion(ward: Ward) -> None:
    patient = ward.patient()
    body = {"patient_id": patient, "pump_id": "pump-1", "weight_kg": -1}
    assert "weight_kg" in _fields(ward.post("/infusions", "clinician", body, 422))
    assert ward.get("/infusions") == []


@pytest.mark.parametrize("seconds", [86_401, 1e9, -1, "forever"])
def test_advance_beyond_a_day_or_backwards_is_422_and_time_stands(ward: Ward, seconds: Any) -> None:
    now = ward.get("/clock")["now"]
    answer = ward.post("/sim/advance", "admin", {"seconds": seconds}, 422)
    assert "seconds" in _fields(answer)
    assert ward.get("/clock")["now"] == now


def test_advance_of_exactly_a_day_is_allowed(ward: Ward) -> None:
    before = datetime.fromisoformat(ward.get("/clock")["now"])
    ward.post("/sim/advance", "admin", {"seconds": 86_400})
    after = datetime.fromisoformat(ward.get("/clock")["now"])
    assert after - before == timedelta(days=1)


def test_naive_datetimes_are_422(ward: Ward) -> None:
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
    ward: Ward, running: int, *, path: str, role: str, body: dict[str, Any], unknown: str
) -> None:
    before = _snapshot(ward, running)
    clock = ward.get("/clock")["now"]
    answer = ward.post(path.format(id=running), role, body, 422)
    assert unknown in _fields(answer), answer
    assert _snapshot(ward, running) == before
    assert ward.get("/clock")["now"] == clock


def test_a_refused_request_changes_nothing(ward: Ward, running: int) -> None:
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
def test_unknown_ids_are_404(ward: Ward, running: int, method: str, path: str, body: Any) -> None:
    before = _snapshot(ward, running)
    role = {"GET": "viewer", "DELETE": "admin"}.get(method, "clinician")
    if path.startswith("/sim"):
        role = "admin"
    url = "/api/v1" + path.format(u=UNKNOWN, i=running)
    r = ward.c.request(method, url, json=body, headers=AUTH[role])
    assert r.status_code == 404, (url, r.status_code, r.text)
    assert _snapshot(ward, running) == before


def test_an_infusion_on_an_unknown_pump_or_patient_is_404_and_makes_nothing(
    ward: Ward,
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
    ward: Ward, running: int, *, method: str, path: str, body: Any, name: str, too_big: int
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


def test_a_patient_id_past_what_the_store_holds_is_422_naming_it(ward: Ward) -> None:
    body = {"patient_id": 2**63, "pump_id": "pump-1"}
    assert _fields(ward.post("/infusions", "clinician", body, 422)) == ["patient_id"]
    assert ward.get("/infusions") == []
