"""GET /infusions/{id}: what the nurse station shows of an infusion (interfaces.md, section 3)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import HOUR, ApiSteps

from pumpctl.store.store import Store


def test_a_first_infusion_shows_its_plan_bag_and_time_left(ward: ApiSteps) -> None:
    infusion = ward.started(ward.patient(weight=70.5))
    view = ward.get(f"/infusions/{infusion}")
    assert (view["state"], view["row"], view["infusion_number"]) == ("running", "first", 1)
    assert view["dose_mg"] == 1136  # D1: 71 kg x 16 mg/kg
    assert [s["rate_ml_h"] for s in view["planned_steps"]] == [50, 100, 150, 200]
    # L1/L2 from here: 50 + 100 + 150 ml in three hours, then 700 ml at 200 ml/h (3.5 h)
    assert abs(view["time_left_min"] - 390) <= 1.5, view["time_left_min"]
    assert view["next_escalation_at"] is not None
    ward.advance(HOUR)
    later = ward.get(f"/infusions/{infusion}")
    assert later["rate_ml_h"] == 100
    assert abs(later["time_left_min"] - 330) <= 1.5, later["time_left_min"]
    assert [p["rate_ml_h"] for p in later["rate_history"]][-2:] == [50, 100]


def test_the_reaction_is_shown_open_then_closed(ward: ApiSteps) -> None:
    infusion = ward.started(ward.patient())
    ward.post(f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201)
    view = ward.get(f"/infusions/{infusion}")
    assert view["reaction"]["id"] == 1
    assert view["reaction"]["grade"] == 1
    assert view["time_left_min"] is None  # paused: nothing runs
    ward.post(f"/infusions/{infusion}/resume", "nurse", {})
    ward.advance(1)
    assert ward.get(f"/infusions/{infusion}")["state"] == "running"


def test_the_list_is_kept_only_until_something_changes_or_the_clock_moves(ward: ApiSteps) -> None:
    """GET /infusions is served from memory (api/listing.py, issue 18) but never older than a
    change: a reaction press shows at once in the next list (I1: the nurse station must not
    show `running` for a stopped pump), and the clinical clock moving shows in the running
    minutes and time left even when nothing else changed."""
    infusion = ward.started(ward.patient())
    [first] = ward.get("/infusions")
    assert first["state"] == "running"
    assert ward.get("/infusions") == [first]  # nothing changed: the same list
    ward.advance(HOUR / 2)
    [later] = ward.get("/infusions")
    assert later["time_left_min"] < first["time_left_min"] - 25, (first, later)
    ward.post(f"/infusions/{infusion}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201)
    [paused] = ward.get("/infusions")
    assert paused["state"] == "paused"
    assert paused["reaction"]["grade"] == 1
    assert [v["id"] for v in ward.get("/infusions?state=paused")] == [infusion]
    assert ward.get("/infusions?state=running") == []


def test_a_finished_infusion_is_listed_as_it_is_shown_alone_and_filtered_by_its_state(
    ward: ApiSteps,
) -> None:
    """The list keeps each finished infusion's view, built once (api/listing.py, issue 18: a
    ward's history must not cost every build): it stays the view the infusion's own route
    builds afresh, through later changes of other infusions and of the clock, and the state
    filter still finds it."""
    done = ward.started(ward.patient("MRN-DONE"))
    ward.post(f"/infusions/{done}/stop", "nurse", {"reason": "the patient asked"})
    alone = ward.get(f"/infusions/{done}")
    assert alone["state"] == "stopped"
    [listed] = ward.get("/infusions")
    assert listed == alone
    running = ward.started(ward.patient("MRN-RUNNING"))
    ward.advance(HOUR / 4)
    both = {v["id"]: v for v in ward.get("/infusions")}
    assert both[done] == ward.get(f"/infusions/{done}")
    assert not both[done]["supervised"]  # finished: its view is the one kept
    ward.advance(HOUR / 4)
    assert {v["id"]: v for v in ward.get("/infusions")}[done] == ward.get(f"/infusions/{done}")
    assert both[running]["state"] == "running"
    assert [v["id"] for v in ward.get("/infusions?state=stopped")] == [done]
    assert [v["id"] for v in ward.get("/infusions?state=running")] == [running]
    # a late reaction reported on the finished infusion (I11) changes its view: the list
    # shows it at once, not the view kept from before
    ward.post(f"/infusions/{done}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201)
    [reported] = [v for v in ward.get("/infusions") if v["id"] == done]
    assert [r["grade"] for r in reported["reactions"]] == [1]
    assert reported == ward.get(f"/infusions/{done}")


def test_a_finished_infusions_stored_state_is_not_read_again_while_nothing_changed_it(
    ward: ApiSteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: parsing a stored state is most of a list build's cost, all of it holding the
    interpreter's lock the kernel's loop needs. Once a finished infusion's view is kept, a list
    built after a change elsewhere reads (parses) only the others; a change to the finished
    one reads it again; the pump filter keeps the kept views in their place."""
    done = ward.started(ward.patient("MRN-DONE"))
    ward.post(f"/infusions/{done}/stop", "nurse", {"reason": "the patient asked"})
    running = ward.started(ward.patient("MRN-RUNNING"))  # on the same pump: done's unheld
    listed = ward.get("/infusions")
    assert [v["id"] for v in listed] == [running, done]  # the finished one's view now kept
    assert not listed[1]["supervised"]
    parsed: list[int] = []
    stored = Store._stored

    def counted(row: Any) -> Any:
        parsed.append(row.id)
        return stored(row)

    monkeypatch.setattr(Store, "_stored", staticmethod(counted))
    ward.post(f"/infusions/{running}/hold", "clinician")  # the running one changes (L7)
    parsed.clear()  # (the hold's own answer read the running one)
    assert [v["id"] for v in ward.get("/infusions")] == [running, done]
    assert parsed == [running]
    assert [v["id"] for v in ward.get("/infusions?pump_id=pump-1")] == [running, done]
    assert ward.get("/infusions?pump_id=pump-2") == []
    ward.post(f"/infusions/{done}/reactions", "nurse", {"grade": 1, "signs": ["other"]}, 201)
    parsed.clear()
    listed = {v["id"]: v for v in ward.get("/infusions")}
    assert done in parsed  # changed: read again
    assert [r["grade"] for r in listed[done]["reactions"]] == [1]
