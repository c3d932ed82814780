"""A clinical audit trail as the store writes it (`clinical_trail`), and forging it as someone
who can write the database would (issue 20, point 3): one transaction that drops the
append-only triggers, rewrites, deletes or re-orders rows (optionally recomputing the whole
chain with the public scheme), and re-creates the triggers. On SQLite and PostgreSQL, through a
connection of its own (the service may be running)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from pumpctl.core.history import CourseState, Sign
from pumpctl.core.machine import (
    AuditEvent,
    AuditType,
    CommandConfirmed,
    RaiseAlarm,
    ReactionReported,
    SetRate,
    SetVtbi,
    Start,
    decide,
    initial_state,
)
from pumpctl.core.machine.events import PumpAlarmRaised
from pumpctl.core.rules import Rule
from pumpctl.protocols import load_protocol
from pumpctl.store import Store, migrate
from pumpctl.store.chain import GENESIS, ChainHead, Verification, chain_rows, row_hash, verify
from pumpctl.store.engine import make_engine

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WALL = datetime(2026, 3, 2, 9, 0, 7, tzinfo=UTC)


@dataclass(frozen=True)
class Trail:
    """A clinical trail as the store wrote it, and the rows the forgery of issue 20 aims at."""

    url: str
    reaction_row: int  # the grade 3 reaction (I1)
    alarm_row: int  # the pump's occlusion alarm (A1)
    paused_row: int  # the infusion stopped for observation (I5)
    head: ChainHead  # the chain's end, as the store wrote it


def clinical_trail(url: str) -> Trail:
    """Migrated, then through the store and the rules core: a patient, a course, an infusion
    started and running, an occlusion alarm (A1), a grade 3 reaction (I1, the infusion stopped
    for observation, I5), and a row after it."""
    migrate.upgrade(url)
    protocol = load_protocol("daratumumab")
    state = initial_state(
        protocol,
        infusion_number=1,
        course=CourseState(),
        bag_prepared_at=T0 - timedelta(minutes=30),
    )
    with Store.open(url, wall_clock=lambda: WALL) as store:
        patient = store.create_patient("MRN-1", 70.0, actor="carl", at=T0)
        course = store.create_course(patient, "daratumumab", actor="carl", at=T0)
        infusion = store.create_infusion(course, "pump-1", state, at=T0, actor="carl")
        start = decide(state, Start(actor="carl", course=state.course), T0)
        store.save_infusion(infusion, start.state, start.audit, at=T0, actor="carl")
        now, rate = start.state, 0.0
        for command in start.pump_commands:
            rate = command.rate_ml_h if isinstance(command, SetRate) else rate
            confirmed = CommandConfirmed(
                command_id=command.id,
                running=command.op == "start",
                rate_ml_h=rate,
                volume_infused_ml=0.0,
                vtbi_ml=command.volume_ml if isinstance(command, SetVtbi) else None,
            )
            step = decide(now, confirmed, T0)
            store.save_infusion(infusion, step.state, step.audit, at=T0)
            now = step.state
        at = T0 + timedelta(minutes=10)
        alarmed = decide(now, PumpAlarmRaised(alarm="occlusion"), at)
        alarms = [c for c in alarmed.commands if isinstance(c, RaiseAlarm)]
        store.save_infusion(infusion, alarmed.state, alarmed.audit, at=at, alarms=alarms)
        at = T0 + timedelta(minutes=12)
        said = ReactionReported(grade=3, signs=frozenset({Sign.OTHER}), actor="nina")
        reacted = decide(alarmed.state, said, at)
        assert reacted.refusal is None, reacted.refusal
        store.save_infusion(infusion, reacted.state, reacted.audit, at=at, actor="nina")
        later = AuditEvent(type=AuditType.STOPPED, rule=Rule.A6, at=T0 + timedelta(minutes=13))
        store.append_audit([later], infusion_id=infusion, actor="nina")
        head = store.appended_head
    assert head is not None
    (reaction_row,) = audit_ids(url, type="reaction")
    (alarm_row,) = audit_ids(url, type="pump_alarm")
    (paused_row,) = audit_ids(url, type="stopped_observation")
    return Trail(url, reaction_row, alarm_row, paused_row, head)


def verified(url: str, *heads: ChainHead) -> Verification:
    """A whole verification of the trail at `url` (heads from "the journal")."""
    engine = make_engine(url)
    try:
        return verify(engine, heads=heads, source="the journal")
    finally:
        engine.dispose()


# the first migration's triggers, as it makes them
_SQLITE_DROP = ("DROP TRIGGER audit_no_update", "DROP TRIGGER audit_no_delete")
_SQLITE_CREATE = (
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused'); END""",
)
_POSTGRES_DROP = ("DROP TRIGGER audit_append_only ON audit",)
_POSTGRES_CREATE = (
    """CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION pumpctl_audit_append_only()""",
)


@contextmanager
def forging(url: str) -> Iterator[Connection]:
    """One transaction with the audit table's triggers dropped; re-created before it commits."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            sqlite = connection.dialect.name == "sqlite"
            for statement in _SQLITE_DROP if sqlite else _POSTGRES_DROP:
                connection.execute(text(statement))
            yield connection
            for statement in _SQLITE_CREATE if sqlite else _POSTGRES_CREATE:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def audit_ids(url: str, **where: Any) -> list[int]:
    """The ids of the audit rows whose columns equal `where`, in order."""
    clause = " AND ".join(f"{k} = :{k}" for k in where) or "1 = 1"
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            query = text(f"SELECT id FROM audit WHERE {clause} ORDER BY id")  # noqa: S608 - our names
            return [int(i) for (i,) in connection.execute(query, where)]
    finally:
        engine.dispose()


def rewrite_reaction(connection: Connection, audit_id: int, *, actor: str, grade: int) -> None:
    """The reaction's audit row says another actor and grade (and the reaction table too)."""
    row = connection.execute(
        text("SELECT data FROM audit WHERE id = :id"), {"id": audit_id}
    ).scalar_one()
    data = _loaded(row)
    data["reaction"]["grade"] = data["reaction"]["max_grade"] = grade
    data["actor"] = actor
    connection.execute(
        text("UPDATE audit SET actor = :actor, data = :data WHERE id = :id"),
        {"actor": actor, "data": _dumped(data), "id": audit_id},
    )
    connection.execute(
        text("UPDATE reaction SET grade = :g, max_grade = :g WHERE grade = 3"), {"g": grade}
    )


def delete_rows(connection: Connection, *ids: int) -> None:
    for audit_id in ids:
        connection.execute(text("DELETE FROM audit WHERE id = :id"), {"id": audit_id})


def swap_content(connection: Connection, first: int, second: int) -> None:
    """Two rows exchange every column but their ids and hashes (a re-ordering)."""
    columns = ("infusion_id", "at", "wall_at", "type", "actor", "rule", "data")
    listed = ", ".join(columns)
    query = text(f"SELECT {listed} FROM audit WHERE id = :id")  # noqa: S608 - our names
    a = connection.execute(query, {"id": first}).one()
    b = connection.execute(query, {"id": second}).one()
    assign = ", ".join(f"{c} = :{c}" for c in columns)
    update = text(f"UPDATE audit SET {assign} WHERE id = :id")  # noqa: S608 - our names
    for target, values in ((first, b), (second, a)):
        params = dict(zip(columns, values, strict=True))
        params["data"] = _dumped(_loaded(params["data"]))
        connection.execute(update, {**params, "id": target})


def rechain(connection: Connection) -> None:
    """Every row's hashes recomputed in id order with the public scheme: the chain holds again,
    whatever was edited (a rewrite of the whole chain)."""
    prev = GENESIS
    for row in list(chain_rows(connection)):
        digest = row_hash(
            id=row.id,
            infusion_id=row.infusion_id,
            at=row.at,
            wall_at=row.wall_at,
            type=row.type,
            actor=row.actor,
            rule=row.rule,
            data=row.data,
            prev_hash=prev,
        )
        connection.execute(
            text("UPDATE audit SET prev_hash = :p, hash = :h WHERE id = :id"),
            {"p": prev, "h": digest, "id": row.id},
        )
        prev = digest


def _loaded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _dumped(value: Any) -> str:
    return json.dumps(value)
