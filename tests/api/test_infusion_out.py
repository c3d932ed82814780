"""The infusion's public state answers exactly as its documented model says (api/schemas.py
`InfusionOut`, issue 22: typed responses). The kernel builds the view as a plain dict and never
validates it on its loop, so this test holds every view the API gives, across the states and
the parts a view can hold (planned, running, a reaction open and closed, a pump alarm
acknowledged, a hold, a stop for good, a cancelled plan), to the model: no field missing, none
extra, every type as documented. The OpenAPI document names the model on every route that
answers a view.

Through HTTP against the service (its lifespan, simulated pumps in process, SQLite, a virtual
clock)."""

from __future__ import annotations

from typing import Any

from conftest import HOUR, ApiSteps
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.schemas import CreatedInfusionOut, InfusionOut


def _held(view: Any, model: type[InfusionOut] = InfusionOut) -> InfusionOut:
    """`view` as its model, or the test fails naming every field that does not hold."""
    try:
        return model.model_validate(view)
    except ValidationError as error:
        raise AssertionError(f"the view is not its model: {error}") from None


def _every_view(ward: ApiSteps, infusion: int) -> InfusionOut:
    listed = [v for v in ward.get("/infusions") if v["id"] == infusion]
    assert len(listed) == 1
    _held(listed[0])
    return _held(ward.get(f"/infusions/{infusion}"))


def test_every_view_of_an_infusion_is_its_model(ward: ApiSteps) -> None:
    patient = ward.patient()
    created = ward.post(
        "/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-1"}, 201
    )
    assert _held(created, CreatedInfusionOut).initial_rate_ml_h == 50.0  # L1
    infusion = int(created["id"])
    assert _every_view(ward, infusion).state == "planned"

    given = ward._ago(60)  # D3
    _held(ward.post(f"/infusions/{infusion}/premedication", "nurse", {"given_at": given}))
    _held(ward.post(f"/infusions/{infusion}/start", "clinician", {}))
    ward.advance(HOUR + 1)
    running = _every_view(ward, infusion)
    assert (running.state, running.rate_history != []) == ("running", True)

    reported = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
    )
    paused = _every_view(ward, infusion)
    assert paused.reaction is not None
    assert paused.reaction.signs == ["other"]
    assert paused.state_reason is not None  # I1 names why it paused
    resolved = f"/infusions/{infusion}/reactions/{reported['reaction_id']}/resolve"
    _held(ward.post(resolved, "nurse"))
    resumed = _held(ward.post(f"/infusions/{infusion}/resume", "nurse"))
    assert (resumed.reaction, len(resumed.reactions)) == (None, 1)  # closed, kept

    _held(ward.post(f"/infusions/{infusion}/hold", "clinician"))  # L7
    ward.post("/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    ward.advance(1)
    alarmed = _held(ward.post(f"/infusions/{infusion}/alarms/occlusion/acknowledge", "nurse"))
    assert [a.kind for a in alarmed.alarms] == ["occlusion"]
    assert alarmed.alarms[0].acknowledged_by == "nina"  # A8
    _every_view(ward, infusion)

    stopped = _held(
        ward.post(f"/infusions/{infusion}/stop", "nurse", {"reason": "the patient asked"})
    )
    assert stopped.stop_reason is not None
    _every_view(ward, infusion)

    other = ward.post(
        "/infusions", "clinician", {"patient_id": ward.patient("MRN-2"), "pump_id": "pump-2"}, 201
    )
    cancel = f"/infusions/{other['id']}/cancel"
    cancelled = _held(ward.post(cancel, "clinician", {"reason": "rescheduled"}))
    assert cancelled.state == "cancelled"
    assert cancelled.state_reason is not None
    assert cancelled.state_reason.rule == "L8"


def test_the_openapi_document_names_the_model_on_every_route_that_answers_a_view(
    client: TestClient,
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    ref = "#/components/schemas/InfusionOut"

    def schema(path: str, method: str, code: str) -> Any:
        answer = paths[f"/api/v1/infusions{path}"][method]["responses"][code]
        return answer["content"]["application/json"]["schema"]

    assert schema("", "get", "200")["items"] == {"$ref": ref}
    assert schema("/{infusion_id}", "get", "200") == {"$ref": ref}
    for action in ("hold", "release", "bag", "stop", "resume", "premedication", "start"):
        assert schema(f"/{{infusion_id}}/{action}", "post", "200") == {"$ref": ref}, action
    waits = schema("/{infusion_id}/hold", "post", "202")
    assert waits == {"$ref": "#/components/schemas/InfusionRecordWaits"}
    assert schema("", "post", "201") == {"$ref": "#/components/schemas/CreatedInfusionOut"}
