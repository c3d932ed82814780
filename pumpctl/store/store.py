"""The repository the controller uses: one method a transaction, the rules' constraints the
database's own (see `models`).

A reaction press commits the new state, its reaction, the audit events, the ledger rows and
any alarm together (`save_infusion`, one transaction; architecture.md, "One press of the
reaction button"). `live_infusions` is what a restarted controller supervises again (A4):
every infusion not over, or over with an I4/I5 window still open (`InfusionState.supervised`).
`course_history` is the course the planner reads (L4, L5, I6, D3, I8): the infusions stored
here that started (`infusion_record`) and the ones a clinician entered (L8).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Literal, Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col, func, select

from pumpctl.core.course import Withdrawal
from pumpctl.core.history import CourseState, InfusionRecord
from pumpctl.core.machine.outputs import (
    AuditEvent,
    AuditType,
    PumpCommand,
    RaiseAlarm,
    SetRate,
    SetVtbi,
)
from pumpctl.core.machine.state import CommandOp, InfusionPhase, InfusionState, infusion_record
from pumpctl.core.rules import Rule
from pumpctl.store.chain import GENESIS, ChainHead, append_ids, row_hash
from pumpctl.store.engine import BEGIN_OPTION, make_engine
from pumpctl.store.errors import (
    InfusionConflictError,
    LedgerError,
    NotFoundError,
    StoreError,
    not_opened,
)
from pumpctl.store.location import default_database_url
from pumpctl.store.migrate import current_of, head
from pumpctl.store.models import (
    CANCELLED,
    MAX_ROW_ID,
    Alarm,
    Audit,
    CommandLedger,
    Course,
    HistoryEntry,
    Infusion,
    Patient,
    Reaction,
)
from pumpctl.store.sqltypes import json_dumps

__all__ = [
    "AccountAudit",
    "AccountEvent",
    "CommandFate",
    "LedgerEntry",
    "Store",
    "StoreAudit",
    "StoredInfusion",
]


class CommandFate(StrEnum):
    """A3: what became of a command sent to the pump."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    DENIED = "denied"
    UNCONFIRMED = "unconfirmed"


#: Fates a recorded fate may still turn into (a late read-back settles an unconfirmed command).
_NEXT_FATES = {
    CommandFate.PENDING: frozenset(CommandFate) - {CommandFate.PENDING},
    CommandFate.UNCONFIRMED: frozenset({CommandFate.CONFIRMED, CommandFate.DENIED}),
    CommandFate.CONFIRMED: frozenset(),
    CommandFate.DENIED: frozenset(),
}


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


@dataclass(frozen=True, slots=True)
class StoredInfusion:
    """An infusion as stored: its ids, where it runs, and the machine's state (A4)."""

    id: int
    course_id: int
    pump_id: str
    phase: str  # the state's phase, or "cancelled"
    state: InfusionState
    created_at: datetime
    updated_at: datetime
    weight_kg: float | None = None
    dose_mg: float | None = None
    premedication_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A3: one command sent to a pump, under the controller's ledger id (the driver's
    `command_id`), with the machine's id of the command when an infusion's machine sent it."""

    id: str
    pump_id: str
    op: CommandOp
    sent_at: datetime  # clinical time
    command_id: int | None = None
    infusion_id: int | None = None
    rate_ml_h: float | None = None
    volume_ml: float | None = None
    sent_wire_s: float | None = None  # the event loop's clock when it left

    @classmethod
    def of(
        cls,
        command: PumpCommand,
        *,
        ledger_id: str,
        pump_id: str,
        sent_at: datetime,
        infusion_id: int | None = None,
        sent_wire_s: float | None = None,
    ) -> LedgerEntry:
        """The ledger row of a command `decide()` returned."""
        return cls(
            id=ledger_id,
            pump_id=pump_id,
            op=command.op,
            sent_at=sent_at,
            command_id=command.id,
            infusion_id=infusion_id,
            rate_ml_h=command.rate_ml_h if isinstance(command, SetRate) else None,
            volume_ml=command.volume_ml if isinstance(command, SetVtbi) else None,
            sent_wire_s=sent_wire_s,
        )


_Row = TypeVar("_Row", Patient, Course, Infusion, Alarm, CommandLedger)
#: `Session.info` key: the audit row a write transaction appended last (`Store.appended_head`).
_APPENDED = "pumpctl_audit_appended"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _day(day: int | None) -> str:
    return f" day {day}" if day is not None else ""


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?:index '(?P<index>\w+)'|(?P<cols>.+))")
_SQLITE_COLUMNS = {
    "infusion.pump_id": "uq_infusion_live_pump",
    "infusion.course_id": "uq_infusion_live_course",
    "patient.mrn": "uq_patient_mrn",
    "infusion.course_id, infusion.infusion_number": "uq_infusion_number",
    "infusion.course_id, infusion.infusion_number, infusion.day": "uq_infusion_number_day",
    "command_ledger.id": "pk_command_ledger",
    "command_ledger.infusion_id, command_ledger.command_id": "uq_command_ledger_command",
}


def constraint_of(error: IntegrityError) -> str | None:
    """The name of the constraint that refused a statement (PostgreSQL names it; SQLite names
    the index, or the columns of a plain unique index)."""
    name = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
    if isinstance(name, str) and name:
        return name
    found = _SQLITE_UNIQUE.search(str(error.orig))
    if found is None:
        return None
    return found["index"] or _SQLITE_COLUMNS.get(found["cols"].strip())


def _actor(event: AuditEvent | AccountEvent, actor: str | None) -> str | None:
    if actor is not None:
        return actor
    named = event.data.get("actor")
    return named if isinstance(named, str) else None


def _rule(rule: Rule | str | None) -> str | None:
    return None if rule is None else str(rule)


def _json_data(data: Mapping[str, object]) -> dict[str, object]:
    """Audit data as the database will hold it (plain JSON), before anything is written: the
    encoder refuses what it cannot say (TypeError)."""
    value = json.loads(json_dumps(data))
    if not isinstance(value, dict):  # pragma: no cover - a mapping encodes as an object
        raise TypeError("audit data must be a mapping")
    return value


class Store:
    """The store: SQLite (embedded default) or PostgreSQL, migrated to the package's head."""

    def __init__(self, engine: Engine, *, wall_clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._wall_clock = wall_clock
        self._appended: ChainHead | None = None

    @classmethod
    def open(
        cls, url: str | None = None, *, wall_clock: Callable[[], datetime] = _utc_now
    ) -> Store:
        """Open the database at `url` (default: the data directory's SQLite file); it must be
        migrated to the package's head (`pumpctl db upgrade`), else `StoreError`."""
        engine = make_engine(url or default_database_url())
        try:
            at, wanted = current_of(engine), head()
        except DBAPIError as exc:  # a database that does not answer at start: one line
            engine.dispose()
            raise not_opened(engine.url, "opened", exc) from None
        except Exception:
            engine.dispose()
            raise
        if at != wanted:
            shown = engine.url.render_as_string(hide_password=True)
            engine.dispose()
            raise StoreError(
                f"database {shown} is at revision {at or 'none'}, this pumpctl needs {wanted}: "
                "run `pumpctl db upgrade`"
            )
        return cls(engine, wall_clock=wall_clock)

    def close(self) -> None:
        """Close every connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction (SQLite: BEGIN IMMEDIATE); committed when the block ends."""
        with Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session
            appended = session.info.pop(_APPENDED, None)
            if appended is not None:  # committed: the chain's end as this store wrote it
                self._appended = appended

    @property
    def appended_head(self) -> ChainHead | None:
        """The last audit row this store wrote and committed, and its hash (None: none yet):
        what the kernel itself wrote, whatever the database says later."""
        return self._appended

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

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

    @staticmethod
    def _insert(session: Session, row: Patient | Course | HistoryEntry | Infusion | Alarm) -> int:
        """Add a row and flush it; its new id."""
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id

    @staticmethod
    def _get(session: Session, table: type[_Row], row_id: int | str) -> _Row:
        if isinstance(row_id, int) and not 0 < row_id <= MAX_ROW_ID:
            # names no row, and past the column's range the driver raises instead of finding none
            raise NotFoundError(f"no {table.__tablename__} {row_id}")
        row = session.get(table, row_id)
        if row is None:
            raise NotFoundError(f"no {table.__tablename__} {row_id}")
        return row

    # -- patients and courses ---------------------------------------------------------------

    def create_patient(self, mrn: str, weight_kg: float, *, actor: str, at: datetime) -> int:
        """A new patient (the MRN unique); its id."""
        if not mrn.strip():
            raise StoreError("mrn: must not be blank")
        try:
            with self._write() as session:
                patient = Patient(mrn=mrn, weight_kg=weight_kg, created_at=self._wall_clock())
                patient_id = self._insert(session, patient)
                self._store_audit(
                    session,
                    StoreAudit.PATIENT_CREATED,
                    at=at,
                    actor=actor,
                    rule=Rule.L8,  # the record the course's history is kept under
                    patient_id=patient_id,
                )
                return patient_id
        except IntegrityError as exc:
            if constraint_of(exc) == "uq_patient_mrn":
                raise InfusionConflictError(
                    "uq_patient_mrn",
                    "a patient with this MRN exists: one record per patient keeps the whole "
                    "history together (L8)",
                    Rule.L8,
                ) from None
            raise

    def create_course(self, patient_id: int, protocol: str, *, actor: str, at: datetime) -> int:
        """A new course of `patient_id` on `protocol` (fixed for the course); its id."""
        with self._write() as session:
            self._get(session, Patient, patient_id)
            course = Course(patient_id=patient_id, protocol=protocol, created_at=self._wall_clock())
            course_id = self._insert(session, course)
            self._store_audit(
                session,
                StoreAudit.COURSE_CREATED,
                at=at,
                actor=actor,
                rule=Rule.L8,  # the history L4, L5, I6 and D3 read; its protocol fixed
                patient_id=patient_id,
                course_id=course_id,
                protocol=protocol,
            )
            return course_id

    def reinstate_course(self, course_id: int, reason: str, *, actor: str, at: datetime) -> None:
        """I8: a clinician reinstates a withdrawn course, with a reason (audited)."""
        if not reason.strip():
            raise StoreError("reason: must not be blank (I8)", rule=Rule.I8)
        with self._write() as session:
            course = self._get(session, Course, course_id)
            if course.course_state != "withdrawn":
                raise StoreError(f"course {course_id} is not withdrawn (I8)", rule=Rule.I8)
            course.course_state, course.withdrawn_reason = "active", None
            self._store_audit(
                session,
                StoreAudit.COURSE_REINSTATED,
                at=at,
                actor=actor,
                rule=Rule.I8,
                course_id=course_id,
                reason=reason,
            )

    def enter_history(
        self,
        course_id: int,
        record: InfusionRecord,
        *,
        actor: str,
        at: datetime,
        judge: Callable[[CourseState, InfusionRecord], Withdrawal | None] | None = None,
    ) -> int:
        """L8: an infusion given elsewhere, entered by a clinician (audited); its entry id.
        Refused when the course already holds that infusion number (and day). `judge` reads
        the course before the entry and the entry: a withdrawal it names (I3, I6, I7)
        withdraws the course in the same transaction (I8, audited), as a live report would."""
        with self._write() as session:
            course = self._get(session, Course, course_id)
            history = self._history(session, course_id)
            try:  # CourseState holds one record per infusion (or per day of a split dose)
                CourseState(infusions=(*history.infusions, record))
            except ValueError:  # its words carry the input: said here in the rule's words
                raise StoreError(
                    f"course {course_id} already holds infusion {record.infusion_number}"
                    f"{_day(record.day)} (L8)",
                    rule=Rule.L8,
                ) from None
            withdrawal = judge(history, record) if judge is not None else None
            entry = HistoryEntry(
                course_id=course_id,
                infusion_number=record.infusion_number,
                day=record.day,
                record=record.model_dump_json(),
                entered_by=actor,
                entered_at=at,
            )
            entry_id = self._insert(session, entry)
            self._store_audit(
                session,
                StoreAudit.HISTORY_ENTERED,
                at=at,
                actor=actor,
                rule=Rule.L8,
                course_id=course_id,
                record=record,
            )
            if withdrawal is not None and course.course_state != "withdrawn":
                course.course_state = "withdrawn"
                course.withdrawn_reason = withdrawal.course_reason
                session.add(course)
                self._store_audit(
                    session,
                    AuditType.COURSE_WITHDRAWN,
                    at=at,
                    actor=actor,
                    rule=Rule.I8,
                    course_id=course_id,
                    cause=withdrawal.rule,
                    reason=withdrawal.reason,
                )
            return entry_id

    def course_history(self, course_id: int) -> CourseState:
        """The course as the planner reads it (L4, L5, I6, D3, I8): the infusions stored here
        that started (via `infusion_record`, the live one too) and the ones entered (L8)."""
        with self._read() as session:
            self._get(session, Course, course_id)
            return self._history(session, course_id)

    def _history(self, session: Session, course_id: int) -> CourseState:
        course = self._get(session, Course, course_id)
        entered = [
            InfusionRecord.model_validate_json(e.record)
            for e in session.exec(select(HistoryEntry).where(HistoryEntry.course_id == course_id))
        ]
        not_given = (InfusionPhase.PLANNED.value, CANCELLED)
        ours = [
            infusion_record(InfusionState.from_json(i.state))
            for i in session.exec(
                select(Infusion).where(
                    Infusion.course_id == course_id, col(Infusion.phase).not_in(not_given)
                )
            )
        ]
        ordered = sorted((*entered, *ours), key=lambda r: (r.infusion_number, r.day or 0))
        return CourseState(
            infusions=tuple(ordered),
            withdrawn=course.course_state == "withdrawn",
            withdrawn_reason=course.withdrawn_reason,
        )

    # -- infusions --------------------------------------------------------------------------

    def create_infusion(
        self,
        course_id: int,
        pump_id: str,
        state: InfusionState,
        *,
        at: datetime,
        actor: str | None = None,
        weight_kg: float | None = None,
        dose_mg: float | None = None,
        premedication_at: datetime | None = None,
    ) -> int:
        """A planned infusion of `course_id` on `pump_id`; its id. `InfusionConflictError` (naming
        the constraint) when the pump or the course has a live infusion, or the course holds
        that infusion number (and day); `StoreError` for a withdrawn course (I8) or a state
        of another protocol than the course's."""
        if state.phase is not InfusionPhase.PLANNED:
            raise StoreError(f"a new infusion is planned, not {state.phase}")
        try:
            with self._write() as session:
                course = self._get(session, Course, course_id)
                if course.course_state == "withdrawn":
                    raise StoreError(f"course {course_id} is withdrawn (I8)", rule=Rule.I8)
                if state.protocol.name != course.protocol:
                    raise StoreError(
                        f"protocol: course {course_id} is on {course.protocol!r}, "
                        f"not {state.protocol.name!r} (fixed for the course)"
                    )
                wall = self._wall_clock()
                infusion = Infusion(
                    course_id=course_id,
                    pump_id=pump_id,
                    infusion_number=state.infusion_number,
                    day=state.day,
                    phase=state.phase.value,
                    supervised=state.supervised,
                    state=state.to_json(),
                    weight_kg=weight_kg,
                    dose_mg=dose_mg,
                    premedication_at=premedication_at,
                    created_at=at,
                    created_wall_at=wall,
                    updated_at=at,
                    updated_wall_at=wall,
                )
                infusion_id = self._insert(session, infusion)
                self._store_audit(
                    session,
                    StoreAudit.INFUSION_CREATED,
                    at=at,
                    actor=actor,
                    rule=Rule.L4,  # its row, bag and rates chosen from the course's history
                    infusion_id=infusion_id,
                    course_id=course_id,
                    pump_id=pump_id,
                    infusion_number=state.infusion_number,
                    day=state.day,
                )
                return infusion_id
        except IntegrityError as exc:
            raise self._infusion_conflict(exc, course_id, pump_id, state) from None

    @staticmethod
    def _infusion_conflict(
        exc: IntegrityError, course_id: int, pump_id: str, state: InfusionState
    ) -> Exception:
        constraint = constraint_of(exc)
        number = f"course {course_id} already holds infusion {state.infusion_number}"
        refusals = {
            "uq_infusion_live_pump": (Rule.A5, f"pump {pump_id} already has a live infusion (A5)"),
            "uq_infusion_live_course": (
                Rule.A5,
                f"course {course_id} already has a live infusion (A5)",
            ),
            "uq_infusion_number": (Rule.L8, f"{number} (L8)"),
            "uq_infusion_number_day": (Rule.L8, f"{number}{_day(state.day)} (L8)"),
        }
        if constraint in refusals:
            rule, message = refusals[constraint]
            return InfusionConflictError(constraint, message, rule)
        return exc

    def save_infusion(
        self,
        infusion_id: int,
        state: InfusionState,
        audit_events: Sequence[AuditEvent] = (),
        ledger: Sequence[LedgerEntry] = (),
        *,
        at: datetime,
        actor: str | None = None,
        alarms: Sequence[RaiseAlarm] = (),
    ) -> tuple[int, ...]:
        """One decision, in ONE transaction: the new state (and its reactions, I10), the audit
        events, the ledger rows (A3), the alarms raised (A1) and, when the state withdrew the
        course, the course (I8). The audit ids, in order."""
        with self._write() as session:
            row = self._get(session, Infusion, infusion_id)
            if row.phase == CANCELLED:
                raise StoreError(f"infusion {infusion_id} was cancelled")
            if (state.infusion_number, state.day) != (row.infusion_number, row.day):
                raise StoreError(
                    f"infusion {infusion_id} is infusion {row.infusion_number}{_day(row.day)}, "
                    f"not {state.infusion_number}{_day(state.day)}"
                )
            row.phase, row.supervised, row.state = (
                state.phase.value,
                state.supervised,
                state.to_json(),
            )
            row.updated_at, row.updated_wall_at = at, self._wall_clock()
            session.add(row)
            self._sync_reactions(session, infusion_id, state)
            if state.course.withdrawn:
                course = self._get(session, Course, row.course_id)
                if course.course_state != "withdrawn":
                    course.course_state = "withdrawn"
                    course.withdrawn_reason = state.course.withdrawn_reason
                    session.add(course)
            for entry in ledger:
                self._add_command(session, entry, infusion_id=infusion_id)
            session.add_all(
                Alarm(
                    infusion_id=infusion_id,
                    pump_id=row.pump_id,
                    kind=str(alarm.kind),
                    rule=_rule(alarm.rule),
                    message=alarm.message,
                    raised_at=at,
                )
                for alarm in alarms
            )
            return self._audit(session, audit_events, infusion_id=infusion_id, actor=actor)

    @staticmethod
    def _sync_reactions(session: Session, infusion_id: int, state: InfusionState) -> None:
        stored = {
            r.seq: r
            for r in session.exec(select(Reaction).where(Reaction.infusion_id == infusion_id))
        }
        for seq, record in enumerate(state.reaction_records):
            values = {
                "grade": record.grade,
                "max_grade": record.max_grade,
                "signs": sorted(s.value for s in record.signs),
                "onset_at": record.onset_at,
                "rate_ml_h": record.rate_ml_h,
                "running_min": record.running_min,
                "after_completion": record.after_completion,
                "closed": seq < len(state.reactions),
            }
            row = stored.get(seq)
            if row is None:
                session.add(
                    Reaction.model_validate({"infusion_id": infusion_id, "seq": seq, **values})
                )
            else:
                row.sqlmodel_update(values)
                session.add(row)

    def cancel_infusion(self, infusion_id: int, reason: str, *, actor: str, at: datetime) -> None:
        """A planned infusion that never started, cancelled (its number given back)."""
        if not reason.strip():
            raise StoreError("reason: must not be blank")
        with self._write() as session:
            row = self._get(session, Infusion, infusion_id)
            if row.phase != InfusionPhase.PLANNED.value:
                raise StoreError(
                    f"infusion {infusion_id} is {row.phase}: only a planned one is cancelled"
                )
            row.phase, row.supervised, row.cancel_reason = CANCELLED, False, reason
            row.updated_at, row.updated_wall_at = at, self._wall_clock()
            session.add(row)
            self._store_audit(
                session,
                StoreAudit.INFUSION_CANCELLED,
                at=at,
                actor=actor,
                rule=Rule.L8,  # never given: its number is given back to the course
                infusion_id=infusion_id,
                reason=reason,
            )

    @staticmethod
    def _stored(row: Infusion) -> StoredInfusion:
        assert row.id is not None
        return StoredInfusion(
            id=row.id,
            course_id=row.course_id,
            pump_id=row.pump_id,
            phase=row.phase,
            state=InfusionState.from_json(row.state),
            created_at=row.created_at,
            updated_at=row.updated_at,
            weight_kg=row.weight_kg,
            dose_mg=row.dose_mg,
            premedication_at=row.premedication_at,
        )

    def load_infusion(self, infusion_id: int) -> StoredInfusion:
        """One infusion and its state, as stored."""
        with self._read() as session:
            return self._stored(self._get(session, Infusion, infusion_id))

    def record_premedication(
        self, infusion_id: int, given_at: datetime, *, actor: str, at: datetime
    ) -> None:
        """D3: premedication given at `given_at` for a planned infusion (audited; the last
        one recorded is the one the start's gate reads)."""
        with self._write() as session:
            row = self._get(session, Infusion, infusion_id)
            if row.phase != InfusionPhase.PLANNED.value:
                raise StoreError(
                    f"infusion {infusion_id} is {row.phase}: premedication is recorded before "
                    "the start (D3)",
                    rule=Rule.D3,
                )
            row.premedication_at = given_at
            row.updated_at, row.updated_wall_at = at, self._wall_clock()
            session.add(row)
            self._store_audit(
                session,
                StoreAudit.PREMEDICATION,
                at=at,
                actor=actor,
                rule=Rule.D3,
                infusion_id=infusion_id,
                given_at=given_at,
            )

    def infusions(
        self, *, phase: str | None = None, pump_id: str | None = None, course_id: int | None = None
    ) -> list[StoredInfusion]:
        """Infusions, newest first, filtered by phase (or "cancelled"), pump and course."""
        with self._read() as session:
            query = select(Infusion)
            if phase is not None:
                query = query.where(Infusion.phase == phase)
            if pump_id is not None:
                query = query.where(Infusion.pump_id == pump_id)
            if course_id is not None:
                query = query.where(Infusion.course_id == course_id)
            rows = session.exec(query.order_by(col(Infusion.id).desc()))
            return [self._stored(row) for row in rows]

    def infusions_but(
        self, kept: Collection[int], *, pump_id: str | None = None
    ) -> tuple[list[int], list[StoredInfusion]]:
        """Every infusion's id (of `pump_id`), newest first, and the infusions themselves but
        those in `kept` (whose caller keeps what it needs of them): parsing a stored state is
        the costly part of a read, and a ward's history grows while its live infusions do not
        (api/listing.py keeps the finished ones' views)."""
        with self._read() as session:
            query = select(Infusion.id)
            if pump_id is not None:
                query = query.where(Infusion.pump_id == pump_id)
            ids = [i for i in session.exec(query.order_by(col(Infusion.id).desc())) if i]
            wanted = [i for i in ids if i not in kept]
            found: dict[int, StoredInfusion] = {}
            for chunk in _chunks(wanted):
                for row in session.exec(select(Infusion).where(col(Infusion.id).in_(chunk))):
                    stored = self._stored(row)
                    found[stored.id] = stored
            return ids, [found[i] for i in wanted if i in found]

    def patient(self, patient_id: int) -> Patient:
        """One patient."""
        with self._read() as session:
            return self._get(session, Patient, patient_id)

    def courses_of(self, patient_id: int) -> list[Course]:
        """The courses of a patient, oldest first."""
        with self._read() as session:
            self._get(session, Patient, patient_id)
            query = select(Course).where(Course.patient_id == patient_id)
            return list(session.exec(query.order_by(col(Course.id))))

    def course(self, course_id: int) -> Course:
        """One course."""
        with self._read() as session:
            return self._get(session, Course, course_id)

    def courses_and_patients(
        self, course_ids: Iterable[int]
    ) -> tuple[dict[int, Course], dict[int, Patient]]:
        """The courses `course_ids` and their patients, by id, in a few queries (a listing of
        every infusion reads them all: one query per course and patient cost it 150 ms of
        Python at 150 infusions, on the thread whose interpreter lock the event loop shares)."""
        wanted = sorted(set(course_ids))
        courses: dict[int, Course] = {}
        patients: dict[int, Patient] = {}
        with self._read() as session:
            for chunk in _chunks(wanted):
                query = select(Course).where(col(Course.id).in_(chunk))
                courses.update((c.id, c) for c in session.exec(query) if c.id is not None)
            for chunk in _chunks(sorted({c.patient_id for c in courses.values()})):
                of_patients = select(Patient).where(col(Patient.id).in_(chunk))
                patients.update((p.id, p) for p in session.exec(of_patients) if p.id is not None)
        return courses, patients

    def ping(self) -> None:
        """Raise unless the database answers (GET /health)."""
        with self._read() as session:
            session.exec(select(Patient.id).limit(1)).first()

    def live_infusions(self) -> list[StoredInfusion]:
        """A4: what a restarted controller supervises: every infusion not over, or over with
        an I4/I5 window still open (`InfusionState.supervised`), oldest first."""
        with self._read() as session:
            rows = session.exec(
                select(Infusion)
                .where(col(Infusion.supervised).is_(True))
                .order_by(col(Infusion.id))
            )
            return [self._stored(row) for row in rows]

    def live_infusion_ids(self) -> set[int]:
        """The ids of `live_infusions()`, without loading their states (a cheap read for
        listeners that only need to know which infusions are supervised)."""
        with self._read() as session:
            query = select(Infusion.id).where(col(Infusion.supervised).is_(True))
            return {int(i) for i in session.exec(query) if i is not None}

    def reactions(self, infusion_id: int) -> list[Reaction]:
        """I10: the reactions of an infusion, in the order its state holds them."""
        with self._read() as session:
            query = select(Reaction).where(Reaction.infusion_id == infusion_id)
            return list(session.exec(query.order_by(col(Reaction.seq))))

    # -- the audit trail --------------------------------------------------------------------

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

    # -- the command ledger (A3) ------------------------------------------------------------

    @staticmethod
    def _add_command(session: Session, entry: LedgerEntry, *, infusion_id: int | None) -> None:
        session.add(
            CommandLedger(
                id=entry.id,
                pump_id=entry.pump_id,
                infusion_id=entry.infusion_id if infusion_id is None else infusion_id,
                command_id=entry.command_id,
                op=entry.op.value,
                rate_ml_h=entry.rate_ml_h,
                volume_ml=entry.volume_ml,
                sent_at=entry.sent_at,
                sent_wire_s=entry.sent_wire_s,
            )
        )

    def record_command(self, entry: LedgerEntry) -> None:
        """A command sent to a pump (fate pending), outside a decision (a link test, say)."""
        try:
            with self._write() as session:
                self._add_command(session, entry, infusion_id=None)
        except IntegrityError as exc:
            if constraint_of(exc) in {"pk_command_ledger", "command_ledger_pkey"}:
                raise LedgerError(f"ledger id {entry.id!r} is taken") from None
            raise

    def record_fate(
        self,
        ledger_id: str,
        fate: CommandFate | Literal["confirmed", "denied", "unconfirmed"],
        *,
        at: datetime,
        detail: str | None = None,
    ) -> None:
        """A3: the fate of a command. Pending becomes any fate; unconfirmed may still be
        confirmed or denied by a late read-back; confirmed and denied are final."""
        new = CommandFate(fate)
        with self._write() as session:
            row = self._get(session, CommandLedger, ledger_id)
            old = CommandFate(row.fate)
            if new not in _NEXT_FATES[old]:
                raise LedgerError(f"command {ledger_id}: {old} cannot become {new} (A3)")
            row.fate, row.fate_at, row.detail = new.value, at, detail
            session.add(row)

    def command(self, ledger_id: str) -> CommandLedger:
        """One ledger row."""
        with self._read() as session:
            return self._get(session, CommandLedger, ledger_id)

    # -- alarms (A1) ------------------------------------------------------------------------

    def raise_alarm(
        self,
        kind: str,
        message: str,
        *,
        at: datetime,
        rule: Rule | None = None,
        infusion_id: int | None = None,
        pump_id: str | None = None,
    ) -> int:
        """An alarm of an infusion or of a pump (a link lost with no infusion, say); its id."""
        if infusion_id is None and pump_id is None:
            raise StoreError("an alarm belongs to an infusion or a pump")
        with self._write() as session:
            alarm = Alarm(
                infusion_id=infusion_id,
                pump_id=pump_id,
                kind=kind,
                rule=_rule(rule),
                message=message,
                raised_at=at,
            )
            return self._insert(session, alarm)

    def clear_alarm(self, alarm_id: int, *, at: datetime, by: str) -> None:
        """A1: an alarm acknowledged by `by` (an alarm is cleared once)."""
        with self._write() as session:
            alarm = self._get(session, Alarm, alarm_id)
            if alarm.cleared_at is not None:
                raise StoreError(f"alarm {alarm_id} was cleared by {alarm.cleared_by}")
            alarm.cleared_at, alarm.cleared_by = at, by
            session.add(alarm)

    def open_alarm_counts(self) -> dict[str, int]:
        """Alarms not yet cleared, counted by kind (GET /metrics)."""
        with self._read() as session:
            query = (
                select(Alarm.kind, func.count())
                .where(col(Alarm.cleared_at).is_(None))
                .group_by(Alarm.kind)
            )
            return {kind: int(n) for kind, n in session.exec(query)}

    def command_fate_counts(self) -> dict[str, int]:
        """Ledger rows counted by fate (GET /metrics)."""
        with self._read() as session:
            query = select(CommandLedger.fate, func.count()).group_by(CommandLedger.fate)
            return {fate: int(n) for fate, n in session.exec(query)}

    def open_alarms(
        self, *, infusion_id: int | None = None, pump_id: str | None = None
    ) -> list[Alarm]:
        """Alarms not yet cleared, oldest first (of one infusion or pump when given)."""
        with self._read() as session:
            query = select(Alarm).where(col(Alarm.cleared_at).is_(None))
            if infusion_id is not None:
                query = query.where(Alarm.infusion_id == infusion_id)
            if pump_id is not None:
                query = query.where(Alarm.pump_id == pump_id)
            return list(session.exec(query.order_by(col(Alarm.id))))


#: Ids in one `IN (...)` list: within every SQLite's limit on a statement's variables.
_IN_LIST = 500


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _IN_LIST):
        yield ids[start : start + _IN_LIST]
