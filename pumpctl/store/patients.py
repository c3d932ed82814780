"""Patients and courses: one record per patient (its MRN unique), a course on one protocol
fixed for the course, and the course's history (L8).

`course_history` is the course the planner reads (L4, L5, I6, D3, I8): the infusions stored
here that started (`infusion_record`) and the ones a clinician entered (L8). A course holds one
infusion a number (and day); an entry whose withdrawal the judge names (I3, I6, I7) withdraws
the course in the same transaction, as a live report would, and only a clinician reinstates it,
with a reason (I8). Every change is audited in its transaction (`trail`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from pumpctl.core.course import Withdrawal
from pumpctl.core.history import CourseState, InfusionRecord
from pumpctl.core.machine.outputs import AuditType
from pumpctl.core.machine.state import InfusionPhase, InfusionState, infusion_record
from pumpctl.core.rules import Rule
from pumpctl.store.base import _chunks, _day, constraint_of
from pumpctl.store.errors import InfusionConflictError, StoreError
from pumpctl.store.models import CANCELLED, Course, HistoryEntry, Infusion, Patient
from pumpctl.store.trail import StoreAudit, TrailRepository

__all__ = ["PatientRepository"]


class PatientRepository(TrailRepository):
    """Patients, their courses and the courses' histories."""

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
