"""Each reaction rule end to end through HTTP, on simulated pumps in process in virtual time."""

from __future__ import annotations

from conftest import HOUR, ApiSteps


def test_grade_2_at_150_stops_resumes_at_75_then_steps_50_after_an_hour(ward: ApiSteps) -> None:
    infusion = ward.started(ward.patient())
    assert ward.pump()["rate_ml_h"] == 50
    ward.advance(2 * HOUR)
    assert ward.pump()["rate_ml_h"] == 150
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
    )
    assert answer["stop"] == "confirmed", answer
    assert answer["stop_confirmed_ms"] > 0
    assert answer["state"] == "paused"
    assert ward.pump()["state"] == "stopped"
    preview = ward.get(f"/infusions/{infusion}/resume")
    assert (preview["allowed"], preview["rate_ml_h"]) == (True, 75), preview
    ward.post(f"/infusions/{infusion}/resume", "nurse", {})
    ward.advance(1)
    assert (ward.pump()["state"], ward.pump()["rate_ml_h"]) == ("running", 75)
    ward.advance(HOUR)
    assert ward.pump()["rate_ml_h"] == 125  # I2 then L1: +50 after one interval
    trail = [e["type"] for e in ward.get(f"/infusions/{infusion}/events")]
    assert "reaction" in trail
    assert "resumed" in trail
    assert {
        e["actor"] for e in ward.get(f"/infusions/{infusion}/events") if e["type"] == "reaction"
    } == {"nina"}


def test_a_second_press_while_stopped_is_harmless_and_recorded(ward: ApiSteps) -> None:
    infusion = ward.started(ward.patient())
    ward.post(f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201)
    again = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201
    )
    assert again["stop"] in {"already_stopped", "confirmed"}
    assert ward.pump()["state"] == "stopped"


def test_laryngeal_edema_grade_2_withdraws(ward: ApiSteps) -> None:
    patient = ward.patient()
    infusion = ward.started(patient)
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["laryngeal_edema"]}, 201
    )
    assert answer["state"] == "withdrawn"
    assert ward.get(f"/patients/{patient}")["course_state"] == "withdrawn"
    refused = ward.post(f"/infusions/{infusion}/resume", "nurse", {}, 409)
    assert refused["detail"]["rule"] is not None
    # I8: no new infusion for a withdrawn course
    again = ward.post("/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-2"}, 409)
    assert again["detail"]["rule"] == "I8"


def test_grade_3_not_downgraded_in_2_hours_withdraws(ward: ApiSteps) -> None:
    patient = ward.patient()
    infusion = ward.started(patient)
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 3, "signs": ["other"]}, 201
    )
    assert answer["state"] == "stopped_observation"
    refused = ward.post(f"/infusions/{infusion}/resume", "nurse", {}, 409)
    assert refused["detail"]["rule"] == "I5"
    ward.advance(2 * HOUR + 60)
    assert ward.get(f"/infusions/{infusion}")["state"] == "withdrawn"
    assert ward.get(f"/patients/{patient}")["course_state"] == "withdrawn"


def test_no_reply_answers_202_naming_a3_and_resume_waits_for_the_stop(ward: ApiSteps) -> None:
    infusion = ward.started(ward.patient())
    ward.post("/sim/pumps/pump-1/faults", "admin", {"fault": "no_reply", "value": True})
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 202
    )
    assert (answer["stop"], answer["alarm"], answer["message"]) == (
        "unconfirmed",
        "A3",
        "Pump did not stop: clamp the line",
    )
    refused = ward.post(f"/infusions/{infusion}/resume", "nurse", {}, 409)
    assert refused["detail"]["rule"] == "A3"
    # the 202 may come before the stop's fate: the view says a stop is pending either way
    assert ward.get(f"/infusions/{infusion}")["stop_pending"] is True
    r = ward.c.delete(
        "/api/v1/sim/pumps/pump-1/faults/no_reply",
        headers={"Authorization": "Bearer a-tok-for-the-tests-only-32chars"},
    )
    assert r.status_code == 200
    ward.advance(5)
    assert ward.pump()["state"] == "stopped"
    assert ward.get(f"/infusions/{infusion}")["stop_unconfirmed"] is False
    assert ward.get(f"/infusions/{infusion}")["stop_pending"] is False
    ward.post(f"/infusions/{infusion}/resume", "nurse", {})
