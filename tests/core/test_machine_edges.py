"""The edges of the rules core that docs/clinical-rules.md's Clarifications settle: each by example
and by property (windows that survive a stop, command fates, resume after an unconfirmed stop,
onsets, completion, volumes, alarms, restarts, totality)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from machine_scenario import OTHER, T0, Scenario, examples, minutes, planned, started
from pydantic import ValidationError

from pumpctl.core.history import InfusionRecord, ReactionRecord, Sign
from pumpctl.core.machine import (
    ClearAlarm,
    CommandDenied,
    CommandOp,
    CommandUnconfirmed,
    DeadlineKind,
    Decision,
    InfusionPhase,
    LinkLost,
    LinkRestored,
    MachineAlarm,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    PumpPowerReset,
    RaiseAlarm,
    ReactionReported,
    Reassessed,
    Resolved,
    Restarted,
    ResumeRequested,
    Run,
    SetRate,
    Start,
    Stop,
    StopPump,
    TimePassed,
    deadlines,
    decide,
    next_deadline,
)
from pumpctl.core.protocol import RowKind

SPASM = frozenset({Sign.BRONCHOSPASM})
NAN = float("nan")
PROPERTY = settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def at_150() -> Scenario:
    """A first infusion 130 min in: running at 150 ml/h."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(130))
    assert scenario.state.rate_ml_h == 150.0
    return scenario


def rates(decision: Decision) -> list[float]:
    return [c.rate_ml_h for c in decision.commands if isinstance(c, SetRate)]


def refusal_of(decision: Decision) -> tuple[str, str | None, str | None]:
    assert decision.refusal is not None
    return decision.refusal.kind, decision.refusal.rule, decision.refusal.field


def course_withdrawals(scenario: Scenario) -> list[str | None]:
    return [a.data["cause"] for a in scenario.audit if a.type == "course_withdrawn"]  # type: ignore[misc]


# --- I4, I5: windows survive a stop ---------------------------------------------------------


def test_I5_I8_a_nurse_stop_inside_the_window_keeps_it_and_its_end_withdraws() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(30))
    scenario.send(Stop(reason="patient unwell", actor="nurse"))
    assert scenario.phase() is InfusionPhase.STOPPED
    due = next_deadline(scenario.state)
    assert due is not None
    assert due.kind is DeadlineKind.OBSERVATION_END
    # A reassessment is still taken (not refused under I11).
    decision = scenario.send(Reassessed(grade=4, signs=OTHER, actor="nurse"))
    assert decision.refusal is None
    scenario.advance(minutes(90))
    assert scenario.phase() is InfusionPhase.STOPPED
    assert scenario.state.course.withdrawn
    assert course_withdrawals(scenario) == ["I5"]
    assert scenario.state.reaction is None  # the window has closed: no longer supervised
    assert not scenario.state.supervised


def test_I5_a_downgrade_inside_the_window_after_a_stop_does_not_withdraw() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(Stop(reason="patient asked", actor="nurse"))
    scenario.advance(minutes(60))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(61))
    assert not scenario.state.course.withdrawn
    assert scenario.phase() is InfusionPhase.STOPPED
    assert scenario.state.reactions[-1].grade == 2


def test_I4_a_stop_inside_the_bronchospasm_hold_keeps_the_6_h_limit() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=SPASM, actor="nurse"))
    scenario.send(Stop(reason="end of day", actor="nurse"))
    assert scenario.state.supervised
    scenario.advance(timedelta(hours=6))
    assert course_withdrawals(scenario) == ["I4"]


def test_I4_resolved_after_the_stop_lifts_the_hold_in_time() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=SPASM, actor="nurse"))
    scenario.send(Stop(reason="end of day", actor="nurse"))
    scenario.advance(timedelta(hours=2))
    assert scenario.send(Resolved(actor="nurse")).refusal is None
    scenario.advance(timedelta(hours=5))
    assert not scenario.state.course.withdrawn
    assert deadlines(scenario.state) == ()


def test_I5_a_pump_alarm_inside_the_window_does_not_close_it() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.advance(minutes(121))
    assert scenario.phase() is InfusionPhase.WITHDRAWN


@PROPERTY
@given(stop_after=st.integers(min_value=0, max_value=119), last=st.integers(1, 4))
def test_I5_I4_property_a_stop_at_any_moment_of_the_window_changes_no_outcome(
    stop_after: int, last: int
) -> None:
    """Whenever in the window the nurse stops, the end withdraws iff the last grade is >= 3."""
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(stop_after))
    scenario.send(Stop(reason="stopped", actor="nurse"))
    scenario.send(Reassessed(grade=last, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(125))
    assert scenario.state.course.withdrawn is (last >= 3)
    assert scenario.phase() is InfusionPhase.STOPPED


# --- A3: commands and their fate ------------------------------------------------------------


def step_sent(scenario: Scenario) -> int:
    """Run to the first step (50 -> 100) without confirming it; its command id."""
    scenario.advance(minutes(59))
    scenario.auto_confirm = False
    scenario.advance(minutes(1))
    scenario.auto_confirm = True
    (sent,) = scenario.state.outstanding
    assert (sent.op, sent.rate_ml_h) == (CommandOp.SET_RATE, 100.0)
    return sent.id


def test_A3_A1_a_step_denied_during_an_occlusion_resumes_at_the_rate_last_confirmed() -> None:
    scenario = started(RowKind.FIRST)
    command = step_sent(scenario)
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    scenario.send(CommandDenied(command_id=command, reason="?NA: alarm not acknowledged"))
    assert scenario.state.rate_ml_h == 50.0
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    assert [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)] == [50.0]


def test_A3_an_unconfirmed_step_reverts_raises_and_suspends_escalation() -> None:
    scenario = started(RowKind.FIRST)
    command = step_sent(scenario)
    scenario.send(CommandUnconfirmed(command_id=command))
    assert scenario.state.rate_ml_h == 50.0
    assert scenario.alarms()[-1].kind is MachineAlarm.COMMAND_UNCONFIRMED
    assert all(d.kind is not DeadlineKind.ESCALATION for d in deadlines(scenario.state))
    # Once the fate is known a nurse clears it, and the ladder goes on a full interval later.
    clear = ClearAlarm(alarm="command_unconfirmed", actor="nurse", role="nurse")
    assert scenario.send(clear).refusal is None
    assert any(d.kind is DeadlineKind.ESCALATION for d in deadlines(scenario.state))


def test_A3_a_plain_status_is_judged_against_the_new_rate_only_after_its_fate() -> None:
    scenario = started(RowKind.FIRST)
    command = step_sent(scenario)
    before = len(scenario.alarms())
    # Before the fate: 50 (the last confirmed) and 100 (commanded) are both expected.
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=scenario.pump.volume))
    scenario.send(PumpConfirmedRunning(rate_ml_h=100.0, volume_infused_ml=scenario.pump.volume))
    assert len(scenario.alarms()) == before
    # After the timeout the expectation is 50 again: 100 is never tolerated as "pending".
    scenario.send(CommandUnconfirmed(command_id=command))
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=100.0, volume_infused_ml=scenario.pump.volume))
    assert MachineAlarm.RATE_TOO_HIGH in [a.kind for a in scenario.alarms()]
    assert [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)] == [50.0]


def test_A3_a_fate_for_an_unknown_command_is_refused_and_changes_nothing() -> None:
    scenario = started(RowKind.FIRST)
    decision = decide(scenario.state, CommandDenied(command_id=999, reason="x"), scenario.now)
    assert refusal_of(decision)[:2] == ("rule", "A3")
    assert decision.state == scenario.state


@PROPERTY
@given(hour=st.integers(min_value=1, max_value=3), denied=st.booleans())
def test_A3_property_a_failed_rate_change_never_leaves_the_step_above_the_confirmed_rate(
    hour: int, denied: bool
) -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(60 * hour - 1))
    scenario.auto_confirm = False
    scenario.advance(minutes(1))
    scenario.auto_confirm = True
    pending = [c for c in scenario.state.outstanding if c.op is CommandOp.SET_RATE]
    assert pending  # the step of that hour
    for sent in pending:
        fate = (
            CommandDenied(command_id=sent.id, reason="refused")
            if denied
            else CommandUnconfirmed(command_id=sent.id)
        )
        scenario.send(fate)
    assert scenario.state.rate_ml_h <= scenario.state.confirmed_rate_ml_h + 1e-9


# --- A3, I9: resume waits for the stop --------------------------------------------------------


def test_A3_I9_resume_is_refused_while_the_stop_is_unconfirmed_and_the_stop_is_resent() -> None:
    scenario = at_150()
    scenario.auto_confirm = False
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    stop = next(c for c in scenario.state.outstanding if c.op is CommandOp.STOP)
    refused = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert refusal_of(refused)[:2] == ("rule", "A3")  # the stop is still on its way
    scenario.send(CommandUnconfirmed(command_id=stop.id))
    assert scenario.alarms()[-1].kind is MachineAlarm.PUMP_NOT_STOPPED
    assert "clamp the line" in scenario.alarms()[-1].message
    refused = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert refusal_of(refused)[:2] == ("rule", "A3")
    # Every contact that shows it running sends the stop again.
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=150.0, volume_infused_ml=scenario.pump.volume))
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))
    resent = next(c for c in scenario.state.outstanding if c.op is CommandOp.STOP)
    scenario.auto_confirm = True
    scenario.pump.running = False
    scenario.send(scenario.pump.confirm(resent.id))
    assert not scenario.state.stop_outstanding
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    assert [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)] == [75.0]


def test_A3_a_pump_read_at_150_while_75_is_pending_is_set_back_down() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.auto_confirm = False
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 75.0
    scenario.send(PumpConfirmedRunning(rate_ml_h=150.0, volume_infused_ml=scenario.pump.volume))
    assert MachineAlarm.RATE_TOO_HIGH in [a.kind for a in scenario.alarms()]


def test_A3_a_run_never_sent_for_want_of_its_record_is_an_alarm_that_says_so() -> None:
    """Write-ahead, bounded (the supervisor): a resume's run whose record was not written in
    time is denied `unsent`: the step stays the rate last confirmed, and the alarm says the run
    was not sent, never that the pump refused it (which would send the nurse to the pump)."""
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.auto_confirm = False
    scenario.send(ResumeRequested(actor="nurse"))
    before = len(scenario.alarms())
    for sent in scenario.state.outstanding:
        scenario.send(
            CommandDenied(command_id=sent.id, reason="not sent: no record in 2 s", unsent=True)
        )
    raised = scenario.alarms()[before:]
    assert raised, "no alarm for a run never sent"
    for alarm in raised:  # one per command of the resume, one latched alarm
        assert (alarm.kind, alarm.rule) == (MachineAlarm.COMMAND_DENIED, "A3")
        assert "was not sent: no record in 2 s" in alarm.message
        assert "refused to run" not in alarm.message
    assert "command_denied" in scenario.state.latched
    assert scenario.state.outstanding == ()


# --- I10, I2: onsets -----------------------------------------------------------------------------


def test_I10_an_onset_outside_the_running_period_is_invalid_and_changes_nothing() -> None:
    scenario = at_150()
    for onset in (
        datetime(1999, 6, 1, tzinfo=UTC),
        T0 - minutes(1),
        scenario.now + minutes(5),
    ):
        event = {
            "kind": "reaction",
            "grade": 3,
            "signs": ["other"],
            "onset_at": onset,
            "actor": "n",
        }
        decision = decide(scenario.state, event, scenario.now)
        assert refusal_of(decision)[0::2] == ("invalid", "onset_at")
        assert decision.state == decide(scenario.state, TimePassed(), scenario.now).state
        assert decision.commands == ()


def test_I10_an_onset_before_the_last_resume_is_invalid() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(10))
    scenario.send(ResumeRequested(actor="nurse"))
    scenario.advance(minutes(20))
    event = ReactionReported(grade=2, signs=OTHER, onset_at=scenario.now - minutes(25), actor="n")
    assert refusal_of(decide(scenario.state, event, scenario.now))[0::2] == ("invalid", "onset_at")


def test_I10_L4_I5_a_later_reports_earlier_onset_moves_the_record_not_the_window() -> None:
    """I10: the record moves to the earlier onset (L4 counts from it); the open I5 window does
    not (it counts from the report that opened it)."""
    scenario = at_150()  # 130 min of running
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    reported = scenario.now
    scenario.advance(minutes(10))
    onset = reported - minutes(30)
    scenario.send(ReactionReported(grade=3, signs=OTHER, onset_at=onset, actor="nurse"))
    reaction = scenario.state.reaction
    assert reaction is not None
    assert reaction.onset_at == onset
    assert reaction.observation_started_at == reported
    assert reaction.running_min <= 100.0 + 1e-6  # L4: the first 3 hours count from the onset
    assert reaction.rate_ml_h == 100.0  # the confirmed rate at 100 min of running
    # The window stays 2 h from the first report: not withdrawn 90 min after it.
    scenario.advance(minutes(109))
    assert scenario.phase() is InfusionPhase.STOPPED_OBSERVATION
    scenario.advance(minutes(1))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert next(a for a in scenario.audit if a.type == "withdrawn").at == reported + minutes(120)


def test_I2_resume_halves_the_lower_of_the_rate_at_onset_and_the_last_rate() -> None:
    """Onset entered in the 100 ml/h hour, reported at 150 ml/h: resume at 50, not 75."""
    scenario = at_150()  # 100 ml/h from 60 to 120 min, 150 ml/h from 120 min
    onset = scenario.now - minutes(20)  # 110 min: at 100 ml/h
    scenario.send(ReactionReported(grade=2, signs=OTHER, onset_at=onset, actor="nurse"))
    assert scenario.state.reaction is not None
    assert scenario.state.reaction.rate_ml_h == 100.0
    assert scenario.state.reaction.rate_before_ml_h == 150.0
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    assert [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)] == [50.0]


def test_I2_a_ninth_halving_is_refused_naming_I2() -> None:
    scenario = started(RowKind.FIRST)
    given_rates = []
    for _ in range(8):
        scenario.advance(minutes(1))
        scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        scenario.send(ResumeRequested(actor="nurse"))
        given_rates.append(scenario.state.rate_ml_h)
    assert given_rates == [25.0, 12.5, 6.2, 3.1, 1.5, 0.7, 0.3, 0.1]
    scenario.advance(minutes(1))
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    decision = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert refusal_of(decision)[:2] == ("rule", "I2")


@PROPERTY
@given(back=st.integers(min_value=-30, max_value=200))
def test_I10_property_an_onset_is_taken_iff_inside_the_running_period(back: int) -> None:
    scenario = at_150()  # started at T0, 130 min ago, never resumed
    onset = scenario.now - minutes(back)
    event = ReactionReported(grade=1, signs=OTHER, onset_at=onset, actor="nurse")
    decision = decide(scenario.state, event, scenario.now)
    inside = 0 <= back <= 130
    assert (decision.refusal is None) is inside
    if inside:
        assert decision.state.reaction is not None
        assert decision.state.reaction.onset_at == onset
    else:
        assert refusal_of(decision)[0::2] == ("invalid", "onset_at")


# --- L3, A1, A2, A4: volumes -----------------------------------------------------------------


def test_L3_A1_a_volume_far_above_the_possible_stops_the_pump_and_needs_a_clinician() -> None:
    """499.9 of 500 ml after 90 min: over-infusion, stopped; no resume until a clinician clears."""
    scenario = started(RowKind.SECOND)
    scenario.advance(minutes(90))
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=100.0, volume_infused_ml=499.9))
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))
    assert scenario.alarms()[-1].kind is MachineAlarm.OVER_INFUSION
    refused = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert refusal_of(refused)[:2] == ("rule", "A1")
    nurse = ClearAlarm(alarm="over_infusion", actor="nurse", role="nurse")
    assert refusal_of(decide(scenario.state, nurse, scenario.now))[:2] == ("rule", "A1")
    clinician = ClearAlarm(alarm="over_infusion", actor="dr", role="clinician")
    cleared = scenario.send(clinician)
    assert cleared.refusal is None
    assert not any(isinstance(c, Run | SetRate) for c in cleared.commands)  # clear never runs


def test_A2_a_volume_going_backwards_is_a_bad_read_and_is_not_acted_on() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=25.0))
    decision = scenario.send(PumpConfirmedStopped(volume_infused_ml=3.0))
    assert [a.type for a in decision.audit] == ["bad_read"]
    assert decision.commands == ()
    assert scenario.state.pump_running  # the stopped read was not taken
    assert scenario.state.volume_read_ml == 25.0


def test_L3_under_infusion_for_15_min_of_running_is_an_alarm_without_a_stop() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(20))
    scenario.pump.volume = 5.0  # 16.7 ml expected: the line leaks or is kinked
    scenario.send(scenario.pump.readback())
    assert MachineAlarm.UNDER_INFUSION not in [a.kind for a in scenario.alarms()]
    scenario.advance(minutes(15))
    mark = scenario.mark()
    scenario.send(scenario.pump.readback())
    assert scenario.alarms()[-1].kind is MachineAlarm.UNDER_INFUSION
    assert not any(isinstance(c, StopPump) for c in scenario.since(mark))


def test_A2_A4_a_link_loss_or_a_restart_is_not_mistaken_for_over_infusion() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(LinkLost())
    scenario.advance(minutes(20))
    scenario.pump.infuse(minutes(0))
    scenario.send(LinkRestored(running=True, rate_ml_h=50.0, volume_infused_ml=41.6))
    scenario.advance(minutes(30))
    scenario.send(Restarted(running=True, rate_ml_h=50.0, volume_infused_ml=66.6))
    assert MachineAlarm.OVER_INFUSION not in [a.kind for a in scenario.alarms()]


@PROPERTY
@given(minute=st.integers(min_value=5, max_value=300), extra=st.floats(1.0, 400.0))
def test_L3_property_any_volume_beyond_the_bound_stops_the_pump(minute: int, extra: float) -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(minute))
    bound = scenario.state.volume_bound_ml
    volume = min(1000.0, bound * 1.05 + 1.0 + extra)
    decision = decide(
        scenario.state,
        PumpConfirmedRunning(rate_ml_h=scenario.pump.rate, volume_infused_ml=volume),
        scenario.now,
    )
    assert any(isinstance(c, StopPump) for c in decision.commands)
    assert MachineAlarm.OVER_INFUSION.value in decision.state.latched


# --- A1, A4: alarms and restarts -----------------------------------------------------------------


def test_A1_clearing_an_alarm_never_raised_or_still_reported_is_refused() -> None:
    scenario = started(RowKind.FIRST)
    never = ClearAlarm(alarm="occlusion", actor="nurse", role="nurse")
    assert refusal_of(decide(scenario.state, never, scenario.now))[:2] == ("rule", "A1")
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    assert refusal_of(decide(scenario.state, never, scenario.now))[:2] == ("rule", "A1")
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    cleared = scenario.send(never)
    assert cleared.refusal is None
    assert cleared.commands == ()  # a clear never starts the pump
    assert [a.type for a in cleared.audit] == ["alarm_cleared"]


def test_A1_after_a_pump_alarm_only_a_nurse_resume_runs_it_at_the_same_rate() -> None:
    scenario = at_150()
    scenario.send(PumpAlarmRaised(alarm="air_in_line"))
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    mark = scenario.mark()
    scenario.send(PumpAlarmCleared(alarm="air_in_line"))
    scenario.advance(minutes(5))
    assert not any(isinstance(c, Run) for c in scenario.since(mark))
    scenario.send(ResumeRequested(actor="nurse"))
    assert [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)] == [150.0]


def test_A4_a_stop_found_on_restart_needs_reaction_or_no_reaction_before_resume() -> None:
    scenario = at_150()
    scenario.pump.running = False
    scenario.send(Restarted(running=False, rate_ml_h=0.0, volume_infused_ml=scenario.pump.volume))
    assert scenario.state.unexplained_stop
    refused = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert refusal_of(refused)[:2] == ("rule", "A4")
    # "No reaction": A1 applies, the same rate.
    no = decide(scenario.state, ResumeRequested(actor="nurse", no_reaction=True), scenario.now)
    assert rates(no) == [150.0]
    # "Reaction, grade 2": I2 applies, half the rate.
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    assert [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)] == [75.0]


# --- L4, I8: the course is read again at Start ---------------------------------------------


def test_L4_I8_a_start_refuses_when_the_course_changed_since_planning() -> None:
    state = planned(RowKind.SECOND)  # planned on a clean infusion 1: the second row
    late = ReactionRecord(
        grade=1, max_grade=1, signs=OTHER, rate_ml_h=50.0, running_min=30.0, infusion_number=1
    )
    changed = state.course.model_copy(
        update={
            "infusions": (
                InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0, reactions=(late,)),
            )
        }
    )
    decision = decide(state, Start(actor="nurse", course=changed), T0)
    assert refusal_of(decision)[:2] == ("rule", "L4")
    assert decision.commands == ()
    assert decision.state.phase is InfusionPhase.PLANNED


# --- totality ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"kind": "reaction", "grade": True, "signs": ["other"], "actor": "n"}, "grade"),
        ({"kind": "reaction", "grade": 5, "signs": ["other"], "actor": "n"}, "grade"),
        ({"kind": "reaction", "grade": "2", "signs": ["other"], "actor": "n"}, "grade"),
        ({"kind": "reaction", "grade": 2, "signs": [], "actor": "n"}, "signs"),
        ({"kind": "reaction", "grade": 2, "signs": ["rash"], "actor": "n"}, "signs.0"),
        ({"kind": "reaction", "grade": 2, "signs": ["other"], "actor": "  "}, "actor"),
        ({"kind": "reaction", "grade": 2, "signs": ["other"]}, "actor"),
        ({"kind": "stop", "reason": " ", "actor": "n"}, "reason"),
        ({"kind": "pump_running", "rate_ml_h": "70", "volume_infused_ml": 1.0}, "rate_ml_h"),
        ({"kind": "pump_running", "rate_ml_h": -5, "volume_infused_ml": 1.0}, "rate_ml_h"),
        (
            {"kind": "pump_running", "rate_ml_h": float("nan"), "volume_infused_ml": 1.0},
            "rate_ml_h",
        ),
        ({"kind": "command_unconfirmed", "command_id": True}, "command_id"),
        ({"kind": "command_unconfirmed", "command_id": "1"}, "command_id"),
        ({"kind": "resume", "actor": "n", "no_reaction": "yes"}, "no_reaction"),
        (
            {"kind": "link_restored", "running": 1, "rate_ml_h": 1.0, "volume_infused_ml": 1.0},
            "running",
        ),
        ({"kind": "launch_missiles"}, "kind"),
        ({"grade": 2}, "kind"),
        ("reaction", "event"),
    ],
)
def test_I1_A1_hostile_input_is_refused_naming_the_field_and_changes_nothing(
    raw: object, field: str
) -> None:
    scenario = at_150()
    decision = decide(scenario.state, raw, scenario.now)
    kind, _, named = refusal_of(decision)
    assert kind == "invalid"
    assert named is not None
    assert named.startswith(field) or field in named
    assert decision.commands == ()
    assert decision.state == decide(scenario.state, TimePassed(), scenario.now).state


def test_state_changes_are_validated_field_by_field() -> None:
    state = started(RowKind.FIRST).state
    with pytest.raises(ValidationError):
        state.updated({"rate_ml_h": -5.0})
    with pytest.raises(KeyError, match="rat_ml_h"):
        state.updated({"rat_ml_h": 50.0})
    assert state.updated({"rate_ml_h": 75.0}).rate_ml_h == 75.0


@PROPERTY
@given(
    raw=st.dictionaries(
        st.sampled_from(["kind", "grade", "signs", "actor", "rate_ml_h", "onset_at", "reason"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
        max_size=5,
    )
)
def test_I1_A1_property_decide_answers_any_mapping_with_a_decision(raw: dict[str, object]) -> None:
    """Total: any mapping gives a Decision; a refusal names a field or a rule; never a fault."""
    scenario = at_150()
    decision = decide(scenario.state, raw, scenario.now)
    assert not any(a.type == "core_fault" for a in decision.audit)
    if decision.refusal is not None:
        assert decision.refusal.field or decision.refusal.rule


def test_A3_a_fault_inside_the_core_stops_the_pump_instead_of_raising() -> None:
    """A state the core cannot continue from (here: a corrupt stored value) stops the pump."""
    scenario = at_150()
    broken = scenario.state.model_copy(update={"protocol": None})
    decision = decide(broken, TimePassed(), scenario.now + minutes(1))
    assert isinstance(decision.commands[0], StopPump)
    assert any(a.type == "core_fault" for a in decision.audit)
    kinds = [c.kind for c in decision.commands if not isinstance(c, StopPump | SetRate | Run)]
    assert MachineAlarm.CORE_FAULT in kinds


# --- found by an independent review ----------------------------------------------------------


def test_I1_a_refused_reaction_report_at_the_steps_instant_lets_no_rise_out() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(59))
    event = {"kind": "reaction", "grade": 2, "signs": ["other"], "actor": "n",
             "onset_at": scenario.now + minutes(5)}  # fmt: skip
    decision = decide(scenario.state, event, scenario.now + minutes(1))
    assert decision.refusal is not None
    assert rates(decision) == []


def test_A3_an_unconfirmed_stop_for_a_vtbi_problem_is_sent_again_on_contact() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    scenario.auto_confirm = False
    scenario.send(Stop(reason="x", actor="nurse"))
    stop = next(c for c in scenario.state.outstanding if c.op is CommandOp.STOP)
    scenario.send(CommandUnconfirmed(command_id=stop.id))
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=scenario.pump.volume))
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))


def test_A3_a_bad_read_of_a_pump_that_must_be_stopped_still_stops_it() -> None:
    scenario = at_150()
    scenario.auto_confirm = False
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    stop = next(c for c in scenario.state.outstanding if c.op is CommandOp.STOP)
    scenario.send(CommandUnconfirmed(command_id=stop.id))
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=150.0, volume_infused_ml=0.5))  # backwards
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))


def test_L3_a_resume_after_a_power_reset_programs_the_vtbi_first() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.send(PumpPowerReset(volume_infused_ml=0.0))
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    ops = [type(c).__name__ for c in scenario.since(mark) if not isinstance(c, RaiseAlarm)]
    assert ops[:3] == ["SetVtbi", "SetRate", "Run"]


def test_A1_a_step_the_pump_took_while_stopped_is_never_run_after_the_alarm() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    scenario.send(PumpAlarmCleared(alarm="occlusion"))  # the pump takes commands again
    scenario.advance(minutes(31))  # the step to 100 is sent and confirmed with the pump stopped
    assert scenario.state.rate_ml_h == 50.0
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    assert [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)] == [50.0]


def test_L3_an_early_completion_alarm_is_raised_once() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.pump.running = False
    for _ in range(3):
        scenario.send(PumpCompleted(volume_infused_ml=scenario.pump.volume))
    kinds = [a.kind for a in scenario.alarms()]
    assert kinds.count(MachineAlarm.UNDER_INFUSION) == 1


def test_A3_a_core_fault_on_a_fate_does_not_stop_again_forever() -> None:
    scenario = at_150()
    broken = scenario.state.model_copy(update={"protocol": None})
    fate = CommandUnconfirmed(command_id=1)
    decision = decide(broken, fate, scenario.now + minutes(1))
    assert not any(isinstance(c, StopPump) for c in decision.commands)
    assert any(a.type == "core_fault" for a in decision.audit)
