"""The audit trail: append-only and hash-chained (`chain`), the one place audit rows are
inserted (`TrailRepository._audit`), each chained to the row before it in the transaction that
makes the change it records.

Every audit row names the rule it serves (`_store_audit`), but the accounts' rows (`AccountAudit`:
no infusion, `rule` null; issue 20). A row's actor is the one given, else its event's
`data["actor"]`; its data is plain JSON, refused before anything is written when the encoder
cannot say it. `latest_clinical_time` is where a virtual clock restarted on this store starts,
never before it. This repository sits below `patients` and `infusions`: both audit their
changes through `_audit` and `_store_audit`, and it imports neither.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlmodel import Session, col, select

from pumpctl.core.machine.outputs import AuditEvent, AuditType
from pumpctl.core.rules import Rule
from pumpctl.store.base import _APPENDED, StoreBase, _rule
from pumpctl.store.chain import GENESIS, ChainHead, append_ids, row_hash
from pumpctl.store.models import Audit
from pumpctl.store.sqltypes import json_dumps

__all__ = ["AccountAudit", "AccountEvent", "StoreAudit", "TrailRepository"]


class StoreAudit(StrEnum):
    """Audit events the store writes for changes that are not the machine's decisions."""

    PATIENT_CREATED = "patient_created"  # L8
    COURSE_CREATED = "course_created"  # L8
    HISTORY_ENTERED = "history_entered"  # L8
    COURSE_REINSTATED = "course_reinstated"  # I8
    INFUSION_CREATED = "infusion_created"  # L4
    INFUSION_CANCELLED = "infusion_cancelled"  # L8
    PREMEDICATION = "premedication"  # D3: premedication given, as recorded by a nurse
    START_GATE = "start_gate"  # D2, D3: a gate's decision at a start (allowed, or overridden)
    CLOCK_STEP = "clock_step"  # A7: the wall clock stepped; clinical time took no step


class AccountAudit(StrEnum):
    """Audit events of the accounts (issue 20; architecture.md, "Personal accounts, sessions
    and machine tokens"): no infusion and no rule of clinical-rules.md (`rule` null). The kernel
    writes the sign-ins' (at clinical time), `pumpctl user` the changes (`at` its wall clock:
    it has no clinical clock). Never a password, a token or a name that is no account."""

    SIGNED_IN = "signed_in"
    SIGNED_OUT = "signed_out"
    SIGN_IN_REFUSED = "sign_in_refused"  # a password checked and refused
    SIGN_IN_LOCKED = "sign_in_locked"  # a name or an address locked out (api/throttle.py)
    ACCOUNT_CHANGED = "account_changed"  # `pumpctl user`: added, password, disabled, tokens


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """One audit row of the accounts (`AccountAudit`), as `Store._audit` takes it."""

    type: AccountAudit
    at: datetime
    data: Mapping[str, object]
    rule: None = None


def _actor(event: AuditEvent | AccountEvent, actor: str | None) -> str | None:
    if actor is not None:
        return actor
    named = event.data.get("actor")
    return named if isinstance(named, str) else None


def _json_data(data: Mapping[str, object]) -> dict[str, object]:
    """Audit data as the database will hold it (plain JSON), before anything is written: the
    encoder refuses what it cannot say (TypeError)."""
    value = json.loads(json_dumps(data))
    if not isinstance(value, dict):  # pragma: no cover - a mapping encodes as an object
        raise TypeError("audit data must be a mapping")
    return value


class TrailRepository(StoreBase):
    """The audit trail: its one insert (`_audit`), the accounts' rows and its reads."""

    def _audit(
        self,
        session: Session,
        events: Iterable[AuditEvent | AccountEvent],
        *,
        infusion_id: int | None,
        actor: str | None,
    ) -> tuple[int, ...]:
        """The one place audit rows are inserted: each chained to the row before it, in this
        transaction (`chain.append_ids` holds the chain's end until it commits)."""
        wall_at = self._wall_clock()
        given = [(event, _json_data(event.data)) for event in events]  # refused before anything
        if not given:
            return ()
        tail, ids = append_ids(session.connection(), len(given))
        prev = GENESIS if tail is None else tail.hash
        rows = []
        for audit_id, (event, data) in zip(ids, given, strict=True):
            row = Audit(
                id=audit_id,
                infusion_id=infusion_id,
                at=event.at,
                wall_at=wall_at,
                type=str(event.type),
                actor=_actor(event, actor),
                rule=_rule(event.rule),
                data=data,
                prev_hash=prev,
                hash="",
            )
            row.hash = prev = row_hash(
                id=audit_id,
                infusion_id=row.infusion_id,
                at=row.at,
                wall_at=row.wall_at,
                type=row.type,
                actor=row.actor,
                rule=row.rule,
                data=row.data,
                prev_hash=row.prev_hash,
            )
            rows.append(row)
        session.add_all(rows)
        session.flush()
        session.info[_APPENDED] = ChainHead(ids[-1], prev)
        return tuple(ids)

    def _store_audit(
        self,
        session: Session,
        kind: StoreAudit | AuditType,
        *,
        at: datetime,
        actor: str | None,
        rule: Rule,
        infusion_id: int | None = None,
        **data: object,
    ) -> None:
        """One audit row for a change that is not a machine's decision; `rule` is the rule it
        serves (every audit row names one)."""
        event = AuditEvent(type=kind, rule=rule, at=at, data=data)  # type: ignore[arg-type]
        self._audit(session, [event], infusion_id=infusion_id, actor=actor)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction, ordered with every other appender of the audit chain, in
        this process or another (SQLite: `BEGIN IMMEDIATE`, the database's write lock from its
        first statement; PostgreSQL: the chain's advisory lock, taken when a row is appended):
        `pumpctl user`'s changes and their rows (`audit_account`), beside a running kernel."""
        with self._write() as session:
            yield session

    def audit_account(
        self,
        session: Session,
        kind: AccountAudit,
        *,
        actor: str | None,
        at: datetime,
        **data: object,
    ) -> int:
        """One audit row of the accounts in `session`'s transaction (`transaction`); its id.
        `actor`: the account's name, never a name typed that is no account."""
        (row_id,) = self._audit(
            session, [AccountEvent(kind, at, data)], infusion_id=None, actor=actor
        )
        return row_id

    def record_account(
        self, kind: AccountAudit, *, actor: str | None, at: datetime, **data: object
    ) -> int:
        """One audit row of the accounts in a transaction of its own (the kernel's sign-ins,
        on the store's writer thread); its id."""
        with self._write() as session:
            return self.audit_account(session, kind, actor=actor, at=at, **data)

    def append_audit(
        self,
        events: Sequence[AuditEvent],
        *,
        infusion_id: int | None = None,
        actor: str | None = None,
    ) -> tuple[int, ...]:
        """Append audit events (their actor: `actor`, else the event's `data["actor"]`)."""
        with self._write() as session:
            return self._audit(session, events, infusion_id=infusion_id, actor=actor)

    def audit_since(self, audit_id: int = 0, limit: int = 1000) -> list[Audit]:
        """Audit rows after `audit_id`, oldest first, at most `limit` (Last-Event-ID replay)."""
        with self._read() as session:
            query = select(Audit).where(col(Audit.id) > audit_id).order_by(col(Audit.id))
            return list(session.exec(query.limit(limit)))

    def latest_audit_id(self) -> int:
        """The newest audit row's id (0 when there is none)."""
        with self._read() as session:
            query = select(Audit.id).order_by(col(Audit.id).desc()).limit(1)
            return int(session.exec(query).first() or 0)

    def latest_clinical_time(self) -> datetime | None:
        """The clinical time of the latest audit row (None when there is none): a virtual
        clock restarted on this store starts there, never before it. `pumpctl user`'s rows
        are left out: their `at` is its wall clock, not clinical time."""
        with self._read() as session:
            query = (
                select(Audit.at)
                .where(Audit.type != AccountAudit.ACCOUNT_CHANGED.value)
                .order_by(col(Audit.at).desc())
                .limit(1)
            )
            return session.exec(query).first()

    def audit_of(self, infusion_id: int) -> list[Audit]:
        """The audit trail of one infusion, oldest first."""
        with self._read() as session:
            query = select(Audit).where(Audit.infusion_id == infusion_id)
            return list(session.exec(query.order_by(col(Audit.id))))
