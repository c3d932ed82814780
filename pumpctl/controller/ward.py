"""The ward: what the service asks of the controller and the store, one method per action.

Every action either acts or refuses. A refusal names the rule (`Refused`, 409) or the field
(`Invalid`, 422); an unknown id is `NotFoundError` (404). Nothing here talks to a pump: actions
become events for a pump's supervisor (`PumpSupervisor.submit`), which decides, sends and
records; readers use the supervisors' cached state and the store.

The reaction button (architecture.md, "One press"): the supervisor sends the stop at once and
records the decision after it; `report_reaction` answers once the stop is confirmed by the
pump's read-back, or, when it is not confirmed within `stop_answer_s` (or at once when the link
is already lost), as unconfirmed (A3: "Pump did not stop: clamp the line"). It learns the stop's
fate by awaiting the future the supervisor registered for that command before sending it
(`PumpSupervisor.fates`), resolved by the fate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from pumpctl.clock import Clock
from pumpctl.controller.recording import StoreRecorder
from pumpctl.controller.supervisor import WRITE_AHEAD_S, PumpSupervisor
from pumpctl.core.course import entry_withdrawal
from pumpctl.core.dose import premedication_gate, schedule_gate
from pumpctl.core.history import InfusionRecord, Sign
from pumpctl.core.machine import (
    AcknowledgeAlarm,
    BagReplaced,
    ClearAlarm,
    CommandOp,
    DeadlineKind,
    Decision,
    Event,
    Hold,
    InfusionPhase,
    InfusionState,
    ReactionReported,
    Reassessed,
    Release,
    Resolved,
    ResumeRequested,
    SentCommand,
    SetRate,
    Start,
    Stop,
    StopPump,
    deadlines,
    decide,
    initial_state,
)
from pumpctl.core.machine.outputs import AuditEvent
from pumpctl.core.planner import Plan, PlanningError, is_split_first_dose, plan
from pumpctl.core.protocol import Protocol
from pumpctl.core.rules import Rule
from pumpctl.store import InfusionConflictError, NotFoundError, Store, StoredInfusion, StoreError
from pumpctl.store.models import Alarm, Course, Patient
from pumpctl.store.store import StoreAudit
from pumpctl.store.writer import StoreReader, StoreUnavailable, StoreWriter
from pumpctl.words import A3_WORDS  # named here too: tests/page imports it from the ward

__all__ = ["A3_WORDS", "Acted", "InfusionFacts", "Invalid", "ReactionOutcome", "Refused", "Ward"]


class Refused(Exception):  # noqa: N818 - a refusal, not a failure
    """A rule forbids the action (409); `rule` is the id of docs/clinical-rules.md it names."""

    def __init__(self, rule: Rule | str, message: str) -> None:
        super().__init__(message)
        self.rule = str(rule)
        self.message = message


class Invalid(Exception):  # noqa: N818 - invalid input, not a failure
    """The input is invalid (422), naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ReactionOutcome:
    """What a reaction press came to."""

    reaction_id: int
    stop: Literal["confirmed", "unconfirmed", "already_stopped", "no_pump_action"]
    stop_confirmed_ms: float | None
    state: str
    recorded: bool = True  # False: the record waits for the database (store degraded)


@dataclass(frozen=True, slots=True)
class InfusionFacts:
    """What the store knows of one infusion, read in one go off the event loop."""

    stored: StoredInfusion
    patient: Patient
    alarms: list[Alarm]


Notify = Callable[[], None]

#: Seconds an action's answer waits for its record once the action is done (the writer thread
#: writes in milliseconds; longer, the database is slow or held, and the answer says
#: `recorded: false`: the record is written when it answers). Not at all while the store is
#: already degraded: nobody is kept waiting for what cannot come.
RECORD_WAIT_S = 1.0
#: The same for a reaction, once its stop's fate is known: the record was handed to the
#: writer when the stop left, so it is written by then unless the database is held, and the
#: nurse is told the stop's fate without waiting for the disk (I1).
REACTION_RECORD_WAIT_S = 0.1
#: Seconds past `WRITE_AHEAD_S` an action's answer waits for its commands' fate to be sure
#: (the supervisor denies them at that bound, then the answer says so).
WRITE_AHEAD_MARGIN_S = 0.25


@dataclass(frozen=True, slots=True)
class Acted:
    """An action's decision, and whether its record is written (False: it waits for the
    database, which is degraded; it is written, in order, when the database answers)."""

    decision: Decision
    recorded: bool


async def _briefly(record: asyncio.Future[bool] | None, bound_s: float) -> bool:
    """Whether `record` is written, waiting for it at most `bound_s` seconds."""
    if record is None:
        return True
    if not record.done() and bound_s > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound_s):
                await asyncio.shield(record)
    return record.done() and not record.cancelled() and record.result()


def _event(factory: Callable[..., Event], **fields: Any) -> Event:
    try:
        return factory(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "body"
        raise Invalid(field, error["msg"]) from None


def _checked(decision: Decision) -> Decision:
    refusal = decision.refusal
    if refusal is None:
        return decision
    if refusal.kind == "invalid":
        raise Invalid(refusal.field or "body", refusal.reason)
    # a refusal of kind "rule" always names its rule (the core's Refused requires one); A3 for a
    # core that broke that promise, whose refusal is then still a 409, never a 500
    raise Refused(refusal.rule or Rule.A3, refusal.reason)


class Ward:
    """The controller's supervisors and the store, as the service's actions see them."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        supervisors: Mapping[str, PumpSupervisor],
        protocols: Callable[[str], Protocol],
        *,
        writer: StoreWriter,
        reader: StoreReader,
        transports: Mapping[str, str] | None = None,
        default_protocol: str = "daratumumab",
        stop_answer_s: float = 4.5,
    ) -> None:
        self.store = store
        self.writer = writer  # every write, on the store's writer thread, in order
        self.read = reader  # every read, on reader threads, bounded
        self.clock = clock
        self.supervisors = dict(supervisors)
        self.protocols = protocols
        self.transports = dict(transports or {})
        self.default_protocol = default_protocol
        self.stop_answer_s = stop_answer_s
        self._listeners: list[Notify] = []
        self._change_seq = 0  # notify() calls so far
        self._everything_at = 0  # the last notify() that named no infusions
        self._changed_at: dict[int, int] = {}  # infusion id: the last notify() naming it
        self._plans: dict[int, tuple[list[dict[str, float]], str]] = {}
        for pump_id, supervisor in self.supervisors.items():
            supervisor.recorder = self._recorder(StoreRecorder(store, pump_id))

    def _recorder(
        self, inner: StoreRecorder
    ) -> Callable[[str, Event, Decision], asyncio.Future[bool] | None]:
        """A supervisor's recorder: each decision's write queued for the writer thread (never
        on this loop); the listeners are told once an audited decision is written."""

        def record(
            infusion_id: str, event: Event, decision: Decision
        ) -> asyncio.Future[bool] | None:
            job = inner.job(infusion_id, event, decision)
            if job is None:
                return None
            key = ("quiet", infusion_id) if inner.quiet(event, decision) else None
            what = f"infusion {infusion_id}'s decision on {event.kind}"
            written = self.writer.record(job, what=what, key=key)
            if decision.audit:
                written.add_done_callback(lambda _w: self.notify((int(infusion_id),)))
            return written

        return record

    def refuse_unrecorded(self, what: str) -> None:
        """Write-ahead: an action that would have a pump run is refused while the store is
        degraded (503): nothing runs unrecorded, and the pump stays at its rate."""
        health = self.writer.health()
        if health.degraded:
            raise StoreUnavailable(
                f"the store is degraded ({health.reason}): {what} is refused until the "
                "database answers; stops and reactions work without it"
            )

    def notify(self, infusions: Iterable[int] | None = None) -> None:
        """Tell the listeners (the live event stream, the MQTT publisher) something changed:
        the `infusions` named (an empty one: none of them), or anything (None)."""
        self._change_seq += 1
        if infusions is None:
            self._everything_at = self._change_seq
        else:
            for infusion_id in infusions:
                self._changed_at[infusion_id] = self._change_seq
        for listener in list(self._listeners):
            listener()

    def add_listener(self, listener: Notify) -> Callable[[], None]:
        """Call `listener` on every change (see `notify`); the way to stop it is returned."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def changes_since(self, seq: int) -> tuple[int, set[int] | None]:
        """(the change count now, the infusions changed after change `seq`, or None when
        anything may have): a listener's way to rebuild only what changed."""
        if self._everything_at > seq:
            return self._change_seq, None
        return self._change_seq, {i for i, at in self._changed_at.items() if at > seq}

    # -- lookups -------------------------------------------------------------------------

    def supervisor(self, pump_id: str) -> PumpSupervisor:
        """The supervisor of `pump_id` (NotFoundError when it is not configured)."""
        try:
            return self.supervisors[pump_id]
        except KeyError:
            raise NotFoundError(f"no pump {pump_id}") from None

    def live(self, infusion_id: int) -> PumpSupervisor | None:
        """The supervisor holding infusion `infusion_id`, if one does."""
        key = str(infusion_id)
        for supervisor in self.supervisors.values():
            if supervisor.infusion_id == key and supervisor.state is not None:
                return supervisor
        return None

    async def state_of(self, infusion_id: int) -> tuple[StoredInfusion, InfusionState]:
        """The stored infusion and its newest state (the supervisor's when it holds it)."""
        stored = await self.read(lambda: self.store.load_infusion(infusion_id))
        return stored, self.newest(stored)

    def newest(self, stored: StoredInfusion) -> InfusionState:
        """The newest state of `stored`: the supervisor's when it holds it."""
        supervisor = self.live(stored.id)
        return supervisor.state if supervisor is not None and supervisor.state else stored.state

    async def facts(self, infusion_id: int) -> InfusionFacts:
        """The stored infusion, its patient and its open alarms, in one read."""

        def read() -> InfusionFacts:
            stored = self.store.load_infusion(infusion_id)
            patient = self.store.patient(self.store.course(stored.course_id).patient_id)
            return InfusionFacts(stored, patient, self.store.open_alarms(infusion_id=infusion_id))

        return await self.read(read, what=f"infusion {infusion_id}")

    async def all_facts(
        self, pump_id: str | None = None, *, kept: Collection[int] = ()
    ) -> tuple[list[int], list[InfusionFacts]]:
        """Every infusion's id (of `pump_id`), newest first, and the `facts` of each but those
        in `kept` (the caller keeps what it needs of them), in one read."""

        def read() -> tuple[list[int], list[InfusionFacts]]:
            alarms: dict[int | None, list[Alarm]] = {}
            for alarm in self.store.open_alarms(pump_id=pump_id):  # one query for all of them
                alarms.setdefault(alarm.infusion_id, []).append(alarm)
            ids, infusions = self.store.infusions_but(kept, pump_id=pump_id)
            courses, patients = self.store.courses_and_patients(s.course_id for s in infusions)
            return ids, [
                InfusionFacts(
                    stored,
                    patients[courses[stored.course_id].patient_id],
                    alarms.get(stored.id, []),
                )
                for stored in infusions
            ]

        return await self.read(read, what="the infusions")

    # -- patients --------------------------------------------------------------------------

    async def create_patient(
        self, mrn: str, weight_kg: float, protocol: str | None, *, actor: str
    ) -> tuple[int, int]:
        """A patient and their course on `protocol`; (patient id, course id)."""
        name = protocol or self.default_protocol
        try:
            self.protocols(name)
        except (ValueError, OSError, KeyError) as exc:
            raise Invalid("protocol", str(exc)) from None
        now = self.clock.now()

        def write() -> tuple[int, int]:
            patient_id = self.store.create_patient(mrn, weight_kg, actor=actor, at=now)
            return patient_id, self.store.create_course(patient_id, name, actor=actor, at=now)

        try:
            created = await self.writer.call(write, what="the new patient")
        except InfusionConflictError as exc:
            raise Refused(_rule(exc, Rule.L8), str(exc)) from None
        except StoreError as exc:
            raise Invalid("mrn", str(exc)) from None
        self.notify(())  # a patient and a course: no infusion changed
        return created

    async def enter_history(self, patient_id: int, record: InfusionRecord, *, actor: str) -> None:
        """L8: an infusion given elsewhere, entered by a clinician. It counts for I3 and I6 (and
        the label's I7) as a live report does: a history that demands it withdraws the course at
        once (I8, audited). Refused (L8) while an infusion of the course is under way: its
        machine read the course when it started, so history is entered between infusions."""

        def read() -> tuple[int, list[StoredInfusion], str]:
            course_id = self._course_id_of(patient_id)
            infusions = self.store.infusions(course_id=course_id)
            return course_id, infusions, self.store.course(course_id).protocol

        course_id, infusions, protocol = await self.read(read, what="the course")
        for stored in infusions:
            if _started(stored) and self.newest(stored).supervised:
                raise Refused(
                    Rule.L8,
                    f"infusion {stored.id} of this course is under way: enter history "
                    "between infusions (L8)",
                )
        rules = self.protocols(protocol).reactions
        at = self.clock.now()
        try:
            await self.writer.call(
                lambda: self.store.enter_history(
                    course_id,
                    record,
                    actor=actor,
                    at=at,
                    judge=lambda before, entry: entry_withdrawal(before, entry, rules),
                ),
                what="the history entry",
            )
        except NotFoundError:
            raise
        except StoreError as exc:
            raise Refused(Rule.L8, str(exc)) from None
        self.notify()

    async def course_id_of(self, patient_id: int) -> int:
        """The patient's current (latest) course."""
        return await self.read(lambda: self._course_id_of(patient_id), what="the course")

    def _course_id_of(self, patient_id: int) -> int:
        courses = self.store.courses_of(patient_id)
        if not courses or courses[-1].id is None:
            raise NotFoundError(f"patient {patient_id} has no course")
        return courses[-1].id

    async def audit_trail(self, infusion_id: int) -> list[Any]:
        """The infusion's audit rows, oldest first (NotFoundError for an unknown id)."""

        def read() -> list[Any]:
            self.store.load_infusion(infusion_id)
            return self.store.audit_of(infusion_id)

        return await self.read(read, what="the audit trail")

    async def audit_since(self, audit_id: int, limit: int) -> list[Any]:
        """At most `limit` audit rows after `audit_id`, oldest first."""
        return await self.read(
            lambda: self.store.audit_since(audit_id, limit=limit), what="the audit trail"
        )

    async def latest_audit_id(self) -> int:
        """The newest audit row's id (0: none)."""
        return await self.read(self.store.latest_audit_id, what="the audit trail")

    async def live_infusion_ids(self) -> set[int]:
        """The ids of the infusions the store supervises."""
        return await self.read(self.store.live_infusion_ids, what="the live infusions")

    async def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Open alarms by kind, and the ledger's commands by fate (the metrics)."""
        return await self.read(
            lambda: (self.store.open_alarm_counts(), self.store.command_fate_counts()),
            what="the counts",
        )

    async def patient_record(self, patient_id: int) -> tuple[Patient, Course, Any]:
        """A patient, their current course and its history (CourseState), in one read."""

        def read() -> tuple[Patient, Course, Any]:
            patient = self.store.patient(patient_id)
            course_id = self._course_id_of(patient_id)
            return patient, self.store.course(course_id), self.store.course_history(course_id)

        return await self.read(read, what=f"patient {patient_id}")

    async def reinstate(self, course_id: int, reason: str, *, actor: str) -> None:
        """I8: a clinician reinstates a withdrawn course, with a reason."""
        at = self.clock.now()
        await self.writer.call(
            lambda: self.store.reinstate_course(course_id, reason, actor=actor, at=at),
            what="the reinstatement",
        )
        self.notify(())

    # -- infusions -------------------------------------------------------------------------

    async def create_infusion(
        self,
        patient_id: int,
        pump_id: str,
        *,
        actor: str,
        weight_kg: float | None = None,
        premedication_at: datetime | None = None,
        bag_prepared_at: datetime | None = None,
    ) -> int:
        """The next infusion of the patient's course, planned on `pump_id` (L4-L8, D1)."""
        supervisor = self.supervisor(pump_id)
        patient, course, history = await self.patient_record(patient_id)
        assert course.id is not None
        course_id = course.id
        if history.withdrawn:
            raise Refused(Rule.I8, f"the course is withdrawn (I8): {history.withdrawn_reason}")
        if supervisor.state is not None and supervisor.state.supervised:
            raise Refused(Rule.A5, _busy(pump_id, supervisor))
        protocol = self.protocols(course.protocol)
        now = self.clock.now()
        number, day = _next_number(protocol, history)
        weight = weight_kg if weight_kg is not None else patient.weight_kg
        try:
            planned = plan(protocol, number, history, weight_kg=weight, split_day=day)
            state = initial_state(
                protocol,
                infusion_number=number,
                course=history,
                bag_prepared_at=bag_prepared_at or now,
                day=day,  # type: ignore[arg-type]
            )
        except PlanningError as exc:
            raise Refused(_rule(exc, Rule.L8), str(exc)) from None
        except ValueError as exc:
            raise Invalid(
                "bag_prepared_at" if bag_prepared_at else "patient_id", str(exc)
            ) from None
        try:
            infusion_id = await self.writer.call(
                lambda: self.store.create_infusion(
                    course_id,
                    pump_id,
                    state,
                    at=now,
                    actor=actor,
                    weight_kg=weight,
                    dose_mg=planned.dose_mg,
                    premedication_at=premedication_at,
                ),
                what="the new infusion",
            )
        except InfusionConflictError as exc:
            raise Refused(_rule(exc, Rule.L8), str(exc)) from None
        except StoreError as exc:
            raise Refused(_rule(exc, Rule.L8), str(exc)) from None
        self._plans[infusion_id] = _plan_view(planned)
        self.notify((infusion_id,))
        return infusion_id

    def plan_of(self, infusion_id: int, state: InfusionState) -> tuple[list[dict[str, float]], str]:
        """The planned ladder (minutes of running time from the start, rate) and the row of
        Table 3 it takes (L4, L5)."""
        if infusion_id not in self._plans:
            try:
                planned = plan(
                    state.protocol, state.infusion_number, state.course, split_day=state.day
                )
            except (PlanningError, ValueError):
                return [], "unknown"
            self._plans[infusion_id] = _plan_view(planned)
        return self._plans[infusion_id]

    async def record_premedication(
        self, infusion_id: int, given_at: datetime, *, actor: str
    ) -> None:
        """D3: premedication given."""
        now = self.clock.now()
        if given_at > now:
            raise Invalid("given_at", "premedication cannot be given in the future")
        try:
            await self.writer.call(
                lambda: self.store.record_premedication(infusion_id, given_at, actor=actor, at=now),
                what="the premedication",
            )
        except NotFoundError:
            raise
        except StoreError as exc:
            raise Refused(Rule.D3, str(exc)) from None
        self.notify((infusion_id,))

    async def start(
        self,
        infusion_id: int,
        *,
        actor: str,
        override_reason: str | None = None,
        schedule_override_reason: str | None = None,
    ) -> InfusionState:
        """Program and start the pump (L3), behind the schedule's gate (D2) and the
        premedication gate (D3), each passed by a clinician's override with a reason (the
        caller checks the role). Write-ahead: refused while the store is degraded."""

        def read() -> tuple[StoredInfusion, Any, datetime | None]:
            stored = self.store.load_infusion(infusion_id)
            return stored, self.store.course_history(stored.course_id), self._previous_start(stored)

        stored, course, previous_start = await self.read(read, what=f"infusion {infusion_id}")
        if stored.phase != InfusionPhase.PLANNED.value:
            raise Refused(Rule.L3, f"infusion {infusion_id} is {stored.phase}, not planned")
        supervisor = self.supervisor(stored.pump_id)
        if supervisor.state is not None and supervisor.state.supervised:
            raise Refused(Rule.A5, _busy(stored.pump_id, supervisor))
        now = self.clock.now()
        state = stored.state
        if course.withdrawn:  # I8 first: no gate's override starts a withdrawn course
            raise Refused(Rule.I8, f"the course is withdrawn (I8): {course.withdrawn_reason}")
        spacing = schedule_gate(
            state.protocol.schedule,
            state.infusion_number,
            state.day,
            previous_start=previous_start,
            start_at=now,
            override_reason=schedule_override_reason,
        )
        if not spacing.allowed:
            raise Refused(Rule.D2, spacing.reason)
        gate = premedication_gate(state.protocol, stored.premedication_at, now, override_reason)
        if not gate.allowed:
            raise Refused(Rule.D3, gate.reason)
        event = _event(Start, actor=actor, course=course)
        _checked(decide(state, event, now))  # refused: nothing attached, nothing sent
        gates = [
            AuditEvent(type=StoreAudit.START_GATE, rule=g.rule, at=now, data=g.audit())  # type: ignore[arg-type]
            for g in (spacing, gate)
        ]
        await self.writer.call(
            lambda: self.store.append_audit(gates, infusion_id=infusion_id, actor=actor),
            what="the start",
        )
        if supervisor.state is not None and supervisor.state.supervised:  # taken meanwhile
            raise Refused(Rule.A5, _busy(stored.pump_id, supervisor))
        supervisor.attach(str(infusion_id), state)
        decision = _checked(supervisor.submit(event))
        # L3: answered once the start's commands have their fates and the pump runs (the run's
        # confirmation ends STARTING), or a reaction or a stop ended it first
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.stop_answer_s):
                await _until_fates(
                    supervisor, lambda s: s.phase is not InfusionPhase.STARTING, _any_command
                )
        return supervisor.state or decision.state

    def _previous_start(self, stored: StoredInfusion) -> datetime | None:
        """D2: when the infusion before `stored` started here (day 1 of infusion 1 before its
        day 2), or None when it is not dated here (none, or entered from elsewhere, L8). On a
        reader thread."""
        number, day = stored.state.infusion_number, stored.state.day
        wanted = (1, 1) if day == 2 else (number - 1, None)
        starts = [
            other.state.started_at
            for other in self.store.infusions(course_id=stored.course_id)
            if other.id != stored.id
            and other.state.started_at is not None
            and other.state.infusion_number == wanted[0]
            and (wanted[1] is None or other.state.day == wanted[1])
        ]
        return min(starts, default=None)

    async def cancel(self, infusion_id: int, reason: str, *, actor: str) -> None:
        """A planned infusion that never started."""
        if not reason.strip():
            raise Invalid("reason", "must not be blank")
        at = self.clock.now()
        try:
            await self.writer.call(
                lambda: self.store.cancel_infusion(infusion_id, reason, actor=actor, at=at),
                what="the cancellation",
            )
        except NotFoundError:
            raise
        except StoreError as exc:
            stored = await self.read(lambda: self.store.load_infusion(infusion_id))
            if _started(stored) and not stored.state.terminal:
                raise Refused(Rule.A6, f"{exc}: stop it for good instead (A6)") from None
            raise Refused(Rule.L8, str(exc)) from None
        self.notify((infusion_id,))

    async def _submit(
        self, infusion_id: int, event: Event
    ) -> tuple[Decision, asyncio.Future[bool] | None]:
        """Decide `event` for the infusion: through its supervisor, or (an infusion no longer
        supervised) on its stored state, saved here. With the decision, the future of its record
        (True once written), or None when it is written already.

        While the store is degraded, an event whose decision would send a pump anything but a
        stop is refused (503): nothing runs unrecorded (write-ahead)."""
        supervisor = self.live(infusion_id)
        if supervisor is not None:
            assert supervisor.state is not None
            if self.writer.health().degraded:
                preview = decide(supervisor.state, event, self.clock.now())
                if any(not isinstance(c, StopPump) for c in preview.pump_commands):
                    self.refuse_unrecorded(f"{event.kind.replace('_', ' ')}")
            decision = _checked(supervisor.submit(event))
            return decision, supervisor.last_record
        stored = await self.read(lambda: self.store.load_infusion(infusion_id))
        if stored.phase in {InfusionPhase.PLANNED.value, "cancelled"}:
            raise Refused(Rule.L3, f"infusion {infusion_id} is {stored.phase}")
        now = self.clock.now()
        decision = _checked(decide(stored.state, event, now))
        if decision.pump_commands:  # never expected of an ended infusion; the pump must act
            self.refuse_unrecorded(f"{event.kind.replace('_', ' ')}")
            supervisor = self.supervisor(stored.pump_id)
            if supervisor.state is not None and supervisor.state.supervised:
                raise Refused(Rule.A5, _busy(stored.pump_id, supervisor))
            supervisor.attach(str(infusion_id), stored.state)
            return _checked(supervisor.submit(event)), supervisor.last_record
        actor = getattr(event, "actor", None)
        await self.writer.call(
            lambda: self.store.save_infusion(
                infusion_id, decision.state, decision.audit, at=now, actor=actor
            ),
            what=f"infusion {infusion_id}'s {event.kind.replace('_', ' ')}",
        )
        self.notify((infusion_id,))
        return decision, None

    async def report_reaction(
        self,
        infusion_id: int,
        grade: int,
        signs: list[str],
        onset_at: datetime | None,
        *,
        actor: str,
        received_at: float | None = None,
    ) -> ReactionOutcome:
        """I1: stop first, record second, answer after both: the stop's fate, and whether the
        record is written (`recorded`: False while it waits for a degraded store)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time() if received_at is None else received_at
        event = _event(
            ReactionReported,
            grade=grade,
            signs=frozenset(_signs(signs)),
            onset_at=onset_at,
            actor=actor,
        )
        supervisor = self.live(infusion_id)
        decision, record = await self._submit(infusion_id, event)
        state = decision.state
        rid = len(state.reactions) + (1 if state.reaction is not None else 0)
        stop = next((c for c in decision.pump_commands if isinstance(c, StopPump)), None)

        def outcome(fate: Any, ms: float | None, phase: str) -> ReactionOutcome:
            recorded = record is None or (record.done() and bool(record.result()))
            return ReactionOutcome(rid, fate, ms, phase, recorded)

        if supervisor is None or supervisor.state is None or (state.terminal and stop is None):
            # I11: after the end (or on an infusion not supervised) nothing is sent to a pump
            await self._recorded(record, REACTION_RECORD_WAIT_S)
            return outcome("no_pump_action", None, state.phase.value)
        if stop is None and not supervisor.state.stop_outstanding:
            await self._recorded(record, REACTION_RECORD_WAIT_S)
            return outcome("already_stopped", None, state.phase.value)
        if not supervisor.state.link_lost:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.stop_answer_s - (loop.time() - t0))):
                    await _until_fates(supervisor, _stop_known, _a_stop)
        now_state = supervisor.state
        if now_state is not None and not now_state.stop_outstanding:
            elapsed = (loop.time() - t0) * 1000
            await self._recorded(record, REACTION_RECORD_WAIT_S)
            return outcome("confirmed", round(elapsed, 2), now_state.phase.value)
        phase = now_state.phase.value if now_state is not None else state.phase.value
        await self._recorded(record, REACTION_RECORD_WAIT_S)
        return outcome("unconfirmed", None, phase)

    async def _open_reaction(self, infusion_id: int, reaction_id: int) -> None:
        _stored, state = await self.state_of(infusion_id)
        open_id = len(state.reactions) + 1 if state.reaction is not None else None
        if reaction_id != open_id:
            if 1 <= reaction_id <= len(state.reactions):
                raise Refused(Rule.I5, f"reaction {reaction_id} is closed")
            raise NotFoundError(f"no reaction {reaction_id} of infusion {infusion_id}")

    async def reassess(
        self, infusion_id: int, reaction_id: int, grade: int, signs: list[str], *, actor: str
    ) -> Acted:
        """I5: a new grade for the open reaction."""
        await self._open_reaction(infusion_id, reaction_id)
        event = _event(Reassessed, grade=grade, signs=frozenset(_signs(signs)), actor=actor)
        return await self._acted(infusion_id, event)

    async def resolve(self, infusion_id: int, reaction_id: int, *, actor: str) -> Acted:
        """I4: symptoms resolved."""
        await self._open_reaction(infusion_id, reaction_id)
        return await self._acted(infusion_id, _event(Resolved, actor=actor))

    async def resume_preview(
        self, infusion_id: int, *, actor: str, no_reaction: bool = False
    ) -> dict[str, Any]:
        """The rate a resume would give now, or the rule that refuses it (decided, not kept)."""
        _stored, state = await self.state_of(infusion_id)
        event = _event(ResumeRequested, actor=actor, no_reaction=no_reaction)
        decision = decide(state, event, self.clock.now())
        if decision.refusal is not None:
            return {
                "allowed": False,
                "rate_ml_h": None,
                "rule": None if decision.refusal.rule is None else str(decision.refusal.rule),
                "message": decision.refusal.reason,
            }
        rate = next(
            (c.rate_ml_h for c in decision.pump_commands if isinstance(c, SetRate)),
            decision.state.rate_ml_h,
        )
        rule = next((str(a.rule) for a in decision.audit if a.rule is not None), None)
        return {
            "allowed": True,
            "rate_ml_h": rate,
            "rule": rule,
            "message": f"resume at {rate:g} ml/h",
        }

    async def resume(self, infusion_id: int, *, actor: str, no_reaction: bool = False) -> Acted:
        """I2/A1: resume at the rate the rules give."""
        event = _event(ResumeRequested, actor=actor, no_reaction=no_reaction)
        return await self._acted(infusion_id, event)

    async def hold(self, infusion_id: int, *, actor: str) -> Acted:
        """L7: hold escalation."""
        return await self._acted(infusion_id, _event(Hold, actor=actor))

    async def release(self, infusion_id: int, *, actor: str) -> Acted:
        """L7: release the hold."""
        return await self._acted(infusion_id, _event(Release, actor=actor))

    async def new_bag(self, infusion_id: int, prepared_at: datetime, *, actor: str) -> Acted:
        """L9: a new bag."""
        if prepared_at > self.clock.now():
            raise Invalid("prepared_at", "a bag cannot be prepared in the future")
        event = _event(BagReplaced, prepared_at=prepared_at, actor=actor)
        return await self._acted(infusion_id, event)

    async def stop(self, infusion_id: int, reason: str, *, actor: str) -> Acted:
        """Stop for good, with a reason (A6): never refused for the store's sake."""
        return await self._acted(infusion_id, _event(Stop, reason=reason, actor=actor))

    async def clear_alarm(
        self, infusion_id: int, alarm: str, *, actor: str, role: Literal["nurse", "clinician"]
    ) -> Acted:
        """A1: acknowledge a latched alarm (never starts the pump)."""
        supervisor = self.live(infusion_id)
        if supervisor is not None:
            decision = _checked(supervisor.clear_alarm(alarm, actor=actor, role=role))
            return Acted(decision, await self._recorded(supervisor.last_record))
        event = _event(ClearAlarm, alarm=alarm, actor=actor, role=role)
        return await self._acted(infusion_id, event)

    async def acknowledge_alarm(self, infusion_id: int, alarm: str, *, actor: str) -> Acted:
        """A8: a nurse or clinician acknowledges an alarm of the infusion: its sound stops on
        every page; the latch (A1), its visual signal and the pump are untouched."""
        return await self._acted(infusion_id, _event(AcknowledgeAlarm, alarm=alarm, actor=actor))

    async def _recorded(
        self, record: asyncio.Future[bool] | None, bound_s: float = RECORD_WAIT_S
    ) -> bool:
        """Whether `record` is written, waited for at most `bound_s` (not at all while the
        store is degraded)."""
        return await _briefly(record, 0.0 if self.writer.health().degraded else bound_s)

    async def _acted(self, infusion_id: int, event: Event) -> Acted:
        """`_submit`, answered once its record is written or `RECORD_WAIT_S` has passed. An
        action that sends a pump anything but a stop waits for its record as long as its
        commands do (`WRITE_AHEAD_S`): not written by then, they are never sent, and the
        answer is 503 saying so, never a "done" that would run the pump later on its own."""
        decision, record = await self._submit(infusion_id, event)
        runs = any(not isinstance(c, StopPump) for c in decision.pump_commands)
        if not runs or record is None:
            return Acted(decision, await self._recorded(record))
        if not await _briefly(record, WRITE_AHEAD_S + WRITE_AHEAD_MARGIN_S):
            raise StoreUnavailable(
                f"the store did not record the {event.kind.replace('_', ' ')} within "
                f"{WRITE_AHEAD_S:g} s: nothing was sent to the pump, which stays as it was "
                "(write-ahead, A3); try again once /health says the store is up"
            )
        return Acted(decision, True)

    async def wall_clock_stepped(self, step_s: float, *, wall_offset_s: float) -> None:
        """A7: the gateway's wall clock was stepped by `step_s` seconds: audited (no infusion's
        clinical time moved) by the store's writer thread, so a store that does not answer
        holds no stop on this event loop; the listeners are told once it is written."""
        event = AuditEvent(
            type=StoreAudit.CLOCK_STEP,  # type: ignore[arg-type]
            rule=Rule.A7,
            at=self.clock.now(),
            data={"step_s": round(step_s, 3), "wall_offset_s": round(wall_offset_s, 3)},
        )
        written = self.writer.record(
            lambda: self.store.append_audit([event]), what="the wall clock's step (A7)"
        )
        written.add_done_callback(lambda _w: self.notify(()))

    # -- views -------------------------------------------------------------------------------

    def next_escalation_at(self, state: InfusionState) -> datetime | None:
        """L1: when the next step falls due (None when none is due on time)."""
        return next((d.at for d in deadlines(state) if d.kind is DeadlineKind.ESCALATION), None)


def _plan_view(planned: Plan) -> tuple[list[dict[str, float]], str]:
    steps = [{"at_min": s.start_min, "rate_ml_h": s.rate_ml_h} for s in planned.steps]
    return steps, str(planned.row.kind)


async def _until_fates(
    supervisor: PumpSupervisor,
    holds: Callable[[InfusionState], bool],
    awaited: Callable[[SentCommand], bool],
) -> None:
    """Return once `holds(state)` is true of the supervisor's infusion, looked at now and again
    at each fate of a command its state awaits that `awaited` names (the futures the supervisor
    registered before sending them, `PumpSupervisor.fates`); at once when no such fate is left
    to come, or the supervisor took another infusion. Bound it with a timeout.

    Every way a stop's answer can change comes with such a fate (the core settles a command on
    its fate, and marks a stop unconfirmed only on a stop's fate or when none is outstanding),
    so looking at each one answers as soon as looking after every decision would."""
    infusion_id = supervisor.infusion_id
    while (state := supervisor.state) is not None and supervisor.infusion_id == infusion_id:
        if holds(state):
            return
        fates = supervisor.fates(c.id for c in state.outstanding if awaited(c))
        if not fates:
            return  # no fate to come that could change it
        await asyncio.wait(fates.values(), return_when=asyncio.FIRST_COMPLETED)


def _stop_known(state: InfusionState) -> bool:
    """A3: the stop's fate is known: none outstanding (confirmed), or one unconfirmed (the
    pump not stopped: "clamp the line"), which also holds at once when a stop failed before
    this one or another stop's fate shows it."""
    return not state.stop_outstanding or state.stop_unconfirmed


def _a_stop(command: SentCommand) -> bool:
    return command.op is CommandOp.STOP


def _any_command(command: SentCommand) -> bool:
    del command
    return True


def _signs(signs: list[str]) -> list[Sign]:
    try:
        return [Sign(s) for s in signs]
    except ValueError:
        known = ", ".join(s.value for s in Sign)
        raise Invalid("signs", f"each sign is one of {known}") from None


def _busy(pump_id: str, supervisor: PumpSupervisor) -> str:
    return f"pump {pump_id} is busy with infusion {supervisor.infusion_id} (A5)"


def _rule(refusal: StoreError | PlanningError, default: Rule) -> Rule:
    """The rule a store's or the planner's refusal names (as data, never read out of its
    words), else `default`."""
    return refusal.rule if refusal.rule is not None else default


def _started(stored: StoredInfusion) -> bool:
    """Given to the pump at some time: neither planned nor cancelled."""
    return stored.phase not in {InfusionPhase.PLANNED.value, "cancelled"}


def _next_number(protocol: Protocol, history: Any) -> tuple[int, int | None]:
    """The next infusion number of the course, and its day when it is a split first dose."""
    if is_split_first_dose(protocol, 1):
        days = [r.day for r in history.infusion(1)]
        if 1 not in days:
            return 1, 1
        if 2 not in days:
            return 1, 2
    return history.next_infusion_number, None
