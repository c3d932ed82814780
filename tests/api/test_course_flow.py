"""A course through HTTP in virtual time: the whole first infusion hour by hour, the next
infusions' rows from the recorded history (L4, L5), the start's gate (D3), I5 and I6."""

from __future__ import annotations

from typing import Any

from conftest import HOUR, ApiSteps


def _complete(ward: ApiSteps, infusion: int) -> list[float]:
    """Walk the infusion hour by hour until it completes; the rates seen at each hour."""
    rates = []
    for _hour in range(12):
        view = ward.get(f"/infusions/{infusion}")
        if view["state"] == "completed":
            return rates
        rates.append(ward.pump()["rate_ml_h"])
        ward.advance(HOUR)
    raise AssertionError(
        f"infusion {infusion} did not complete: {ward.get(f'/infusions/{infusion}')}"
    )


def test_first_infusion_walked_hour_by_hour_then_rows_from_history(ward: ApiSteps) -> None:
    patient = ward.patient()
    first = ward.started(patient)
    assert _complete(ward, first)[:5] == [50, 100, 150, 200, 200]
    done = ward.get(f"/infusions/{first}")
    assert done["volume_infused_ml"] >= 999
    assert ward.pump()["state"] == "stopped"
    ward.week_later()  # D2
    second = ward.started(patient)
    view: dict[str, Any] = ward.get(f"/infusions/{second}")
    assert (view["infusion_number"], view["row"], view["bag_ml"]) == (2, "second", 500)
    assert ward.pump()["rate_ml_h"] == 50
    _complete(ward, second)
    ward.week_later()  # D2
    third = ward.started(patient)
    view = ward.get(f"/infusions/{third}")
    assert (view["infusion_number"], view["row"]) == (3, "subsequent")
    assert ward.pump()["rate_ml_h"] == 100
    history = ward.get(f"/patients/{patient}")["history"]
    assert [h["infusion_number"] for h in history] == [1, 2, 3]


def test_the_start_is_refused_without_premedication_unless_a_clinician_overrides(
    ward: ApiSteps,
) -> None:
    patient = ward.patient()
    inf = ward.post("/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-2"}, 201)
    refused = ward.post(f"/infusions/{inf['id']}/start", "clinician", {}, 409)
    assert refused["detail"]["rule"] == "D3"
    # advance returns once every pump's status at the new instant is processed: right after
    # the service started, a pump not yet polled reads "offline"
    ward.advance(1)
    assert ward.pump("pump-2")["state"] == "stopped"
    assert ward.get(f"/infusions/{inf['id']}")["state"] == "planned"
    ward.post(
        f"/infusions/{inf['id']}/start", "clinician", {"override_reason": "given on the ward"}
    )
    ward.advance(1)
    assert ward.pump("pump-2")["state"] == "running"
    gates = [e for e in ward.get(f"/infusions/{inf['id']}/events") if e["type"] == "start_gate"]
    gate = next(g for g in gates if g["rule"] == "D3")
    assert gate["data"]["overridden"] is True
    assert gate["actor"] == "carl"


def test_grade_3_then_a_nurse_stop_is_still_withdrawn_after_2_hours(ward: ApiSteps) -> None:
    patient = ward.patient()
    infusion = ward.started(patient)
    ward.post(f"/infusions/{infusion}/reactions", "nurse", {"grade": 3, "signs": ["other"]}, 201)
    ward.post(f"/infusions/{infusion}/stop", "nurse", {"reason": "family asked"})
    ward.advance(2 * HOUR + 60)
    assert ward.get(f"/patients/{patient}")["course_state"] == "withdrawn"


def test_a_third_grade_3_in_the_course_withdraws(ward: ApiSteps) -> None:
    patient = ward.patient()
    for n in range(3):
        infusion = ward.started(patient)
        answer = ward.post(
            f"/infusions/{infusion}/reactions", "nurse", {"grade": 3, "signs": ["other"]}, 201
        )
        if n < 2:
            assert answer["state"] == "stopped_observation"
            # I5: downgraded inside the window, the infusion resumes; then it is stopped for
            # good so the next infusion of the course can start
            ward.post(
                f"/infusions/{infusion}/reactions/1/reassess",
                "nurse",
                {"grade": 2, "signs": ["other"]},
            )
            ward.post(f"/infusions/{infusion}/resume", "nurse", {})
            ward.post(f"/infusions/{infusion}/stop", "nurse", {"reason": "end of the test day"})
            ward.week_later()  # D2: the next infusion is due a week later
        else:
            assert answer["state"] == "withdrawn"  # I6
    assert ward.get(f"/patients/{patient}")["course_state"] == "withdrawn"
