"""A8 through the API (docs/interfaces.md, section 3): every alarm listed carries its priority
(the infusion's view, the pumps), and `POST /infusions/{id}/alarms/{alarm}/acknowledge`
acknowledges one: audited with the nurse and the alarm's rule, its latch and the pump left as
they are (A1); 404 for an unknown infusion, 409 naming A8, 422 naming the alarm, 403 for a
viewer, never a 500.

Through HTTP against the service (its lifespan, simulated pumps in process, SQLite, a virtual
clock)."""

from __future__ import annotations

from typing import Any

from conftest import AUTH, HOUR, ApiSteps


def acknowledge(
    ward: ApiSteps, infusion: int, alarm: str, role: str = "nurse", expect: int = 200
) -> Any:
    return ward.post(f"/infusions/{infusion}/alarms/{alarm}/acknowledge", role, None, expect)


def test_a8_a1_a_pump_alarm_is_listed_with_its_priority_and_acknowledged_by_a_nurse(
    ward: ApiSteps,
) -> None:
    """A8: an occlusion is listed once on the infusion (medium, A1, since when) and on the pump
    (its priority); the nurse's acknowledgement is in the view and the audit trail with her
    name and A1; the alarm stays latched, the pump stopped, the resume refused (A1)."""
    infusion = ward.started(ward.patient())
    ward.advance(HOUR)
    ward.post("/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    ward.advance(1)
    pump = ward.pump()
    assert (pump["alarms"], pump["alarm_priority"]) == (["occlusion"], {"occlusion": "medium"})
    [alarm] = ward.get(f"/infusions/{infusion}")["alarms"]
    assert {k: alarm[k] for k in ("kind", "rule", "priority", "acknowledged_by")} == {
        "kind": "occlusion",
        "rule": "A1",
        "priority": "medium",
        "acknowledged_by": None,
    }
    assert alarm["raised_at"] is not None

    view = acknowledge(ward, infusion, "occlusion")
    [alarm] = view["alarms"]
    assert alarm["acknowledged_by"] == "nina"
    assert alarm["acknowledged_at"] is not None
    assert "occlusion" in view["latched_alarms"]  # acknowledging is not clearing (A1)
    assert view["state"] == "paused"
    assert ward.pump()["state"] != "running"
    refused = ward.post(f"/infusions/{infusion}/resume", "nurse", None, 409)["detail"]
    assert refused["rule"] == "A1"
    trail = ward.get(f"/infusions/{infusion}/events")
    [row] = [e for e in trail if e["type"] == "alarm_acknowledged"]
    assert (row["actor"], row["rule"]) == ("nina", "A1")
    assert row["data"]["alarm"] == "occlusion"
    assert row["data"]["priority"] == "medium"


def test_a8_refusals_name_a8_the_alarm_or_the_role_never_a_500(ward: ApiSteps) -> None:
    """409 A8 for an alarm not raised and for one already acknowledged (naming who did), 422
    for a name that is no alarm kind, 404 for an unknown infusion, 403 for a viewer."""
    infusion = ward.started(ward.patient())
    not_raised = acknowledge(ward, infusion, "over_infusion", expect=409)["detail"]
    assert not_raised == {"rule": "A8", "message": "no alarm 'over_infusion' is raised"}
    invalid = acknowledge(ward, infusion, "gremlins", expect=422)["detail"]
    assert [d["loc"] for d in invalid] == [["path", "alarm"]]
    assert "gremlins" not in str(invalid)  # the input is never echoed
    assert "detail" in acknowledge(ward, 9999, "occlusion", expect=404)
    r = ward.c.post(
        f"/api/v1/infusions/{infusion}/alarms/occlusion/acknowledge", headers=AUTH["viewer"]
    )
    assert r.status_code == 403

    ward.post("/sim/pumps/pump-1/faults", "admin", {"alarm": "occlusion"})
    ward.advance(1)
    acknowledge(ward, infusion, "occlusion", role="clinician")
    again = acknowledge(ward, infusion, "occlusion", expect=409)["detail"]
    assert again == {"rule": "A8", "message": "occlusion was already acknowledged by carl"}
    trail = ward.get(f"/infusions/{infusion}/events")
    assert [e["actor"] for e in trail if e["type"] == "alarm_acknowledged"] == ["carl"]


def test_a8_a3_the_unconfirmed_stop_is_high_listed_first_and_acknowledged_under_a3(
    ward: ApiSteps,
) -> None:
    """A3, A8: a stop the pump does not confirm is a high-priority alarm, listed before any
    other; acknowledged, it is audited under A3 and stays until it is cleared (A1), which is
    refused while the stop is not confirmed."""
    infusion = ward.started(ward.patient())
    ward.post("/sim/pumps/pump-1/faults", "admin", {"fault": "no_reply", "value": True})
    try:
        answer = ward.post(
            f"/infusions/{infusion}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 202
        )
        assert answer["alarm"] == "A3"
        view = ward.get(f"/infusions/{infusion}")
        for _ in range(100):  # the stop's fate follows the answer: bounded
            if any(a["kind"] == "pump_not_stopped" for a in view["alarms"]):
                break
            ward.advance(0.1)  # each advance waits for what the instant caused
            view = ward.get(f"/infusions/{infusion}")
        first = view["alarms"][0]
        assert (first["kind"], first["rule"], first["priority"]) == (
            "pump_not_stopped",
            "A3",
            "high",
        )
        assert [a["priority"] for a in view["alarms"]] == sorted(
            (a["priority"] for a in view["alarms"]), key=["high", "medium", "low"].index
        )
        view = acknowledge(ward, infusion, "pump_not_stopped")
        assert view["alarms"][0]["acknowledged_by"] == "nina"
        clear = ward.post(
            f"/infusions/{infusion}/alarms/pump_not_stopped/clear", "nurse", None, 409
        )
        assert clear["detail"]["rule"] == "A3"
    finally:
        ward.c.delete("/api/v1/sim/pumps/pump-1/faults/no_reply", headers=AUTH["admin"])
    trail = ward.get(f"/infusions/{infusion}/events")
    [row] = [e for e in trail if e["type"] == "alarm_acknowledged"]
    assert (row["actor"], row["rule"], row["data"]["priority"]) == ("nina", "A3", "high")
