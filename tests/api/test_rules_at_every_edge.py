"""The rules at the service's edges (issue "The service keeps its rules at every edge"): history
that withdraws, refusals that name their rule, the state a pump alarm or the bag's expiry
shows, every audit row's rule, a New Era pump that refuses to run after a clear, a delayed
reaction's answer, the schedule's spacing (D2) and what an admin reads.

Through HTTP against the service (its lifespan, simulated pumps in process, SQLite, a virtual
clock); a New Era pump's alarms on its real pseudo-terminal (`new_era`)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH, HOUR, ApiSteps, settings
from fastapi.testclient import TestClient

from api.app import create_app
from pumpctl.core.machine.pump import REFUSED_RUN_WORDS

DAY = 24 * HOUR
RULE_ID = re.compile(r"^[LIAD]\d+$")
STORAGE_NAMES = re.compile(r"\b(uq|pk|ck|fk|ix)_|constraint|UNIQUE|IntegrityError", re.IGNORECASE)


def _history(number: int, *reactions: dict[str, Any]) -> dict[str, Any]:
    return {"infusion_number": number, "highest_rate_ml_h": 200, "reactions": list(reactions)}


def _reaction(grade: int, *signs: str) -> dict[str, Any]:
    return {"grade": grade, "signs": list(signs), "rate_ml_h": 100, "running_min": 90}


def _enter(ward: ApiSteps, patient: int, entry: dict[str, Any]) -> dict[str, Any]:
    """L8: a clinician enters an infusion given elsewhere; the patient as answered."""
    answer: dict[str, Any] = ward.post(f"/patients/{patient}/history", "clinician", entry, 201)
    return answer


def _body(patient: int, pump: str = "pump-1") -> dict[str, Any]:
    return {"patient_id": patient, "pump_id": pump}


def _plan(ward: ApiSteps, patient: int, pump: str = "pump-1", expect: int = 201) -> Any:
    return ward.post("/infusions", "clinician", {"patient_id": patient, "pump_id": pump}, expect)


def _refusal(ward: ApiSteps, path: str, role: str, body: Any) -> dict[str, Any]:
    """The 409's problem: it names a rule id and no storage name."""
    problem: dict[str, Any] = ward.post(path, role, body, 409)["detail"]
    assert RULE_ID.match(problem["rule"] or ""), problem
    assert not STORAGE_NAMES.search(problem["message"]), problem
    return problem


#: A New Era pump's alarms: it cannot say a cause is gone (`reports_alarm_clearance`), so the
#: nurse's clear is that statement (A1). On its pseudo-terminal, not in process.
new_era = pytest.mark.parametrize("link", ["serial"])

# -- I3, I6 in history (L8) ------------------------------------------------------------------


def test_i6_a_third_grade_3_entered_in_history_withdraws_the_course_at_once(ward: ApiSteps) -> None:
    """I6, L8: three grade >= 3 reactions entered as history withdraw the course (I8) the moment
    the third is entered, and the course's next infusion is refused naming I8 (and why, I6)."""
    patient = ward.patient()
    for number in (1, 2):
        ward.post(
            f"/patients/{patient}/history",
            "clinician",
            _history(number, _reaction(3, "other")),
            201,
        )
        assert ward.get(f"/patients/{patient}")["course_state"] == "active"
    third = _enter(ward, patient, _history(3, _reaction(3, "other")))
    assert third["severe_reactions"] == 3
    assert third["course_state"] == "withdrawn"
    assert third["withdrawn_reason"].startswith("I6:"), third["withdrawn_reason"]
    refused = _refusal(
        ward, "/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-1"}
    )
    assert refused["rule"] == "I8"
    assert "I6" in refused["message"]
    store = ward.c.app.state.ward.store  # type: ignore[attr-defined]
    withdrawn = [a for a in store.audit_since(0) if a.type == "course_withdrawn"]
    assert [(a.rule, a.data["cause"], a.actor) for a in withdrawn] == [("I8", "I6", "carl")]


def test_i3_a_grade_2_laryngeal_edema_entered_in_history_withdraws_at_once(ward: ApiSteps) -> None:
    """I3, L8: one grade 2 laryngeal edema in entered history withdraws the course; a grade 1
    laryngeal edema does not."""
    patient = ward.patient()
    mild = _history(1, _reaction(1, "laryngeal_edema"))
    assert ward.post(f"/patients/{patient}/history", "clinician", mild, 201)["course_state"] == (
        "active"
    )
    edema = _history(2, _reaction(2, "laryngeal_edema", "other"))
    answer = ward.post(f"/patients/{patient}/history", "clinician", edema, 201)
    assert answer["course_state"] == "withdrawn"
    assert answer["withdrawn_reason"].startswith("I3:")
    refused = _refusal(
        ward, "/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-2"}
    )
    assert refused["rule"] == "I8"


def test_i8_a_course_withdrawn_by_history_can_be_reinstated_and_planned_again(
    ward: ApiSteps,
) -> None:
    """I8: the withdrawal history made is a withdrawal like any other: a clinician reinstates
    it with a reason, and the course's next infusion is planned."""
    patient = ward.patient()
    for number in (1, 2, 3):
        _enter(ward, patient, _history(number, _reaction(3, "other")))
    ward.post(f"/patients/{patient}/reinstate", "clinician", {"reason": "board decision"})
    # an entry that brings no new grade >= 3 leaves the reinstated course as it is (I6)
    assert _enter(ward, patient, _history(4))["course_state"] == "active"
    planned = _plan(ward, patient)
    assert planned["infusion_number"] == 5


def test_l8_history_is_refused_while_an_infusion_of_the_course_is_under_way(ward: ApiSteps) -> None:
    """L8: the running infusion's machine read the course when it started; an entry now is
    refused (409 L8) and changes nothing."""
    patient = ward.patient()
    ward.started(patient)
    problem = _refusal(
        ward, f"/patients/{patient}/history", "clinician", _history(5, _reaction(3, "other"))
    )
    assert problem["rule"] == "L8"
    assert ward.get(f"/patients/{patient}")["history"][-1]["given_elsewhere"] is False


# -- A5: one live infusion per pump and per course -------------------------------------------


def test_a5_a_busy_pump_and_a_course_with_a_live_infusion_are_refused_naming_a5(
    ward: ApiSteps,
) -> None:
    """A5: a second infusion on a busy pump, or a second live one of a course, is 409 A5 in
    words, never a rule of null or the database's constraint name."""
    first = ward.patient("MRN-A")
    ward.started(first, pump="pump-1")
    other = ward.patient("MRN-B")
    busy = _refusal(ward, "/infusions", "clinician", {"patient_id": other, "pump_id": "pump-1"})
    assert busy["rule"] == "A5"
    live = _refusal(ward, "/infusions", "clinician", {"patient_id": first, "pump_id": "pump-2"})
    assert live["rule"] == "A5"
    assert "live infusion" in live["message"]


def test_l8_a_second_patient_with_the_same_mrn_names_l8_not_the_index(ward: ApiSteps) -> None:
    """L8: one record per patient keeps the history together; the refusal says so in words."""
    ward.patient("MRN-SAME")
    problem = _refusal(ward, "/patients", "clinician", {"mrn": "MRN-SAME", "weight_kg": 60})
    assert problem["rule"] == "L8"
    assert "MRN-SAME" not in problem["message"]


# -- the state a pump alarm or the bag's expiry shows ------------------------------------------


@new_era
def test_a1_a_pump_alarm_shows_paused_with_its_reason_and_running_after(ward: ApiSteps) -> None:
    """A1: during an occlusion the infusion's state is `paused`, naming A1 and the alarm; once
    the nurse clears it and resumes, `running` again with no reason."""
    infusion = ward.started(ward.patient())
    assert ward.get(f"/infusions/{infusion}")["state_reason"] is None
    ward.post("/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    ward.advance(1)
    view = ward.get(f"/infusions/{infusion}")
    assert view["state"] == "paused"
    assert view["state_reason"]["rule"] == "A1"
    assert "occlusion" in view["state_reason"]["message"]
    assert [v["id"] for v in ward.get("/infusions?state=paused")] == [infusion]
    assert view["time_left_min"] is None  # nothing runs while the pump stands in its alarm
    ward.c.delete("/api/v1/sim/pumps/pump-1/faults/occlusion", headers=AUTH["admin"])
    ward.post(f"/infusions/{infusion}/alarms/occlusion/clear", "nurse")
    ward.post(f"/infusions/{infusion}/resume", "nurse", {})
    ward.advance(1)
    view = ward.get(f"/infusions/{infusion}")
    assert (view["state"], view["state_reason"]) == ("running", None)


def test_l9_the_bag_s_expiry_shows_paused_naming_l9(ward: ApiSteps) -> None:
    """L9: at the bag's 15 h the pump is stopped; the state says `paused`, naming L9."""
    patient = ward.patient()
    body = {"patient_id": patient, "pump_id": "pump-1", "bag_prepared_at": ward._ago(14 * 60 + 30)}
    inf = ward.post("/infusions", "clinician", body, 201)
    ward.post(f"/infusions/{inf['id']}/premedication", "nurse", {"given_at": ward._ago(60)})
    ward.post(f"/infusions/{inf['id']}/start", "clinician", {})
    ward.advance(HOUR)
    view = ward.get(f"/infusions/{inf['id']}")
    assert view["state"] == "paused"
    assert view["state_reason"]["rule"] == "L9"
    assert ward.pump()["state"] == "stopped"


# -- every audit row names its rule ----------------------------------------------------------


def test_a6_every_audit_row_of_a_course_names_the_rule_it_serves(ward: ApiSteps) -> None:
    """A6, L8, L4: patient, course, infusion, start, a refused stop with a blank reason, a stop
    for good: every audit row names a rule; the stop names A6 and the creations theirs."""
    patient = ward.patient()
    infusion = ward.started(patient)
    ward.post(f"/infusions/{infusion}/stop", "nurse", {"reason": "  "}, 422)
    ward.post(f"/infusions/{infusion}/stop", "nurse", {"reason": "patient asked"})
    store = ward.c.app.state.ward.store  # type: ignore[attr-defined]
    rows = store.audit_since(0)
    assert rows, "no audit rows"
    assert [(r.type, r.rule) for r in rows if r.rule is None] == []
    rules = {r.type: r.rule for r in rows}
    assert rules["patient_created"] == "L8"
    assert rules["course_created"] == "L8"
    assert rules["infusion_created"] == "L4"
    assert rules["stopped"] == "A6"
    view = ward.get(f"/infusions/{infusion}")
    assert view["state_reason"] == {"rule": "A6", "message": "stopped for good: patient asked"}


# -- A1: a New Era pump that refuses to run after the nurse's clear ----------------------------


@new_era
def test_a1_a_new_era_pump_that_refuses_to_run_after_a_clear_says_clear_it_at_the_pump(
    ward: ApiSteps,
) -> None:
    """A1: a New Era pump cannot say its alarm's cause is gone, so the nurse's clear is taken
    as that statement; when the pump still stands in its alarm and refuses the resume's run,
    the alarm tells the nurse to clear it at the pump, then resume (A1), and it stays stopped."""
    infusion = ward.started(ward.patient())
    ward.post("/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    ward.advance(1)
    ward.post(f"/infusions/{infusion}/alarms/occlusion/clear", "nurse")  # the pump still shows it
    ward.post(f"/infusions/{infusion}/resume", "nurse", {})
    ward.advance(1)
    view = ward.get(f"/infusions/{infusion}")
    refused = [a for a in view["alarms"] if a["kind"] == "command_denied"]
    assert refused, view["alarms"]
    assert refused[-1]["rule"] == "A1"
    assert REFUSED_RUN_WORDS in refused[-1]["message"]
    assert ward.pump()["state"] != "running"
    assert view["state"] == "paused"


# -- I11: a delayed reaction's answer -------------------------------------------------------


def test_i11_a_delayed_reaction_after_completion_answers_no_pump_action(ward: ApiSteps) -> None:
    """I11: a reaction reported after the infusion completed is recorded against it with no
    pump action: 201 with `stop` `no_pump_action` (never `already_stopped`), the pump left
    stopped, and the reaction in the infusion's record."""
    infusion = ward.started(ward.patient())
    for _hour in range(8):
        if ward.get(f"/infusions/{infusion}")["state"] == "completed":
            break
        ward.advance(HOUR)
    assert ward.get(f"/infusions/{infusion}")["state"] == "completed"
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
    )
    assert (answer["stop"], answer["stop_confirmed_ms"]) == ("no_pump_action", None)
    assert ward.pump()["state"] == "stopped"
    assert [r["grade"] for r in ward.get(f"/infusions/{infusion}")["reactions"]] == [2]


def test_i11_a_reaction_after_the_end_answers_no_pump_action(ward: ApiSteps) -> None:
    """I11: a reaction reported after the infusion ended moves no pump: the answer's `stop`
    is `no_pump_action`, a value the interface names."""
    infusion = ward.started(ward.patient())
    ward.post(f"/infusions/{infusion}/stop", "nurse", {"reason": "line out"})
    ward.advance(1)
    answer = ward.post(
        f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201
    )
    assert answer["stop"] == "no_pump_action"
    assert answer["stop_confirmed_ms"] is None


# -- D2: the schedule's spacing ----------------------------------------------------------------


def test_d2_an_infusion_sooner_than_the_schedule_is_refused_unless_a_clinician_overrides(
    ward: ApiSteps,
) -> None:
    """D2: infusion 2 the same day as infusion 1 is refused (409 D2); a clinician's reason
    overrides it, audited; a week later it starts with no override."""
    patient = ward.patient()
    first = ward.started(patient)
    ward.post(f"/infusions/{first}/stop", "nurse", {"reason": "ended early"})
    second = ward.post("/infusions", "clinician", {"patient_id": patient, "pump_id": "pump-1"}, 201)
    ward.post(f"/infusions/{second['id']}/premedication", "nurse", {"given_at": ward._ago(60)})
    problem = _refusal(ward, f"/infusions/{second['id']}/start", "clinician", {})
    assert problem["rule"] == "D2"
    assert ward.get(f"/infusions/{second['id']}")["state"] == "planned"
    ward.post(
        f"/infusions/{second['id']}/start",
        "clinician",
        {"schedule_override_reason": "clinic closed next week"},
    )
    gates = [e for e in ward.get(f"/infusions/{second['id']}/events") if e["type"] == "start_gate"]
    d2 = next(g for g in gates if g["rule"] == "D2")
    assert d2["data"]["overridden"] is True
    assert d2["data"]["override_reason"] == "clinic closed next week"


def test_d2_a_week_later_the_next_infusion_starts_without_an_override(ward: ApiSteps) -> None:
    """D2: weekly in weeks 1-8: seven days after infusion 1 started, infusion 2 starts."""
    patient = ward.patient()
    first = ward.started(patient)
    ward.post(f"/infusions/{first}/stop", "nurse", {"reason": "ended early"})
    ward.week_later()
    second = ward.started(patient)
    assert ward.get(f"/infusions/{second}")["state"] == "running"


# -- what an admin reads ---------------------------------------------------------------------


def test_an_admin_reads_pumps_health_and_simulation_but_no_patient_data(
    ward: ApiSteps, client: TestClient
) -> None:
    """L8 (records): an admin reads pumps, health and the simulation routes; patients,
    infusions, the audit trail and the live events answer 403."""
    patient = ward.patient()
    infusion = ward.started(patient)
    admin = AUTH["admin"]
    for path in ("/pumps", "/health", "/clock", "/me", "/sim/clock"):
        assert client.get(f"/api/v1{path}", headers=admin).status_code == 200, path
    for path in (
        f"/patients/{patient}",
        "/infusions",
        f"/infusions/{infusion}",
        f"/infusions/{infusion}/events",
        f"/infusions/{infusion}/resume",
        "/events",
    ):
        assert client.get(f"/api/v1{path}", headers=admin).status_code == 403, path


# -- the readings, through the service -------------------------------------------------------


def test_i5_i10_two_reports_in_one_stop_the_window_counts_from_the_report_that_opened_it(
    ward: ApiSteps,
) -> None:
    """I5, I10: grade 2 at t0, then grade 3 reported at t0 + 30 min with its onset at
    t0 + 20 min: the window opens at t0 + 20 (not at the first report's t0) and its end, at
    t0 + 140 min, withdraws the course (I8); at t0 + 130 it is still open."""
    patient = ward.patient()
    infusion = ward.started(patient)
    ward.post(f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201)
    ward.advance(30 * 60)
    body = {"grade": 3, "signs": ["other"], "onset_at": ward._ago(10)}
    ward.post(f"/infusions/{infusion}/reactions", "nurse", body, 201)
    ward.advance(100 * 60)  # t0 + 130 min
    assert ward.get(f"/infusions/{infusion}")["state"] == "stopped_observation"
    ward.advance(11 * 60)  # t0 + 141 min
    assert ward.get(f"/infusions/{infusion}")["state"] == "withdrawn"
    assert ward.get(f"/patients/{patient}")["course_state"] == "withdrawn"


def test_a2_l1_a_link_back_alone_does_not_resume_the_ladder_until_a_nurse_clears_it(
    tmp_path: Path,
) -> None:
    """A2, L1: a pump that stops answering loses its link; when it answers again the ladder
    stays at 50 ml/h however long it runs, until a nurse clears the communication-loss alarm;
    a full interval later it steps to 100 ml/h."""
    with TestClient(
        create_app(settings(tmp_path, link_timeout_s=1.0)), base_url="http://gateway"
    ) as client:
        ward = ApiSteps(client)
        infusion = ward.started(ward.patient())
        ward.post("/sim/pumps/pump-1/faults", "admin", {"fault": "no_reply", "value": True})
        _until(ward, infusion, lambda view: view["link_lost"])
        client.delete("/api/v1/sim/pumps/pump-1/faults/no_reply", headers=AUTH["admin"])
        _until(ward, infusion, lambda view: not view["link_lost"])
        ward.advance(2 * HOUR)
        assert ward.pump()["rate_ml_h"] == 50
        assert "comm_loss" in ward.get(f"/infusions/{infusion}")["latched_alarms"]
        ward.post(f"/infusions/{infusion}/alarms/comm_loss/clear", "nurse")
        ward.advance(HOUR - 60)
        assert ward.pump()["rate_ml_h"] == 50
        ward.advance(120)
        assert ward.pump()["rate_ml_h"] == 100


def _until(ward: ApiSteps, infusion: int, holds: Callable[[dict[str, Any]], bool]) -> None:
    """Wait, bounded, until the infusion's view `holds` (the link's state follows wire time)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        view = ward.get(f"/infusions/{infusion}")
        if holds(view):
            return
        ward.advance(0.1)  # returns once every pump's status at the new instant is processed
    raise AssertionError(f"infusion {infusion} never reached the condition: {view}")
