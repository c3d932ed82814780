"""Infusions and their states, their reactions, the command ledger (A3) and alarms (A1).

A reaction press commits the new state, its reaction, the audit events, the ledger rows and
any alarm together (`save_infusion`, one transaction; architecture.md, "One press of the
reaction button"), and withdraws the course when the state did (I8). `live_infusions` is what a
restarted controller supervises again (A4): every infusion not over, or over with an I4/I5 window
still open (`InfusionState.supervised`). A pump or a course has one live infusion at a time (A5)
and a course one infusion a number (and day) (L8): the database's constraints, named in the
refusal. A new infusion is planned, of a course not withdrawn (I8), on the course's protocol;
premedication is recorded before its start (D3); a cancelled one gives its number back (L8).
The reactions are the state's, in its order (I10). A3: a command's fate, pending until it is
confirmed, denied or unconfirmed; unconfirmed may still be confirmed or denied by a late
read-back; confirmed and denied are final. A1: an alarm of an infusion or a pump, cleared once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from pumpctl.core.machine.outputs import AuditEvent, PumpCommand, RaiseAlarm, SetRate, SetVtbi
from pumpctl.core.machine.state import CommandOp, InfusionPhase, InfusionState
from pumpctl.core.rules import Rule
from pumpctl.store.base import _chunks, _day, _rule, constraint_of
from pumpctl.store.errors import InfusionConflictError, LedgerError, StoreError
from pumpctl.store.models import CANCELLED, Alarm, CommandLedger, Course, Infusion, Reaction
from pumpctl.store.trail import StoreAudit, TrailRepository

__all__ = ["CommandFate", "InfusionRepository", "LedgerEntry", "StoredInfusion"]


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


class InfusionRepository(TrailRepository):
    """Infusions, their reactions, the command ledger (A3) and alarms (A1)."""

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
