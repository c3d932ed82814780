"""Stateful sequences of every event the rules core takes (issue 7: L1-L3, L7, I2-I9, A1-A4).

A hypothesis `RuleBasedStateMachine` drives one infusion through random sequences of every
event type: staff actions, valid and hostile (grade `True`, 0, 5, "2"; no signs; a blank actor;
an onset in 1999, in the future, before the start or the last resume; naive datetimes; strings
for rates); pump statuses, truthful ones from a `FakePump` and false ones (faster, slower,
stopped, volumes going backwards or huge); the fates of outstanding commands (confirmed after
the pump carried them out, denied, unconfirmed, and fates naming ids nobody sent); link losses
and restorations, controller restarts, power resets, pump alarms raised and cleared, alarms
cleared by a nurse or a clinician, new bags; and clinical time (to the next deadline, random
spans, and a `now` that is backwards, naive or implausible). The pump model stays consistent:
a command changes the `FakePump` only when it is carried out (by a fate rule, or by a ledger
that confirms a decision's commands at once, always, often or never, drawn per example), and
the pump infuses, and stops by itself at its VTBI, as clinical time passes.

After every call of `decide` the machine asserts:

1. `decide` never raises, and no `core_fault` alarm or audit appears (the core's safety net
   must never be what kept it going).
2. L2: every `SetRate` is above 0 and at most the protocol maximum; a rise is at most one
   increment above the rate commanded before it and the rate last confirmed running (L1), and
   before any rate was confirmed running nothing exceeds the row's initial rate.
3. L1: no rise (a `SetRate` above the last non-zero confirmed rate) less than one interval of
   clinical time after the last confirmed change of rate (mirroring `record_confirmed_rate`:
   running again at the same rate after an alarm or a new bag is no change), the last resume
   after a reaction (I2) or the last release of a hold (L7); no step while held (L7).
4. I9: no resume that A3 (a stop outstanding), A2, A1, I4 (hold open), I5 (grade >= 3 inside the
   window), I6 (third grade >= 3) or I8 forbid; a resume after a reaction is at most half the
   lower of the rate at onset and the last rate before the interruption (I2), and never above
   half the rate last confirmed running when the reaction began; one with no reaction
   continues at the step (A1).
5. Every refusal names a rule, or (invalid input) a field; a refused event changes nothing but
   what `decide(before, TimePassed(), now)` changes, commands included; an invalid `now`
   changes nothing at all. Hostile input is refused as invalid, naming the field.
6. L3, I8: a completed, withdrawn or stopped infusion never commands `SetRate`, `Run` or
   `SetVtbi`.

And between steps (A4): the state survives storage unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from random import Random

from hypothesis import HealthCheck, settings
from hypothesis import event as reached
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from machine_scenario import LABEL, REVIEW, T0, FakePump, clean_course, examples, planned

from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.limits import round_down
from pumpctl.core.machine import (
    AcknowledgeAlarm,
    AuditType,
    BagReplaced,
    ClearAlarm,
    CommandConfirmed,
    CommandDenied,
    CommandUnconfirmed,
    Decision,
    Hold,
    InfusionPhase,
    InfusionState,
    LinkLost,
    LinkRestored,
    MachineAlarm,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCommand,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    PumpPowerReset,
    RaiseAlarm,
    ReactionReported,
    Reassessed,
    Release,
    Resolved,
    Restarted,
    ResumeRequested,
    Run,
    SetRate,
    SetVtbi,
    Start,
    Stop,
    TimePassed,
    decide,
    next_deadline,
)
from pumpctl.core.protocol import RowKind
from pumpctl.core.rules import Rule

EPS = 1e-9
MICROSECOND = timedelta(microseconds=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
NAIVE = T0.replace(tzinfo=None)

OTHER, SPASM, EDEMA = (
    frozenset({sign}) for sign in (Sign.OTHER, Sign.BRONCHOSPASM, Sign.LARYNGEAL_EDEMA)
)
GRADES = st.sampled_from([1, 1, 1, 2, 2, 3, 4])  # mild ones often, so resumes are reached
SIGNS = st.sampled_from([OTHER] * 9 + [SPASM, SPASM, SPASM | OTHER, EDEMA, EDEMA | SPASM])
ACTORS = st.sampled_from(["nurse", "nurse", "clinician", "  a nurse  "])
RATES = st.sampled_from([0.0, 0.1, 12.5, 25.0, 50.0, 75.0, 100.0, 150.0, 166.6, 200.0, 250.0, 1000])
MINUTES = st.sampled_from([0.001, 0.5, 1, 2, 5, 15, 30, 59, 59.999, 60, 61, 90, 120, 360, 900])
PUMP_ALARMS = st.sampled_from(["occlusion", "air_in_line", "door_open", "low_battery"])
STOPS_THE_PUMP = frozenset({"occlusion", "air_in_line", "door_open"})
ALARM_NAMES = st.sampled_from(
    [*(a.value for a in MachineAlarm), "occlusion", "air_in_line", "never_raised"]
)

# Hostile staff input: (the raw event, the field its refusal must name).
REACTION = {"kind": "reaction", "grade": 2, "signs": ["other"], "actor": "nurse"}
HOSTILE_STAFF: list[tuple[object, str]] = [
    ({**REACTION, "grade": True}, "grade"),
    ({**REACTION, "grade": 0}, "grade"),
    ({**REACTION, "grade": 5}, "grade"),
    ({**REACTION, "grade": "2"}, "grade"),
    ({**REACTION, "grade": 2.0}, "grade"),
    ({**REACTION, "grade": None}, "grade"),
    ({**REACTION, "signs": []}, "signs"),
    ({**REACTION, "signs": ["sneezing"]}, "signs.0"),
    ({**REACTION, "actor": "   "}, "actor"),
    ({**REACTION, "actor": ""}, "actor"),
    ({**REACTION, "onset_at": NAIVE}, "onset_at"),
    ({**REACTION, "onset_at": datetime(1999, 12, 31, 23, 0, tzinfo=UTC)}, "onset_at"),
    ({**REACTION, "onset_at": datetime(2300, 1, 1, tzinfo=UTC)}, "onset_at"),
    ({**REACTION, "onset_at": "an hour ago"}, "onset_at"),
    ({**REACTION, "kind": "reassessed", "grade": True}, "grade"),
    ({"kind": "reassessed", "grade": 3, "signs": [], "actor": "nurse"}, "signs"),
    ({"kind": "resolved", "actor": " "}, "actor"),
    ({"kind": "resume"}, "actor"),
    ({"kind": "resume", "actor": "nurse", "no_reaction": "perhaps"}, "no_reaction"),
    ({"kind": "hold", "actor": "nurse", "rate_ml_h": 200}, "rate_ml_h"),
    ({"kind": "release", "actor": None}, "actor"),
    ({"kind": "stop", "reason": "  ", "actor": "nurse"}, "reason"),
    ({"kind": "clear_alarm", "alarm": "comm_loss", "actor": "nurse", "role": "porter"}, "role"),
    ({"kind": "clear_alarm", "alarm": "", "actor": "nurse", "role": "nurse"}, "alarm"),
    ({"kind": "bag_replaced", "prepared_at": NAIVE, "actor": "nurse"}, "prepared_at"),
    ({"kind": "bag_replaced", "prepared_at": "this morning", "actor": "nurse"}, "prepared_at"),
    ({"kind": "start", "actor": "nurse", "course": "the usual"}, "course"),
    ({"kind": "explode", "actor": "nurse"}, "kind"),
    ({"grade": 2, "actor": "nurse"}, "kind"),
    (42, "event"),
    ("reaction", "event"),
    (None, "event"),
]
HOSTILE_PUMP: list[tuple[object, str]] = [
    ({"kind": "pump_running", "rate_ml_h": "70", "volume_infused_ml": 1.0}, "rate_ml_h"),
    ({"kind": "pump_running", "rate_ml_h": "70 kg", "volume_infused_ml": 1.0}, "rate_ml_h"),
    ({"kind": "pump_running", "rate_ml_h": -5.0, "volume_infused_ml": 1.0}, "rate_ml_h"),
    ({"kind": "pump_running", "rate_ml_h": True, "volume_infused_ml": 1.0}, "rate_ml_h"),
    ({"kind": "pump_running", "rate_ml_h": float("nan"), "volume_infused_ml": 1.0}, "rate_ml_h"),
    ({"kind": "pump_running", "rate_ml_h": 1e9, "volume_infused_ml": 1.0}, "rate_ml_h"),
    ({"kind": "pump_running", "rate_ml_h": 50.0, "volume_infused_ml": -1.0}, "volume_infused_ml"),
    ({"kind": "pump_stopped", "volume_infused_ml": float("inf")}, "volume_infused_ml"),
    ({"kind": "pump_stopped", "volume_infused_ml": 1e6}, "volume_infused_ml"),
    ({"kind": "pump_completed", "volume_infused_ml": "1000"}, "volume_infused_ml"),
    ({"kind": "power_reset"}, "volume_infused_ml"),
    ({"kind": "alarm_raised", "alarm": ""}, "alarm"),
    ({"kind": "alarm_cleared", "alarm": "x" * 65}, "alarm"),
    (
        {"kind": "link_restored", "running": "perhaps", "rate_ml_h": 1.0, "volume_infused_ml": 0},
        "running",
    ),
    (
        {"kind": "restarted", "running": True, "rate_ml_h": "fast", "volume_infused_ml": 0},
        "rate_ml_h",
    ),
    (
        {
            "kind": "command_confirmed",
            "command_id": "first",
            "running": True,
            "rate_ml_h": 50.0,
            "volume_infused_ml": 0.0,
        },
        "command_id",
    ),
    ({"kind": "command_denied", "command_id": 0, "reason": "busy"}, "command_id"),
    ({"kind": "command_denied", "command_id": -3, "reason": "busy"}, "command_id"),
    ({"kind": "command_denied", "command_id": 1, "reason": "  "}, "reason"),
    ({"kind": "command_unconfirmed", "command_id": "one"}, "command_id"),
    ({"kind": "command_unconfirmed", "command_id": 1.5}, "command_id"),
    ({"kind": "link_lost", "why": "cable"}, "why"),
    ({"kind": "time_passed", "minutes": 60}, "minutes"),
]


def valid_now(state: InfusionState, now: object) -> bool:
    """The core's reading of a plausible clinical `now` (aware, 2000-2200, never backwards)."""
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        return False
    if not EARLIEST <= now < LATEST:
        return False
    return state.last_event_at is None or now >= state.last_event_at


def severe_occurrences(state: InfusionState) -> int:
    """I6: reactions reaching grade >= 3 over the course and this infusion (its open one too)."""
    severe = state.protocol.reactions.severe_grade
    earlier = sum(1 for i in state.course.infusions for r in i.reactions if r.max_grade >= severe)
    return earlier + sum(1 for r in state.reaction_records if r.max_grade >= severe)


def forbids_resume(state: InfusionState) -> bool:
    """A3 (a stop outstanding), A2, A1, I4 (hold open) or I5 (grade >= 3 in the window)."""
    reaction = state.reaction
    severe = state.protocol.reactions.severe_grade
    return (
        state.stop_outstanding
        or state.link_lost
        or bool(state.alarms)
        or (reaction is not None and reaction.hold_open)
        or (reaction is not None and reaction.window_open and reaction.grade >= severe)
    )


def course_with(number: int, severe_before: int) -> CourseState:
    """A course for infusion `number`; `severe_before` grade 3 reactions in infusion 1 (I6)."""
    course = clean_course(number)
    if number == 1 or severe_before == 0:
        return course
    reaction = ReactionRecord(
        grade=3, max_grade=3, signs=OTHER, rate_ml_h=100.0, running_min=200.0, infusion_number=1
    )
    first = InfusionRecord(
        infusion_number=1, highest_rate_ml_h=200.0, reactions=(reaction,) * severe_before
    )
    return CourseState(infusions=(first, *course.infusions[1:]))


class InfusionSequences(RuleBasedStateMachine):
    """One infusion, a pump, a clock and the commands whose fate is not yet known."""

    def __init__(self) -> None:
        super().__init__()
        self.state: InfusionState = planned()
        self.now = T0
        self.pump = FakePump()
        self.unfated: list[PumpCommand] = []  # sent, fate not yet reported
        self.fated: list[int] = []  # ids whose fate was reported (for stale fates)
        self.expects: dict[int, float] = {}  # A3: the rate a SetRate or Run expects, by id
        self.ran_at = 0.0  # I2: the last non-zero rate confirmed running (0: never)
        self.interval_from: datetime | None = None  # L1: the last confirmed change, resume, release
        self.commanded: float | None = None  # the rate of the last SetRate
        self.reaction_ran_at = 0.0  # `ran_at` when the open reaction began
        self.obedience = 0.0  # how often the ledger carries out and confirms a decision at once
        self.random = Random(0)
        self.resumed_after_reaction = False  # (coverage: shown by --hypothesis-show-statistics)

    # --- the one entry: decide, check, carry ---------------------------------------------

    def feed(self, event: object, now: object = None) -> Decision:
        at = self.now if now is None else now
        before = self.state
        decision = decide(before, event, at)  # type: ignore[arg-type]
        self.check(before, event, at, decision)
        self.state = decision.state
        return decision

    def act(self, event: object) -> Decision:
        """Feed `event`; an obedient ledger then carries out and confirms every command (A3)."""
        decision = self.feed(event)
        if self.random.random() < self.obedience:
            self.settle()
        return decision

    def settle(self) -> None:
        """Every command carried out and confirmed, in order (confirmations may send more)."""
        for _ in range(30):
            if not self.unfated:
                return
            self.carry_out(0)

    def check(self, before: InfusionState, event: object, at: object, d: Decision) -> None:
        after = d.state
        # 1. No fault of the core hidden by its safety net.
        assert not any(a.type is AuditType.CORE_FAULT for a in d.audit), d.audit
        assert not any(
            isinstance(c, RaiseAlarm) and c.kind is MachineAlarm.CORE_FAULT for c in d.commands
        ), d.commands
        assert MachineAlarm.CORE_FAULT.value not in after.latched
        if not valid_now(before, at):
            # 5. An implausible `now` is invalid input and changes nothing at all.
            assert d.refusal is not None
            assert d.refusal.kind == "invalid"
            assert d.refusal.field == "now"
            assert after == before
            assert d.commands == ()
            return
        assert isinstance(at, datetime)
        if d.refusal is not None:
            self.check_refusal(before, at, d)
        caught: InfusionState | None = None
        if isinstance(event, ResumeRequested) and d.refusal is None:
            caught = decide(before, TimePassed(), at).state
            self.check_resume(caught, d)
        # 6. L3, I8: an ended infusion never programs or runs the pump.
        moving = [c for c in d.commands if isinstance(c, SetRate | Run | SetVtbi)]
        if before.terminal:
            assert not moving, (before.phase, moving)
        elif after.terminal and moving:
            # Ended by this event: only a step that fell due before it (a late driver) may go
            # out with the decision; the event itself moves nothing.
            alone = decide(before, TimePassed(), at)
            assert all(c in alone.commands for c in moving), (after.phase, moving)
        self.check_rates(before, at, d)
        for command in d.pump_commands:  # L3: VTBI never more than the bag (over every bag)
            if isinstance(command, SetVtbi):
                assert after.delivered_before_bag_ml + command.volume_ml <= after.bag_ml + 1e-6
        assert after.running_min >= before.running_min
        for a in d.audit:  # what the examples reached (--hypothesis-show-statistics)
            reached(f"{a.type} {a.rule}")
        if d.refusal is not None:
            reached(f"refused {d.refusal.kind} {d.refusal.rule or d.refusal.field}")
        self.track(before, event, at, d, caught)

    def check_refusal(self, before: InfusionState, at: datetime, d: Decision) -> None:
        """5. A refusal names a rule or a field, and changes only what time alone changes."""
        refusal = d.refusal
        assert refusal is not None
        if refusal.kind == "rule":
            assert isinstance(refusal.rule, Rule), refusal
        else:
            assert refusal.kind == "invalid", refusal
            assert isinstance(refusal.field, str), refusal
            assert refusal.field.strip(), refusal
        alone = decide(before, TimePassed(), at)
        assert d.state == alone.state, refusal
        assert d.commands == alone.commands, refusal

    def check_resume(self, caught: InfusionState, d: Decision) -> None:
        """4. I9: an accepted resume is one I2-I6, I8 and A1-A3 allow, at the rate they allow."""
        protocol = caught.protocol
        rates = [c.rate_ml_h for c in d.commands if isinstance(c, SetRate)]
        assert not caught.stop_outstanding  # A3
        assert not caught.link_lost  # A2
        assert not caught.alarms  # A1
        assert not caught.terminal  # I8, I9
        assert not caught.course.withdrawn  # I8
        assert severe_occurrences(caught) < protocol.reactions.severe_occurrences_withdraw  # I6
        assert rates, d.commands
        reaction = caught.reaction
        if reaction is None:
            # A1: after an alarm or an unexplained stop, the same step: never a jump.
            assert max(rates) <= caught.rate_ml_h + EPS
            return
        assert not reaction.hold_open  # I4
        assert not (reaction.window_open and reaction.grade >= protocol.reactions.severe_grade)
        fraction = protocol.reactions.restart_fraction
        resolution = protocol.ladder.rate_resolution_ml_h
        base = min(reaction.rate_ml_h, reaction.rate_before_ml_h)
        assert max(rates) <= round_down(base * fraction, resolution) + EPS  # I2
        if self.reaction_ran_at > 0:
            assert max(rates) <= round_down(self.reaction_ran_at * fraction, resolution) + EPS

    def check_rates(self, before: InfusionState, at: datetime, d: Decision) -> None:
        """2 and 3: L2's ceiling, L1's one increment and one interval, L7's hold."""
        ladder = before.protocol.ladder
        tol = ladder.rate_resolution_ml_h / 2
        interval = timedelta(minutes=ladder.interval_min)
        steps = [a for a in d.audit if a.type is AuditType.RATE_STEP]
        if steps:
            assert not before.held  # L7
            if self.resumed_after_reaction:
                reached("L1 step after a resume after a reaction")
        for command in d.commands:
            if not isinstance(command, SetRate):
                continue
            rate = command.rate_ml_h
            assert 0 < rate <= ladder.max_rate_ml_h + EPS  # L2
            if self.commanded is not None and rate > self.commanded + tol:
                assert rate <= self.commanded + ladder.increment_ml_h + EPS  # L2, L1
            if self.ran_at > 0 and rate > self.ran_at + tol:
                assert rate <= self.ran_at + ladder.increment_ml_h + EPS  # L1
                when = next((a.at for a in steps if a.data.get("to_ml_h") == rate), at)
                assert self.interval_from is not None
                assert when - self.interval_from >= interval - MICROSECOND, (
                    f"a rise to {rate} ml/h at {when}, {when - self.interval_from} after "
                    f"{self.interval_from} (last confirmed {self.ran_at} ml/h)"
                )
            elif self.ran_at == 0:
                assert rate <= before.initial_rate_ml_h + EPS  # L3: nothing ran yet
            self.commanded = rate

    def track(
        self,
        before: InfusionState,
        event: object,
        at: datetime,
        d: Decision,
        caught: InfusionState | None,
    ) -> None:
        """Follow what the invariants need: confirmed rates (I10), interval starts, the pump."""
        after = d.state
        tol = before.protocol.ladder.rate_resolution_ml_h / 2
        if d.refusal is None and isinstance(event, CommandConfirmed):
            expected = self.expects.pop(event.command_id, None)
            known = any(c.id == event.command_id for c in before.outstanding)
            matches = expected is not None and abs(event.rate_ml_h - expected) <= tol
            if known and matches and event.running and event.rate_ml_h > 0:
                if abs(event.rate_ml_h - self.ran_at) > tol:
                    self.interval_from = at  # a confirmed change of rate
                self.ran_at = event.rate_ml_h
        opened = before.reaction is None and after.reaction is not None
        if d.refusal is None and isinstance(event, ReactionReported) and opened:
            self.reaction_ran_at = self.ran_at
        if caught is not None and caught.reaction is not None:
            self.interval_from = at  # I2: a resume after a reaction starts the interval anew
            self.resumed_after_reaction = True
        if d.refusal is None and isinstance(event, Release):
            self.interval_from = at  # L7: a full interval from the release
        run_rate: float | None = None
        for command in d.pump_commands:
            self.unfated.append(command)
            if isinstance(command, SetRate):
                run_rate = command.rate_ml_h
                self.expects[command.id] = command.rate_ml_h
            elif isinstance(command, Run) and run_rate is not None:
                self.expects[command.id] = run_rate

    @invariant()
    def survives_storage(self) -> None:
        """A4: the stored state rebuilds to the same value."""
        assert InfusionState.from_json(self.state.to_json()) == self.state
        assert self.state.rate_ml_h <= self.state.protocol.ladder.max_rate_ml_h + EPS

    @invariant()
    def one_mark_per_alarm(self) -> None:
        """A8: one mark for every alarm latched or reported, none for another."""
        kinds = [m.kind for m in self.state.alarm_marks]
        assert sorted(kinds) == sorted(self.state.latched | self.state.alarms), kinds
        assert all(
            (m.acknowledged_by is None) == (m.acknowledged_at is None)
            for m in self.state.alarm_marks
        )

    # --- the infusion ---------------------------------------------------------------------

    @initialize(
        kind=st.sampled_from(list(RowKind)),
        protocol=st.sampled_from([REVIEW, LABEL]),
        severe_before=st.sampled_from([0, 0, 0, 1, 2]),
        start=st.sampled_from([True, True, True, True, False]),
        obedience=st.sampled_from([1.0, 1.0, 0.9, 0.7, 0.0]),
        rng=st.randoms(use_true_random=False),
    )
    def plan(
        self,
        *,
        kind: RowKind,
        protocol: object,
        severe_before: int,
        start: bool,
        obedience: float,
        rng: Random,
    ) -> None:
        number = {RowKind.FIRST: 1, RowKind.SECOND: 2, RowKind.SUBSEQUENT: 3}[kind]
        course = course_with(number, severe_before)
        self.state = planned(kind, protocol=protocol, course=course)  # type: ignore[arg-type]
        self.obedience, self.random = obedience, rng
        if start:
            self.act(Start(actor="nurse", course=course))

    # --- staff actions ----------------------------------------------------------------------

    @rule(course=st.sampled_from(["same", "same", "withdrawn"]), actor=ACTORS)
    def start(self, course: str, actor: str) -> None:
        state = self.state.course
        if course == "withdrawn":
            state = state.model_copy(update={"withdrawn": True, "withdrawn_reason": "I6: test"})
        self.act(Start(actor=actor, course=state))

    @rule(
        grade=GRADES,
        signs=SIGNS,
        onset=st.sampled_from(["none", "none", "none", "earlier", "future", "before_start"]),
        minutes=MINUTES,
    )
    def report_reaction(
        self, grade: int, signs: frozenset[Sign], onset: str, minutes: float
    ) -> None:
        s = decide(self.state, TimePassed(), self.now).state  # as the event will find it
        period = s.period_started_at or s.started_at
        onset_at: datetime | None = None
        refused = False
        if onset == "earlier":
            onset_at = self.now - timedelta(minutes=minutes)
            if period is not None:
                onset_at = max(onset_at, period)
        elif onset == "future":
            onset_at = self.now + timedelta(minutes=minutes)
            refused = True  # I10: never after the report
        elif onset == "before_start" and period is not None:
            onset_at = period - timedelta(minutes=minutes)
            refused = not s.terminal or s.reaction is not None  # I10: inside the running period
        event = ReactionReported(grade=grade, signs=signs, onset_at=onset_at, actor="nurse")
        decision = self.act(event)
        if refused:
            assert decision.refusal is not None, onset
            assert decision.refusal.kind == "invalid" or s.phase is InfusionPhase.PLANNED

    @rule(grade=GRADES, signs=SIGNS)
    def reassess(self, grade: int, signs: frozenset[Sign]) -> None:
        self.act(Reassessed(grade=grade, signs=signs, actor="nurse"))

    @rule()
    def resolve(self) -> None:
        self.act(Resolved(actor="nurse"))

    @rule(no_reaction=st.booleans())
    def resume(self, no_reaction: bool) -> None:
        self.act(ResumeRequested(actor="nurse", no_reaction=no_reaction))

    @rule(hold=st.booleans())
    def hold_or_release(self, hold: bool) -> None:
        self.act(Hold(actor="clinician") if hold else Release(actor="clinician"))

    @rule(reason=st.sampled_from(["patient request", *["  ", "", "\t", " ", "\n"] * 2]))
    def stop(self, reason: str) -> None:
        """Stop for good (a blank reason, refused, most of the time: the infusion goes on)."""
        decision = self.act({"kind": "stop", "reason": reason, "actor": "nurse"})
        if not reason.strip():
            assert decision.refusal is not None
            assert decision.refusal.field == "reason"

    @precondition(lambda self: self.state.phase is InfusionPhase.RUNNING)
    @rule(
        grade=st.sampled_from([1, 1, 2, 2, 3, 4]),
        signs=st.sampled_from([OTHER, OTHER, OTHER, SPASM]),
        earlier=st.sampled_from([0, 0, 1, 10]),
    )
    def reaction_while_running(self, grade: int, signs: frozenset[Sign], earlier: float) -> None:
        """I1: a reaction while infusing (its onset perhaps a little earlier, I10)."""
        period = self.state.period_started_at or self.now
        onset = max(period, self.now - timedelta(minutes=earlier)) if earlier else None
        self.act(ReactionReported(grade=grade, signs=signs, onset_at=onset, actor="nurse"))

    @precondition(
        lambda self: (
            self.state.reaction is not None
            and not self.state.reaction.hold_open
            and not (self.state.reaction.window_open and self.state.reaction.grade >= 3)
        )
    )
    @rule()
    def resume_after_reaction(self) -> None:
        """I2, I5, I9: a nurse resumes after a reaction I4 and I5 no longer hold."""
        self.act(ResumeRequested(actor="nurse"))

    @precondition(lambda self: forbids_resume(self.state))
    @rule()
    def forbidden_resume(self) -> None:
        """I9: a resume while A3, A2, A1, I4 or I5 forbid it is refused, naming the rule."""
        before = decide(self.state, TimePassed(), self.now).state
        decision = self.act(ResumeRequested(actor="nurse"))
        if forbids_resume(before):
            assert decision.refusal is not None
            assert decision.refusal.kind == "rule"

    @precondition(lambda self: self.state.reaction is not None)
    @rule(
        action=st.sampled_from(["resume", "resume", "resume", "resolved", "mild", "mild"]),
        grade=st.sampled_from([1, 2]),
    )
    def tend_reaction(self, action: str, grade: int) -> None:
        """A nurse tends the open reaction: resumes, states it resolved, or reassesses it mild."""
        if action == "resume":
            self.act(ResumeRequested(actor="nurse"))
        elif action == "resolved":
            self.act(Resolved(actor="nurse"))
        else:
            self.act(Reassessed(grade=grade, signs=OTHER, actor="nurse"))

    @rule(data=st.data(), role=st.sampled_from(["nurse", "nurse", "clinician"]))
    def clear_alarm(self, data: st.DataObject, role: str) -> None:
        latched = sorted(self.state.latched)
        names = st.sampled_from(latched) if latched else ALARM_NAMES
        name = data.draw(st.one_of(names, ALARM_NAMES) if latched else names)
        self.act(ClearAlarm(alarm=name, actor="nurse", role=role))  # type: ignore[arg-type]

    @rule(data=st.data())
    def acknowledge_alarm(self, data: st.DataObject) -> None:
        """A8: an acknowledgement stops nothing but the sound: no pump command, the latch as
        it was; refused naming A8 when the alarm is not raised or already acknowledged."""
        raised = sorted(self.state.latched | self.state.alarms)
        name = data.draw(st.one_of(st.sampled_from(raised), ALARM_NAMES) if raised else ALARM_NAMES)
        before = self.state
        decision = self.act(AcknowledgeAlarm(alarm=name, actor="nurse"))
        if decision.refusal is not None:
            assert decision.refusal.rule == "A8", decision.refusal
            return
        assert decision.pump_commands == ()
        assert decision.state.latched == before.latched
        mark = next(m for m in decision.state.alarm_marks if m.kind == name)
        assert mark.acknowledged_by == "nurse"

    @rule(prepared=st.sampled_from(["now", "now", "14h", "16h", "future"]))
    def new_bag(self, prepared: str) -> None:
        offset = {"now": 0.0, "14h": -14.0, "16h": -16.0, "future": 1.0}[prepared]
        decision = self.act(
            BagReplaced(prepared_at=self.now + timedelta(hours=offset), actor="nurse")
        )
        if prepared in {"16h", "future"}:
            assert decision.refusal is not None  # L9: expired already, or not yet prepared

    @rule(hostile=st.sampled_from(HOSTILE_STAFF + HOSTILE_PUMP))
    def hostile_input(self, hostile: tuple[object, str]) -> None:
        """A staff action or a pump fact with a hostile value: invalid, naming the field."""
        raw, field = hostile
        decision = self.act(raw)
        assert decision.refusal is not None, raw
        assert decision.refusal.kind == "invalid", decision.refusal
        assert decision.refusal.field == field, (decision.refusal, raw)

    # --- pump facts ---------------------------------------------------------------------------

    @rule()
    def truthful_status(self) -> None:
        self.act(self.pump.readback())

    @rule(
        kind=st.sampled_from(["running", "running", "stopped", "backwards", "huge", "completed"]),
        rate=RATES,
    )
    def false_status(self, kind: str, rate: float) -> None:
        volume = self.pump.volume
        if kind == "running":
            self.act(PumpConfirmedRunning(rate_ml_h=rate, volume_infused_ml=volume))
        elif kind == "stopped":
            self.act(PumpConfirmedStopped(volume_infused_ml=volume))
        elif kind == "backwards":
            back = max(0.0, volume - 10.0)
            self.act(PumpConfirmedRunning(rate_ml_h=self.pump.rate, volume_infused_ml=back))
        elif kind == "huge":
            self.act(PumpConfirmedRunning(rate_ml_h=self.pump.rate, volume_infused_ml=4999.0))
        else:
            self.act(PumpCompleted(volume_infused_ml=volume))

    @rule(alarm=PUMP_ALARMS, raised=st.booleans())
    def pump_alarm(self, alarm: str, raised: bool) -> None:
        if raised:
            if alarm in STOPS_THE_PUMP:
                self.pump.running = False
            self.act(PumpAlarmRaised(alarm=alarm))
        else:
            self.act(PumpAlarmCleared(alarm=alarm))

    @rule(
        lost=st.booleans(),
        truthful=st.sampled_from([True, True, False]),
        running=st.booleans(),
        rate=RATES,
    )
    def link(self, lost: bool, truthful: bool, running: bool, rate: float) -> None:
        """A2: the link is lost, or restored with the pump's state (true, or not)."""
        if lost:
            self.act(LinkLost())
        else:
            self.act(LinkRestored(**self.pump_view(truthful, running, rate)))

    @rule(truthful=st.sampled_from([True, True, False]), running=st.booleans(), rate=RATES)
    def restarted(self, truthful: bool, running: bool, rate: float) -> None:
        self.act(Restarted(**self.pump_view(truthful, running, rate)))

    def pump_view(self, truthful: bool, running: bool, rate: float) -> dict[str, object]:
        if truthful:
            running, rate = self.pump.running, self.pump.rate
        return {
            "running": running,
            "rate_ml_h": rate if running else 0.0,
            "volume_infused_ml": self.pump.volume,
        }

    @rule()
    def power_reset(self) -> None:
        self.pump = FakePump()  # the pump lost its program and its counter
        self.act(PumpPowerReset(volume_infused_ml=0.0))

    # --- command fates (A3) -----------------------------------------------------------------

    def carry_out(self, index: int) -> None:
        command = self.unfated.pop(index)
        self.fated.append(command.id)
        self.pump.apply(command)
        self.feed(self.pump.confirm(command.id))

    @precondition(lambda self: self.unfated)
    @rule()
    def confirm_next(self) -> None:
        self.carry_out(0)

    @precondition(lambda self: self.unfated)
    @rule()
    def confirm_all(self) -> None:
        """The ledger catches up: every command carried out and confirmed, in order."""
        self.settle()

    @precondition(lambda self: self.unfated)
    @rule(
        data=st.data(),
        fate=st.sampled_from(["confirm", "denied", "unconfirmed", "unconfirmed_carried_out"]),
    )
    def fate_of_any(self, data: st.DataObject, fate: str) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.unfated) - 1))
        if fate == "confirm":
            self.carry_out(index)
            return
        command = self.unfated.pop(index)
        self.fated.append(command.id)
        if fate == "denied":
            self.act(CommandDenied(command_id=command.id, reason="pump busy"))
            return
        if fate == "unconfirmed_carried_out":
            self.pump.apply(command)  # carried out, but its read-back never came
        self.act(CommandUnconfirmed(command_id=command.id))

    @rule(
        which=st.sampled_from(["next", "far", "stale"]),
        fate=st.sampled_from(["confirm", "denied", "unconfirmed"]),
    )
    def fate_of_unknown(self, which: str, fate: str) -> None:
        ids = {"next": self.state.next_command_id, "far": 10_000}
        command_id = ids.get(which, self.fated[-1] if self.fated else 9_999)
        if fate == "confirm":
            event = self.pump.confirm(command_id)
        elif fate == "denied":
            event = CommandDenied(command_id=command_id, reason="no such command")
        else:
            event = CommandUnconfirmed(command_id=command_id)
        decision = self.act(event)
        if fate != "confirm":
            assert decision.refusal is not None  # A3: not awaiting its fate
            assert decision.refusal.rule is Rule.A3

    # --- clinical time ----------------------------------------------------------------------

    def advance_to(self, until: datetime) -> None:
        """Move the clock (the pump infuses, and stops by itself at its VTBI), then decide."""
        span = max(timedelta(0), until - self.now)
        done = self.pump.until_done()
        if done is not None and done <= span:
            self.pump.infuse(done)
            self.pump.running = False
            self.now += done
            self.act(PumpCompleted(volume_infused_ml=self.pump.volume))
            return
        self.pump.infuse(span)
        self.now += span
        self.act(TimePassed())

    @rule()
    def to_next_deadline(self) -> None:
        due = next_deadline(self.state)
        self.advance_to(due.at if due is not None else self.now + timedelta(hours=1))

    @rule(minutes=MINUTES)
    def time_passes(self, minutes: float) -> None:
        self.advance_to(self.now + timedelta(minutes=minutes))

    @rule(
        when=st.sampled_from(["backwards", "naive", "1999", "2300", "text"]),
        event=st.sampled_from(
            [TimePassed(), ResumeRequested(actor="nurse"), Stop(reason="x", actor="nurse")]
        ),
    )
    def implausible_now(self, when: str, event: object) -> None:
        now: object = {
            "backwards": self.now - timedelta(minutes=1),
            "naive": self.now.replace(tzinfo=None),
            "1999": datetime(1999, 12, 31, tzinfo=UTC),
            "2300": datetime(2300, 1, 1, tzinfo=UTC),
            "text": self.now.isoformat(),
        }[when]
        self.feed(event, now)


InfusionSequences.TestCase.settings = settings(
    max_examples=examples(150),
    stateful_step_count=examples(80),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class TestL1L2L3L7I2I4I5I6I8I9A1A2A3A4StatefulSequences(InfusionSequences.TestCase):
    """L1, L2, L3, L7, I2-I9, A1-A4: random sequences of every event keep the invariants."""
