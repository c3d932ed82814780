"""A service on a virtual clock, restarted on the same store, goes on from the store's last
clinical instant (A4): before this, it came back at the clock's fixed epoch, earlier than the
events it had recorded, and refused every action as "before the last event"."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from conftest import HOUR, ApiSteps, settings
from fastapi.testclient import TestClient

from api.app import create_app


def test_a_restarted_virtual_service_never_runs_clinical_time_backwards(tmp_path: Path) -> None:
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as first:
        ward = ApiSteps(first)
        infusion = ward.started(ward.patient())
        ward.advance(HOUR)
        before = datetime.fromisoformat(ward.get("/clock")["now"])
        last_event = max(
            datetime.fromisoformat(e["at"]) for e in ward.get(f"/infusions/{infusion}/events")
        )
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as second:
        ward = ApiSteps(second)
        after = datetime.fromisoformat(ward.get("/clock")["now"])
        assert after >= last_event
        assert after <= before
        # the infusion is taken back (A4) and the nurse can act on it at once
        answer = ward.post(
            f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201
        )
        assert answer["reaction_id"] >= 1


def test_a4_after_a_restart_the_nurse_answers_no_reaction_or_reports_one(tmp_path: Path) -> None:
    """A4: the restarted service finds the pump stopped (its simulator lost power with it) and
    no record why: a plain resume is refused naming A4; `{"reaction": 2}` is sent to the
    reaction route (409 A4); `{"reaction": false}` resumes at the rate before the stop."""
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as first:
        ward = ApiSteps(first)
        infusion = ward.started(ward.patient())
        ward.advance(HOUR)
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as second:
        ward = ApiSteps(second)
        ward.advance(1)
        refused = ward.post(f"/infusions/{infusion}/resume", "nurse", None, 409)
        assert refused["detail"]["rule"] == "A4"
        graded = ward.post(f"/infusions/{infusion}/resume", "nurse", {"reaction": 2}, 409)
        assert graded["detail"]["rule"] == "A4"
        resumed = ward.post(f"/infusions/{infusion}/resume", "nurse", {"reaction": False})
        assert resumed["step_rate_ml_h"] == 100
        ward.advance(1)
        pump = next(p for p in ward.get("/pumps") if p["id"] == resumed["pump_id"])
        assert (pump["state"], pump["rate_ml_h"]) == ("running", 100)
