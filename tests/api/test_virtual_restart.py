"""A service on a virtual clock, restarted on the same store, goes on from the store's last
clinical instant (A4): before this, it came back at the clock's fixed epoch, earlier than the
events it had recorded, and refused every action as "before the last event"."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from conftest import HOUR, Ward, settings
from fastapi.testclient import TestClient

from api.app import create_app


def test_a_restarted_virtual_service_never_runs_clinical_time_backwards(tmp_path: Path) -> None:
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as first:
        ward = Ward(first)
        infusion = ward.started(ward.patient())
        ward.advance(HOUR)
        before = datetime.fromisoformat(ward.get("/clock")["now"])
        last_event = max(
            datetime.fromisoformat(e["at"]) for e in ward.get(f"/infusions/{infusion}/events")
        )
    with TestClient(create_app(settings(tmp_path)), base_url="http://gateway") as second:
        ward = Ward(second)
        after = datetime.fromisoformat(ward.get("/clock")["now"])
        assert after >= last_event
        assert after <= before
        # the infusion is taken back (A4) and the nurse can act on it at once
        answer = ward.post(
            f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201
        )
        assert answer["reaction_id"] >= 1
