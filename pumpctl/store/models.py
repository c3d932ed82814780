"""The store's tables, as SQLModel table classes (schema only: no API schema lives here).

The first migration (`migrations/versions/v0001_first_schema.py`) creates exactly these tables;
`tests/store/test_migrations.py` compares the two on both databases. Constraints the rules need
are the database's own, so no code path can get round them:

- `infusion`: an infusion number is unique within a course, per day of a split dose (L8,
  the Clarifications "Records and input"); a course and a pump each have at most one live
  infusion (partial unique indexes over the phases that are not over). A cancelled infusion
  (never started) gives its number back: numbering counts infusions given (L4, L5).
- `audit`: append-only (A4, the audit trail of every rule): triggers refuse UPDATE and DELETE;
  each row hash-chained to the one before it, so tampering that gets round the triggers shows
  (`chain`, `pumpctl audit verify`).
- `course.protocol`: fixed for the course (Clarifications, "Records and input"): a trigger
  refuses a change.
- `account`, `api_token` (migration 0004): personal accounts and machines' tokens; a password
  only as its Argon2id hash, a token only as its SHA-256 (pumpctl/credentials.py).

The infusion's state is the machine's `InfusionState.to_json()` text, kept as is (A4); the
`phase` and `supervised` columns are copies of it for the indexes and for recovery.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Index, MetaData, Text, text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from pumpctl.core.machine.state import TERMINAL_PHASES, InfusionPhase
from pumpctl.rowid import MAX_ROW_ID
from pumpctl.store.sqltypes import UtcDateTime

__all__ = [
    "ACCOUNT_ROLES",
    "CANCELLED",
    "COURSE_STATES",
    "FATES",
    "LIVE_WHERE",
    "MAX_ROW_ID",
    "NOT_CANCELLED_WHERE",
    "OVER_PHASES",
    "PHASES",
    "Account",
    "Alarm",
    "ApiToken",
    "Audit",
    "CommandLedger",
    "Course",
    "HistoryEntry",
    "Infusion",
    "Patient",
    "Reaction",
    "StoreTable",
    "metadata",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

#: A planned infusion a clinician cancelled before it started (not a phase of the machine).
CANCELLED = "cancelled"
PHASES = (*(p.value for p in InfusionPhase), CANCELLED)
#: Phases of an infusion that is over: not live for the one-per-pump, one-per-course indexes.
OVER_PHASES = (*sorted(p.value for p in TERMINAL_PHASES), CANCELLED)
COURSE_STATES = ("active", "withdrawn")
FATES = ("pending", "confirmed", "denied", "unconfirmed")
#: The roles an account may hold (pumpctl.settings.Role's values; interfaces.md, section 3).
ACCOUNT_ROLES = ("viewer", "nurse", "clinician", "admin")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


LIVE_WHERE = f"phase NOT IN {_in(OVER_PHASES)}"
NOT_CANCELLED_WHERE = f"phase <> '{CANCELLED}'"


def _partial(where: str) -> dict[str, Any]:
    clause = text(where)
    return {"sqlite_where": clause, "postgresql_where": clause}


class StoreTable(SQLModel, registry=registry(metadata=metadata)):
    """Base of the store's tables: their own metadata, with named constraints."""


class Patient(StoreTable, table=True):
    __tablename__ = "patient"
    __table_args__ = (CheckConstraint("weight_kg > 0 AND weight_kg < 500", name="weight_kg"),)

    id: int | None = Field(default=None, primary_key=True)
    mrn: str = Field(max_length=64, unique=True)
    weight_kg: float
    created_at: datetime = Field(sa_type=UtcDateTime)  # wall time


class Course(StoreTable, table=True):
    __tablename__ = "course"
    __table_args__ = (CheckConstraint(f"course_state IN {_in(COURSE_STATES)}", name="state"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = Field(foreign_key="patient.id", index=True)
    protocol: str = Field(max_length=100)
    course_state: str = Field(default="active", max_length=16)
    withdrawn_reason: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(sa_type=UtcDateTime)  # wall time


class HistoryEntry(StoreTable, table=True):
    """L8: an earlier infusion given elsewhere, as a clinician entered it (an InfusionRecord)."""

    __tablename__ = "history_entry"

    id: int | None = Field(default=None, primary_key=True)
    course_id: int = Field(foreign_key="course.id", index=True)
    infusion_number: int
    day: int | None = None
    record: str = Field(sa_type=Text)  # InfusionRecord.model_dump_json()
    entered_by: str = Field(max_length=100)
    entered_at: datetime = Field(sa_type=UtcDateTime)  # clinical time


class Infusion(StoreTable, table=True):
    __tablename__ = "infusion"
    __table_args__ = (
        CheckConstraint(f"phase IN {_in(PHASES)}", name="phase"),
        CheckConstraint("day IS NULL OR day IN (1, 2)", name="day"),
        CheckConstraint("infusion_number >= 1", name="infusion_number"),
        # L8: unique per course, and per split-dose day when there is one
        Index(
            "uq_infusion_number",
            "course_id",
            "infusion_number",
            unique=True,
            **_partial(f"day IS NULL AND {NOT_CANCELLED_WHERE}"),
        ),
        Index(
            "uq_infusion_number_day",
            "course_id",
            "infusion_number",
            "day",
            unique=True,
            **_partial(f"day IS NOT NULL AND {NOT_CANCELLED_WHERE}"),
        ),
        Index("uq_infusion_live_pump", "pump_id", unique=True, **_partial(LIVE_WHERE)),
        Index("uq_infusion_live_course", "course_id", unique=True, **_partial(LIVE_WHERE)),
        Index("ix_infusion_supervised", "supervised"),
    )

    id: int | None = Field(default=None, primary_key=True)
    course_id: int = Field(foreign_key="course.id")
    pump_id: str = Field(max_length=100)
    infusion_number: int
    day: int | None = None
    phase: str = Field(max_length=32)
    supervised: bool  # InfusionState.supervised (and not cancelled): recovery's list (A4)
    state: str = Field(sa_type=Text)  # InfusionState.to_json(), as is (A4)
    cancel_reason: str | None = Field(default=None, sa_type=Text)
    weight_kg: float | None = None  # D1: the weight the dose was computed from
    dose_mg: float | None = None  # D1
    premedication_at: datetime | None = Field(default=None, sa_type=UtcDateTime)  # D3, clinical
    created_at: datetime = Field(sa_type=UtcDateTime)  # clinical time
    created_wall_at: datetime = Field(sa_type=UtcDateTime)
    updated_at: datetime = Field(sa_type=UtcDateTime)  # clinical time
    updated_wall_at: datetime = Field(sa_type=UtcDateTime)


class Reaction(StoreTable, table=True):
    """I10: a reaction of an infusion, as its state records it (`seq`: its place there)."""

    __tablename__ = "reaction"
    __table_args__ = (
        CheckConstraint("grade BETWEEN 1 AND 4 AND max_grade BETWEEN grade AND 4", name="grade"),
        Index("uq_reaction_seq", "infusion_id", "seq", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    infusion_id: int = Field(foreign_key="infusion.id")
    seq: int
    grade: int
    max_grade: int
    signs: list[str] = Field(sa_type=JSON)
    onset_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    rate_ml_h: float
    running_min: float
    after_completion: bool
    closed: bool  # False while it is the reaction of the current stop (I5)


class Alarm(StoreTable, table=True):
    __tablename__ = "alarm"
    __table_args__ = (
        CheckConstraint("infusion_id IS NOT NULL OR pump_id IS NOT NULL", name="owner"),
    )

    id: int | None = Field(default=None, primary_key=True)
    infusion_id: int | None = Field(default=None, foreign_key="infusion.id", index=True)
    pump_id: str | None = Field(default=None, max_length=100, index=True)
    kind: str = Field(max_length=64)
    rule: str | None = Field(default=None, max_length=8)
    message: str = Field(sa_type=Text)
    raised_at: datetime = Field(sa_type=UtcDateTime)  # clinical time
    cleared_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    cleared_by: str | None = Field(default=None, max_length=100)


class CommandLedger(StoreTable, table=True):
    """A3: every command sent to a pump, under the controller's ledger id, and its fate."""

    __tablename__ = "command_ledger"
    __table_args__ = (
        CheckConstraint(f"fate IN {_in(FATES)}", name="fate"),
        Index("uq_command_ledger_command", "infusion_id", "command_id", unique=True),
    )

    id: str = Field(primary_key=True, max_length=100)  # the ledger id the driver carries
    pump_id: str = Field(max_length=100, index=True)
    infusion_id: int | None = Field(default=None, foreign_key="infusion.id")
    command_id: int | None = None  # the machine's id of the command (A3)
    op: str = Field(max_length=32)
    rate_ml_h: float | None = None
    volume_ml: float | None = None
    sent_at: datetime = Field(sa_type=UtcDateTime)  # clinical time
    sent_wire_s: float | None = None  # the event loop's clock (wire time), for latencies
    fate: str = Field(default="pending", max_length=16)
    fate_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    detail: str | None = Field(default=None, sa_type=Text)


class Audit(StoreTable, table=True):
    """The audit trail: append-only (triggers of the first migration refuse UPDATE, DELETE) and
    hash-chained (migration 0003; `chain`): `hash` is the SHA-256 of the row's content and
    `prev_hash`, the hash of the row before it (`chain.GENESIS` for the first)."""

    __tablename__ = "audit"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (Last-Event-ID)

    id: int | None = Field(default=None, primary_key=True)
    infusion_id: int | None = Field(default=None, foreign_key="infusion.id", index=True)
    at: datetime = Field(sa_type=UtcDateTime)  # clinical time
    wall_at: datetime = Field(sa_type=UtcDateTime)
    type: str = Field(max_length=64)
    actor: str | None = Field(default=None, max_length=100)
    rule: str | None = Field(default=None, max_length=8)
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class Account(StoreTable, table=True):
    """A person's or a machine's account: its name is the audit's actor. `password_hash` is
    Argon2id's PHC string (None: a machine's, which never signs in with a password);
    `changed_at` moves with every change of password, role or state (a session made before
    it ends)."""

    __tablename__ = "account"
    __table_args__ = (CheckConstraint(f"role IN {_in(ACCOUNT_ROLES)}", name="role"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    password_hash: str | None = Field(default=None, sa_type=Text)
    disabled: bool = False
    created_at: datetime = Field(sa_type=UtcDateTime)  # wall time
    changed_at: datetime = Field(sa_type=UtcDateTime)  # wall time


class ApiToken(StoreTable, table=True):
    """A machine's bearer token for an account: kept as its SHA-256 (`digest`), never itself;
    refused once `revoked_at` is set."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    label: str = Field(default="", max_length=100)
    digest: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime)  # wall time
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
