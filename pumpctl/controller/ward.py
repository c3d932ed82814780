"""The ward: what the service asks of the controller and the store, one method per action.

Every action either acts or refuses. A refusal names the rule (`Refused`, 409) or the field
(`Invalid`, 422); an unknown id is `NotFoundError` (404). Nothing here talks to a pump: actions
become events for a pump's supervisor (`PumpSupervisor.submit`), which decides, sends and
records; readers use the supervisors' cached state and the store.

The reaction button (architecture.md, "One press"): the supervisor sends the stop at once and
records the decision after it; `report_reaction` answers once the stop is confirmed by the
pump's read-back, or, when it is not confirmed within `stop_answer_s` (or at once when the link
is already lost), as unconfirmed (A3: "Pump did not stop: clamp the line").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from pumpctl.clock import Clock
from pumpctl.controller.recording import StoreRecorder
from pumpctl.controller.supervisor import PumpSupervisor
from pumpctl.core.course import entry_withdrawal
from pumpctl.core.dose import premedication_gate, schedule_gate
from pumpctl.core.history import InfusionRecord, Sign
from pumpctl.core.machine import (
    BagReplaced,
    ClearAlarm,
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
from pumpctl.store.store import StoreAudit

__all__ = ["A3_WORDS", "Invalid", "ReactionOutcome", "Refused", "Ward"]

#: What the staff are told when a stop is not confirmed (A3; interfaces.md, section 3).
A3_WORDS = "Pump did not stop: clamp the line"


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


Notify = Callable[[], None]


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
        transports: Mapping[str, str] | None = None,
        default_protocol: str = "daratumumab",
        stop_answer_s: float = 4.5,
    ) -> None:
        self.store = store
        self.clock = clock
        self.supervisors = dict(supervisors)
        self.protocols = protocols
        self.transports = dict(transports or {})
        self.default_protocol = default_protocol
        self.stop_answer_s = stop_answer_s
        self.listeners: list[Notify] = []
        self._change_seq = 0  # notify() calls so far
        self._everything_at = 0  # the last notify() that named no infusions
        self._changed_at: dict[int, int] = {}  # infusion id: the last notify() naming it
        self._plans: dict[int, tuple[list[dict[str, float]], str]] = {}
        for pump_id, supervisor in self.supervisors.items():
            supervisor.recorder = self._recorder(StoreRecorder(store, pump_id))

    def _recorder(self, inner: StoreRecorder) -> Callable[[str, Event, Decision], None]:
        def record(infusion_id: str, event: Event, decision: Decision) -> None:
            inner(infusion_id, event, decision)
            if decision.audit:
                self.notify((int(infusion_id),))

        return record

    def notify(self, infusions: Iterable[int] | None = None) -> None:
        """Tell the listeners (the live event stream, the MQTT publisher) something changed:
        the `infusions` named (an empty one: none of them), or anything (None)."""
        self._change_seq += 1
        if infusions is None:
            self._everything_at = self._change_seq
        else:
            for infusion_id in infusions:
                self._changed_at[infusion_id] = self._change_seq
        for listener in list(self.listeners):
            listener()

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

    def state_of(self, infusion_id: int) -> tuple[StoredInfusion, InfusionState]:
        """The stored infusion and its newest state (the supervisor's when it holds it)."""
        stored = self.store.load_infusion(infusion_id)
        supervisor = self.live(infusion_id)
        state = supervisor.state if supervisor is not None and supervisor.state else stored.state
        return stored, state

    # -- patients --------------------------------------------------------------------------

    def create_patient(
        self, mrn: str, weight_kg: float, protocol: str | None, *, actor: str
    ) -> tuple[int, int]:
        """A patient and their course on `protocol`; (patient id, course id)."""
        name = protocol or self.default_protocol
        try:
            self.protocols(name)
        except (ValueError, OSError, KeyError) as exc:
            raise Invalid("protocol", str(exc)) from None
        now = self.clock.now()
        try:
            patient_id = self.store.create_patient(mrn, weight_kg, actor=actor, at=now)
        except InfusionConflictError as exc:
            raise Refused(exc.rule, str(exc)) from None
        except StoreError as exc:
            raise Invalid("mrn", str(exc)) from None
        course_id = self.store.create_course(patient_id, name, actor=actor, at=now)
        self.notify(())  # a patient and a course: no infusion changed
        return patient_id, course_id

    def enter_history(self, patient_id: int, record: InfusionRecord, *, actor: str) -> None:
        """L8: an infusion given elsewhere, entered by a clinician. It counts for I3 and I6 (and
        the label's I7) as a live report does: a history that demands it withdraws the course at
        once (I8, audited). Refused (L8) while an infusion of the course is under way: its
        machine read the course when it started, so history is entered between infusions."""
        course_id = self.course_id_of(patient_id)
        for stored in self.store.infusions(course_id=course_id):
            if _started(stored) and stored.state.supervised:
                raise Refused(
                    Rule.L8,
                    f"infusion {stored.id} of this course is under way: enter history "
                    "between infusions (L8)",
                )
        rules = self.protocols(self.store.course(course_id).protocol).reactions
        try:
            self.store.enter_history(
                course_id,
                record,
                actor=actor,
                at=self.clock.now(),
                judge=lambda before, entry: entry_withdrawal(before, entry, rules),
            )
        except NotFoundError:
            raise
        except StoreError as exc:
            raise Refused(Rule.L8, str(exc)) from None
        self.notify()

    def course_id_of(self, patient_id: int) -> int:
        """The patient's current (latest) course."""
        courses = self.store.courses_of(patient_id)
        if not courses or courses[-1].id is None:
            raise NotFoundError(f"patient {patient_id} has no course")
        return courses[-1].id

    # -- infusions -------------------------------------------------------------------------

    def create_infusion(
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
        patient = self.store.patient(patient_id)
        course_id = self.course_id_of(patient_id)
        course = self.store.course(course_id)
        history = self.store.course_history(course_id)
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
            raise Refused(_rule_in(str(exc), Rule.L8), str(exc)) from None
        except ValueError as exc:
            raise Invalid(
                "bag_prepared_at" if bag_prepared_at else "patient_id", str(exc)
            ) from None
        try:
            infusion_id = self.store.create_infusion(
                course_id,
                pump_id,
                state,
                at=now,
                actor=actor,
                weight_kg=weight,
                dose_mg=planned.dose_mg,
                premedication_at=premedication_at,
            )
        except InfusionConflictError as exc:
            raise Refused(exc.rule, str(exc)) from None
        except StoreError as exc:
            raise Refused(_rule_in(str(exc), Rule.L8), str(exc)) from None
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

    def record_premedication(self, infusion_id: int, given_at: datetime, *, actor: str) -> None:
        """D3: premedication given."""
        now = self.clock.now()
        if given_at > now:
            raise Invalid("given_at", "premedication cannot be given in the future")
        try:
            self.store.record_premedication(infusion_id, given_at, actor=actor, at=now)
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
        caller checks the role)."""
        stored = self.store.load_infusion(infusion_id)
        if stored.phase != InfusionPhase.PLANNED.value:
            raise Refused(Rule.L3, f"infusion {infusion_id} is {stored.phase}, not planned")
        supervisor = self.supervisor(stored.pump_id)
        if supervisor.state is not None and supervisor.state.supervised:
            raise Refused(Rule.A5, _busy(stored.pump_id, supervisor))
        now = self.clock.now()
        state = stored.state
        course = self.store.course_history(stored.course_id)
        if course.withdrawn:  # I8 first: no gate's override starts a withdrawn course
            raise Refused(Rule.I8, f"the course is withdrawn (I8): {course.withdrawn_reason}")
        spacing = schedule_gate(
            state.protocol.schedule,
            state.infusion_number,
            state.day,
            previous_start=self._previous_start(stored),
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
        self.store.append_audit(
            [
                AuditEvent(type=StoreAudit.START_GATE, rule=g.rule, at=now, data=g.audit())  # type: ignore[arg-type]
                for g in (spacing, gate)
            ],
            infusion_id=infusion_id,
            actor=actor,
        )
        supervisor.attach(str(infusion_id), state)
        decision = _checked(supervisor.submit(event))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.stop_answer_s):
                await supervisor.wait_until(
                    lambda s: s.state is not None and s.state.phase is not InfusionPhase.STARTING
                )
        return supervisor.state or decision.state

    def _previous_start(self, stored: StoredInfusion) -> datetime | None:
        """D2: when the infusion before `stored` started here (day 1 of infusion 1 before its
        day 2), or None when it is not dated here (none, or entered from elsewhere, L8)."""
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

    def cancel(self, infusion_id: int, reason: str, *, actor: str) -> None:
        """A planned infusion that never started."""
        if not reason.strip():
            raise Invalid("reason", "must not be blank")
        try:
            self.store.cancel_infusion(infusion_id, reason, actor=actor, at=self.clock.now())
        except NotFoundError:
            raise
        except StoreError as exc:
            stored = self.store.load_infusion(infusion_id)
            if _started(stored) and not stored.state.terminal:
                raise Refused(Rule.A6, f"{exc}: stop it for good instead (A6)") from None
            raise Refused(Rule.L8, str(exc)) from None
        self.notify((infusion_id,))

    def _submit(self, infusion_id: int, event: Event) -> Decision:
        """Decide `event` for the infusion: through its supervisor, or (an infusion no longer
        supervised) on its stored state, saved here."""
        supervisor = self.live(infusion_id)
        if supervisor is not None:
            return _checked(supervisor.submit(event))
        stored = self.store.load_infusion(infusion_id)
        if stored.phase in {InfusionPhase.PLANNED.value, "cancelled"}:
            raise Refused(Rule.L3, f"infusion {infusion_id} is {stored.phase}")
        now = self.clock.now()
        decision = _checked(decide(stored.state, event, now))
        if decision.pump_commands:  # never expected of an ended infusion; the pump must act
            supervisor = self.supervisor(stored.pump_id)
            if supervisor.state is not None and supervisor.state.supervised:
                raise Refused(Rule.A5, _busy(stored.pump_id, supervisor))
            supervisor.attach(str(infusion_id), stored.state)
            return _checked(supervisor.submit(event))
        actor = getattr(event, "actor", None)
        self.store.save_infusion(infusion_id, decision.state, decision.audit, at=now, actor=actor)
        self.notify((infusion_id,))
        return decision

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
        """I1: stop first, record second, answer after both."""
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
        decision = self._submit(infusion_id, event)
        state = decision.state
        rid = len(state.reactions) + (1 if state.reaction is not None else 0)
        stop = next((c for c in decision.pump_commands if isinstance(c, StopPump)), None)
        if supervisor is None or supervisor.state is None or (state.terminal and stop is None):
            # I11: after the end (or on an infusion not supervised) nothing is sent to a pump
            return ReactionOutcome(rid, "no_pump_action", None, state.phase.value)
        if stop is None and not supervisor.state.stop_outstanding:
            return ReactionOutcome(rid, "already_stopped", None, state.phase.value)
        if not supervisor.state.link_lost:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self.stop_answer_s - (loop.time() - t0))):
                    await supervisor.wait_until(_stop_settled)
        now_state = supervisor.state
        if now_state is not None and not now_state.stop_outstanding:
            elapsed = (loop.time() - t0) * 1000
            return ReactionOutcome(rid, "confirmed", round(elapsed, 2), now_state.phase.value)
        phase = now_state.phase.value if now_state is not None else state.phase.value
        return ReactionOutcome(rid, "unconfirmed", None, phase)

    def _open_reaction(self, infusion_id: int, reaction_id: int) -> None:
        _stored, state = self.state_of(infusion_id)
        open_id = len(state.reactions) + 1 if state.reaction is not None else None
        if reaction_id != open_id:
            if 1 <= reaction_id <= len(state.reactions):
                raise Refused(Rule.I5, f"reaction {reaction_id} is closed")
            raise NotFoundError(f"no reaction {reaction_id} of infusion {infusion_id}")

    def reassess(
        self, infusion_id: int, reaction_id: int, grade: int, signs: list[str], *, actor: str
    ) -> Decision:
        """I5: a new grade for the open reaction."""
        self._open_reaction(infusion_id, reaction_id)
        event = _event(Reassessed, grade=grade, signs=frozenset(_signs(signs)), actor=actor)
        return self._submit(infusion_id, event)

    def resolve(self, infusion_id: int, reaction_id: int, *, actor: str) -> Decision:
        """I4: symptoms resolved."""
        self._open_reaction(infusion_id, reaction_id)
        return self._submit(infusion_id, _event(Resolved, actor=actor))

    def resume_preview(
        self, infusion_id: int, *, actor: str, no_reaction: bool = False
    ) -> dict[str, Any]:
        """The rate a resume would give now, or the rule that refuses it (decided, not kept)."""
        _stored, state = self.state_of(infusion_id)
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

    def resume(self, infusion_id: int, *, actor: str, no_reaction: bool = False) -> Decision:
        """I2/A1: resume at the rate the rules give."""
        return self._submit(
            infusion_id, _event(ResumeRequested, actor=actor, no_reaction=no_reaction)
        )

    def hold(self, infusion_id: int, *, actor: str) -> Decision:
        """L7: hold escalation."""
        return self._submit(infusion_id, _event(Hold, actor=actor))

    def release(self, infusion_id: int, *, actor: str) -> Decision:
        """L7: release the hold."""
        return self._submit(infusion_id, _event(Release, actor=actor))

    def new_bag(self, infusion_id: int, prepared_at: datetime, *, actor: str) -> Decision:
        """L9: a new bag."""
        if prepared_at > self.clock.now():
            raise Invalid("prepared_at", "a bag cannot be prepared in the future")
        return self._submit(infusion_id, _event(BagReplaced, prepared_at=prepared_at, actor=actor))

    def stop(self, infusion_id: int, reason: str, *, actor: str) -> Decision:
        """Stop for good, with a reason."""
        return self._submit(infusion_id, _event(Stop, reason=reason, actor=actor))

    def clear_alarm(
        self, infusion_id: int, alarm: str, *, actor: str, role: Literal["nurse", "clinician"]
    ) -> Decision:
        """A1: acknowledge a latched alarm (never starts the pump)."""
        supervisor = self.live(infusion_id)
        if supervisor is not None:
            return _checked(supervisor.clear_alarm(alarm, actor=actor, role=role))
        return self._submit(infusion_id, _event(ClearAlarm, alarm=alarm, actor=actor, role=role))

    async def wall_clock_stepped(self, step_s: float, *, wall_offset_s: float) -> None:
        """A7: the gateway's wall clock was stepped by `step_s` seconds: audited (no infusion's
        clinical time moved) from a worker thread, so a store that does not answer holds no
        stop on this event loop; then the listeners are told."""
        event = AuditEvent(
            type=StoreAudit.CLOCK_STEP,  # type: ignore[arg-type]
            rule=Rule.A7,
            at=self.clock.now(),
            data={"step_s": round(step_s, 3), "wall_offset_s": round(wall_offset_s, 3)},
        )
        await asyncio.to_thread(self.store.append_audit, [event])
        self.notify(())

    # -- views -------------------------------------------------------------------------------

    def next_escalation_at(self, state: InfusionState) -> datetime | None:
        """L1: when the next step falls due (None when none is due on time)."""
        return next((d.at for d in deadlines(state) if d.kind is DeadlineKind.ESCALATION), None)


def _plan_view(planned: Plan) -> tuple[list[dict[str, float]], str]:
    steps = [{"at_min": s.start_min, "rate_ml_h": s.rate_ml_h} for s in planned.steps]
    return steps, str(planned.row.kind)


def _stop_settled(supervisor: PumpSupervisor) -> bool:
    state = supervisor.state
    return state is None or not state.stop_outstanding or state.stop_unconfirmed


def _signs(signs: list[str]) -> list[Sign]:
    try:
        return [Sign(s) for s in signs]
    except ValueError:
        known = ", ".join(s.value for s in Sign)
        raise Invalid("signs", f"each sign is one of {known}") from None


def _busy(pump_id: str, supervisor: PumpSupervisor) -> str:
    return f"pump {pump_id} is busy with infusion {supervisor.infusion_id} (A5)"


def _rule_in(message: str, default: Rule) -> str:
    """The rule id a core or store message names, else `default`."""
    for rule in Rule:
        if f"({rule})" in message or f" {rule}:" in f" {message}":
            return rule.value
    return default.value


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
