"""The audit trail: the core's AuditEvent stored as is (type, rule, clinical time, data), and
append-only in the database itself: an UPDATE and a DELETE both fail, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from store_cases import T0, planned, started

from pumpctl.core.history import Sign
from pumpctl.core.machine import AuditEvent, AuditType
from pumpctl.core.rules import Rule
from pumpctl.store import Store, migrate

WALL = datetime(2026, 3, 2, 9, 0, 7, tzinfo=UTC)


def audit_rows(store: Store) -> list[tuple[object, ...]]:
    with store.engine.connect() as connection:
        query = text("SELECT id, type, rule, actor, data FROM audit ORDER BY id")
        return [tuple(row) for row in connection.execute(query)]


def test_a_decision_s_audit_events_are_stored_with_their_facts(store: Store) -> None:
    decision = started(planned())
    (first, *_) = ids = store.append_audit(decision.audit)
    assert len(ids) == len(decision.audit)
    (row,) = store.audit_since(first - 1, limit=1)
    event = decision.audit[0]
    assert (row.id, row.type, row.rule, row.at) == (first, "started", "L3", event.at)
    assert row.actor == "nurse"  # the event's own data names the actor
    assert row.data["rate_ml_h"] == event.data["rate_ml_h"]
    assert row.data["decision"]["bound_by"]["rule"] == "L1"  # enums stored as their values


def test_datetimes_sets_and_enums_in_data_become_json(store: Store) -> None:
    onset = T0 + timedelta(minutes=5)
    event = AuditEvent(
        type=AuditType.REACTION,
        rule=Rule.I1,
        at=T0,
        data={"onset_at": onset, "signs": frozenset({Sign.OTHER, Sign.BRONCHOSPASM})},
    )
    (audit_id,) = store.append_audit([event], actor="nurse-b")
    (row,) = store.audit_since(audit_id - 1)
    assert row.data == {"onset_at": onset.isoformat(), "signs": ["bronchospasm", "other"]}
    assert row.actor == "nurse-b"


def test_data_json_cannot_say_is_refused_and_nothing_is_written(store: Store) -> None:
    event = AuditEvent(type=AuditType.STOPPED, rule=None, at=T0, data={"what": object()})
    with pytest.raises(TypeError, match="cannot store a object"):
        store.append_audit([AuditEvent(type=AuditType.STOPPED, rule=None, at=T0), event])
    assert store.audit_since(0) == []


def test_audit_since_replays_in_order_and_pages(store: Store) -> None:
    events = [
        AuditEvent(type=AuditType.STOPPED, rule=None, at=T0 + timedelta(seconds=i))
        for i in range(5)
    ]
    ids = store.append_audit(events, actor="nurse")
    assert list(ids) == sorted(ids)
    assert [r.id for r in store.audit_since(ids[1], limit=2)] == list(ids[2:4])
    assert [r.id for r in store.audit_since(ids[-1])] == []


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit SET type = 'tampered', data = '{}'", "DELETE FROM audit"],
    ids=["update", "delete"],
)
def test_the_audit_trail_is_append_only_in_the_database(store: Store, statement: str) -> None:
    store.append_audit(started(planned()).audit)
    before = audit_rows(store)
    with pytest.raises(IntegrityError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text(statement))
    assert audit_rows(store) == before


@pytest.mark.postgres
def test_postgres_refuses_truncate_too(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    with Store.open(postgres_url) as store:
        store.append_audit(started(planned()).audit)
        before = audit_rows(store)
        with pytest.raises(IntegrityError, match="append-only"), store.engine.begin() as db:
            db.execute(text("TRUNCATE audit"))
        assert audit_rows(store) == before


def test_wall_time_is_the_store_s_and_clinical_time_the_event_s(database_url: str) -> None:
    migrate.upgrade(database_url)
    with Store.open(database_url, wall_clock=lambda: WALL) as store:
        (audit_id,) = store.append_audit([AuditEvent(type=AuditType.STOPPED, rule=None, at=T0)])
        (row,) = store.audit_since(audit_id - 1)
    assert (row.at, row.wall_at) == (T0, WALL)
    assert row.wall_at.utcoffset() == timedelta(0)
