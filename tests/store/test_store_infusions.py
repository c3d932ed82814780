"""Infusions in the store: the machine's state round-trips exactly (A4), also across a restart;
a decision is committed in one transaction (architecture.md, "One press of the reaction
button"); recovery lists what is supervised (A4, I4/I5 windows); the course's history comes
from the stored infusions and the entered ones (L8, I6, I8, I10)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from store_cases import T0, planned, reaction, running, started

from pumpctl.core.history import InfusionRecord, ReactionRecord, Sign
from pumpctl.core.machine import (
    InfusionPhase,
    InfusionState,
    ReactionReported,
    Stop,
    decide,
    infusion_record,
)
from pumpctl.core.rules import Rule
from pumpctl.store import CommandFate, LedgerEntry, LedgerError, Store, StoreError, migrate


def course(store: Store, mrn: str = "MRN-1") -> int:
    patient = store.create_patient(mrn, 70.0, actor="clinician", at=T0)
    return store.create_course(patient, "daratumumab", actor="clinician", at=T0)


def stored_text(store: Store, infusion_id: int) -> str:
    with store.engine.connect() as connection:
        value = connection.execute(
            text("SELECT state FROM infusion WHERE id = :i"), {"i": infusion_id}
        )
        return str(value.scalar_one())


def test_A4_a_saved_state_round_trips_exactly_also_after_a_restart(database_url: str) -> None:
    migrate.upgrade(database_url)
    with Store.open(database_url) as store:
        infusion_id = store.create_infusion(course(store), "pump-1", planned(), at=T0)
        state = running(store.load_infusion(infusion_id).state)
        reported = reaction(state, 2, T0 + timedelta(minutes=40))
        store.save_infusion(
            infusion_id, reported.state, reported.audit, at=T0 + timedelta(minutes=40)
        )
        assert store.load_infusion(infusion_id).state == reported.state
    with Store.open(database_url) as reopened:  # a new process's store: nothing cached
        loaded = reopened.load_infusion(infusion_id)
        assert loaded.state == reported.state
        assert (
            loaded.state.to_json() == reported.state.to_json() == stored_text(reopened, infusion_id)
        )
        assert InfusionState.from_json(stored_text(reopened, infusion_id)) == reported.state
        assert (loaded.phase, loaded.pump_id) == ("paused", "pump-1")
        assert [i.id for i in reopened.live_infusions()] == [infusion_id]


def test_I1_the_reaction_press_commits_reaction_state_audit_and_ledger_together(
    store: Store,
) -> None:
    infusion_id = store.create_infusion(course(store), "pump-1", planned(), at=T0)
    state = running(store.load_infusion(infusion_id).state)
    at = T0 + timedelta(minutes=40)
    decision = reaction(state, 3, at)
    (stop,) = decision.pump_commands
    ledger = [LedgerEntry.of(stop, ledger_id="L-1", pump_id="pump-1", sent_at=at, sent_wire_s=12.5)]
    ids = store.save_infusion(
        infusion_id, decision.state, decision.audit, ledger, at=at, actor="nurse"
    )
    assert [r.type for r in store.audit_of(infusion_id)][-len(ids) :] == [
        str(a.type) for a in decision.audit
    ]
    (row,) = store.reactions(infusion_id)
    assert (row.grade, row.max_grade, row.signs, row.closed) == (3, 3, ["other"], False)
    assert row.rate_ml_h == 50.0  # I10: the rate at onset
    command = store.command("L-1")
    assert (command.op, command.fate, command.infusion_id, command.command_id) == (
        "stop",
        "pending",
        infusion_id,
        stop.id,
    )
    assert store.load_infusion(infusion_id).phase == InfusionPhase.STOPPED_OBSERVATION


def test_a_decision_that_cannot_be_stored_whole_leaves_nothing(store: Store) -> None:
    infusion_id = store.create_infusion(course(store), "pump-1", planned(), at=T0)
    before = store.load_infusion(infusion_id)
    audit_before = store.audit_since(0)
    decision = started(before.state)
    taken = LedgerEntry.of(decision.pump_commands[0], ledger_id="L-1", pump_id="pump-1", sent_at=T0)
    store.record_command(taken)
    with pytest.raises(IntegrityError, match="command_ledger"):  # the same ledger id twice
        store.save_infusion(infusion_id, decision.state, decision.audit, [taken], at=T0)
    assert store.load_infusion(infusion_id) == before
    assert store.audit_since(0) == audit_before


def test_A3_command_fates(store: Store) -> None:
    decision = started(planned())
    first, second = decision.pump_commands[:2]
    for ledger_id, command in (("L-1", first), ("L-2", second)):
        store.record_command(LedgerEntry.of(command, ledger_id=ledger_id, pump_id="p", sent_at=T0))
    store.record_fate("L-1", CommandFate.CONFIRMED, at=T0 + timedelta(seconds=1))
    store.record_fate("L-2", "unconfirmed", at=T0 + timedelta(seconds=2), detail="no read-back")
    store.record_fate("L-2", "confirmed", at=T0 + timedelta(seconds=3))  # a late read-back
    assert store.command("L-2").fate_at == T0 + timedelta(seconds=3)
    with pytest.raises(LedgerError, match="confirmed cannot become denied"):
        store.record_fate("L-1", "denied", at=T0 + timedelta(seconds=4))
    with pytest.raises(LedgerError, match="taken"):
        store.record_command(LedgerEntry.of(first, ledger_id="L-1", pump_id="p", sent_at=T0))


def test_A4_recovery_keeps_an_ended_infusion_whose_I5_window_is_open(store: Store) -> None:
    infusion_id = store.create_infusion(course(store), "pump-1", planned(), at=T0)
    state = running(store.load_infusion(infusion_id).state)
    grade3 = reaction(state, 3, T0 + timedelta(minutes=40))
    stop = decide(grade3.state, Stop(actor="nurse", reason="family asked"), T0 + timedelta(hours=1))
    assert stop.state.terminal
    assert stop.state.supervised  # the I5 window still runs
    store.save_infusion(infusion_id, stop.state, stop.audit, at=T0 + timedelta(hours=1))
    assert [i.id for i in store.live_infusions()] == [infusion_id]
    # the pump and the course are free all the same: the infusion is over
    other = store.create_infusion(course(store, "MRN-2"), "pump-1", planned(), at=T0)
    assert [i.id for i in store.live_infusions()] == [infusion_id, other]


def test_I8_a_withdrawal_in_a_state_withdraws_the_course(store: Store) -> None:
    c = course(store)
    infusion_id = store.create_infusion(c, "pump-1", planned(), at=T0)
    state = running(store.load_infusion(infusion_id).state)
    edema = decide(
        state,
        ReactionReported(grade=2, signs=frozenset({Sign.LARYNGEAL_EDEMA}), actor="nurse"),
        T0 + timedelta(minutes=30),
    )
    assert edema.state.phase is InfusionPhase.WITHDRAWN
    store.save_infusion(infusion_id, edema.state, edema.audit, at=T0 + timedelta(minutes=30))
    history = store.course_history(c)
    assert history.withdrawn
    assert history.infusions == (infusion_record(edema.state),)
    # planned from the course as it was before the withdrawal: the store still refuses it
    before = history.model_copy(update={"withdrawn": False, "withdrawn_reason": None})
    with pytest.raises(StoreError, match="I8"):
        store.create_infusion(c, "pump-2", planned(2, course=before), at=T0)


def test_L8_course_history_is_the_stored_infusions_and_the_entered_ones(store: Store) -> None:
    c = course(store)
    elsewhere = InfusionRecord(
        infusion_number=1,
        highest_rate_ml_h=150.0,
        given_elsewhere=True,
        reactions=(
            ReactionRecord(
                grade=1, max_grade=1, rate_ml_h=100.0, running_min=70.0, infusion_number=1
            ),
        ),
    )
    store.enter_history(c, elsewhere, actor="dr-a", at=T0)
    assert store.audit_since(0)[-1].rule == Rule.L8
    with pytest.raises(StoreError, match="already holds infusion 1"):
        store.enter_history(c, elsewhere, actor="dr-a", at=T0)
    history = store.course_history(c)
    second = store.create_infusion(c, "pump-1", planned(2, course=history), at=T0)
    state = running(store.load_infusion(second).state)
    stop = decide(state, Stop(actor="nurse", reason="line fault"), T0 + timedelta(hours=2))
    store.save_infusion(second, stop.state, stop.audit, at=T0 + timedelta(hours=2))
    assert store.course_history(c).infusions == (elsewhere, infusion_record(stop.state))
