"""The Clarifications, "Records and input" (L8, I8): an infusion number is unique within a
course (per day of a split dose); a course and a pump each have at most one live infusion.
Enforced by the database itself, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from store_cases import T0, planned, running

from pumpctl.core.history import CourseState, InfusionRecord
from pumpctl.core.machine import Stop, decide
from pumpctl.store import InfusionConflictError, Store, StoreError
from pumpctl.store.models import OVER_PHASES

#: A course whose first infusion was given (so that infusion 2 can be planned: L4).
ONE_GIVEN = CourseState(infusions=(InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0),))


def course(store: Store, mrn: str = "MRN-1", protocol: str = "daratumumab") -> int:
    patient = store.create_patient(mrn, 70.0, actor="clinician", at=T0)
    return store.create_course(patient, protocol, actor="clinician", at=T0)


def stopped(store: Store, infusion_id: int) -> None:
    """Start the stored infusion, then a nurse stops it for good (a terminal state)."""
    state = running(store.load_infusion(infusion_id).state)
    decision = decide(state, Stop(actor="nurse", reason="patient asked"), T0 + timedelta(hours=1))
    assert decision.state.terminal
    store.save_infusion(infusion_id, decision.state, decision.audit, at=T0 + timedelta(hours=1))


def test_L8_a_course_holds_an_infusion_number_once(store: Store) -> None:
    c = course(store)
    first = store.create_infusion(c, "pump-1", planned(1), at=T0)
    stopped(store, first)
    with pytest.raises(InfusionConflictError, match="already holds infusion 1") as refused:
        store.create_infusion(c, "pump-1", planned(1), at=T0)
    assert refused.value.constraint == "uq_infusion_number"


def test_L8_a_split_first_dose_holds_each_day_once(store: Store) -> None:
    c = course(store, protocol="daratumumab-split")
    day1 = store.create_infusion(c, "pump-1", planned(1, day=1), at=T0)
    stopped(store, day1)
    day2 = store.create_infusion(c, "pump-1", planned(1, day=2), at=T0)  # the other day: fine
    stopped(store, day2)
    with pytest.raises(InfusionConflictError, match="infusion 1 day 2") as refused:
        store.create_infusion(c, "pump-1", planned(1, day=2), at=T0)
    assert refused.value.constraint == "uq_infusion_number_day"


def test_a5_a_pump_has_at_most_one_live_infusion(store: Store) -> None:
    """A5: the store's own index holds it; the error names the rule, its words no index."""
    store.create_infusion(course(store, "MRN-1"), "pump-1", planned(), at=T0)
    with pytest.raises(InfusionConflictError, match="pump pump-1 already has a live") as refused:
        store.create_infusion(course(store, "MRN-2"), "pump-1", planned(), at=T0)
    assert refused.value.constraint == "uq_infusion_live_pump"
    assert refused.value.rule == "A5"
    assert "uq_" not in str(refused.value)


def test_a_course_has_at_most_one_live_infusion(store: Store) -> None:
    c = course(store)
    store.create_infusion(c, "pump-1", planned(1), at=T0)
    with pytest.raises(InfusionConflictError, match="already has a live infusion") as refused:
        store.create_infusion(c, "pump-2", planned(2, course=ONE_GIVEN), at=T0)
    assert refused.value.constraint == "uq_infusion_live_course"


def test_live_again_once_the_first_is_over(store: Store) -> None:
    c = course(store)
    first = store.create_infusion(c, "pump-1", planned(1), at=T0)
    stopped(store, first)
    history = store.course_history(c)
    second = store.create_infusion(c, "pump-1", planned(2, course=history), at=T0)
    assert [i.id for i in store.live_infusions()] == [second]


def test_a_cancelled_infusion_frees_pump_course_and_number(store: Store) -> None:
    c = course(store)
    first = store.create_infusion(c, "pump-1", planned(1), at=T0)
    store.cancel_infusion(first, "wrong pump", actor="clinician", at=T0)
    assert store.course_history(c) == CourseState()  # never given: not the course's history
    again = store.create_infusion(c, "pump-1", planned(1), at=T0)
    assert store.load_infusion(again).state.infusion_number == 1
    stopped(store, again)
    with pytest.raises(StoreError, match="only a planned one"):
        store.cancel_infusion(again, "too late", actor="clinician", at=T0)


@pytest.mark.parametrize("over", OVER_PHASES)
def test_the_indexes_themselves_free_a_pump_in_every_phase_that_is_over(
    store: Store, over: str
) -> None:
    """Straight SQL, past the store's code: the partial indexes are what refuses."""
    c1, c2 = course(store, "MRN-1"), course(store, "MRN-2")
    first = store.create_infusion(c1, "pump-1", planned(), at=T0)
    with store.engine.begin() as connection:
        duplicate = text(
            "INSERT INTO infusion (course_id, pump_id, infusion_number, phase, supervised, state,"
            " created_at, created_wall_at, updated_at, updated_wall_at)"
            " SELECT :course, pump_id, infusion_number, phase, supervised, state, created_at,"
            " created_wall_at, updated_at, updated_wall_at FROM infusion WHERE id = :id"
        )
        with pytest.raises(IntegrityError), connection.begin_nested():
            connection.execute(duplicate, {"course": c2, "id": first})
        connection.execute(
            text("UPDATE infusion SET phase = :p WHERE id = :id"), {"p": over, "id": first}
        )
        connection.execute(duplicate, {"course": c2, "id": first})


def test_I8_no_infusion_for_a_withdrawn_course(store: Store) -> None:
    c = course(store)
    with store.engine.begin() as connection:
        connection.execute(
            text("UPDATE course SET course_state = 'withdrawn' WHERE id = :c"), {"c": c}
        )
    with pytest.raises(StoreError, match=r"withdrawn \(I8\)"):
        store.create_infusion(c, "pump-1", planned(), at=T0)
    store.reinstate_course(c, "clinician reviewed the reaction", actor="dr-a", at=T0)
    store.create_infusion(c, "pump-1", planned(), at=T0)


def test_the_protocol_is_fixed_for_the_course(store: Store) -> None:
    c = course(store)
    with pytest.raises(StoreError, match="fixed for the course"):
        store.create_infusion(c, "pump-1", planned(1, day=1), at=T0)  # the split variant
    with pytest.raises(IntegrityError, match="fixed for the course"), store.engine.begin() as db:
        db.execute(text("UPDATE course SET protocol = 'daratumumab-label' WHERE id = :c"), {"c": c})


def test_l8_an_mrn_is_one_patient(store: Store) -> None:
    """L8: one record per patient keeps the history together; the words name no MRN."""
    store.create_patient("MRN-1", 70.0, actor="clinician", at=T0)
    with pytest.raises(InfusionConflictError, match="a patient with this MRN exists") as refused:
        store.create_patient("MRN-1", 80.0, actor="clinician", at=T0)
    assert (refused.value.rule, refused.value.constraint) == ("L8", "uq_patient_mrn")
    assert "MRN-1" not in str(refused.value)
