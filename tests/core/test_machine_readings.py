"""Readings of issue 17 (docs/clinical-rules.md, "Readings the rules core takes"): windows after
two reports in one stop (I4, I5, I10), a latched communication loss (A2), L6 past 210 min of
running time, and infusion 2's row after a delayed reaction or an early stop (L4, I11)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from machine_scenario import OTHER, REVIEW, Scenario, minutes, started

from pumpctl.core.history import CourseState, Sign
from pumpctl.core.limits import min_duration_cap
from pumpctl.core.machine import (
    ClearAlarm,
    DeadlineKind,
    InfusionPhase,
    LinkLost,
    LinkRestored,
    MachineAlarm,
    ReactionReported,
    Reassessed,
    ResumeRequested,
    SetRate,
    Stop,
    deadlines,
    infusion_record,
)
from pumpctl.core.planner import plan, select_row, step_decision
from pumpctl.core.protocol import RowKind

SPASM = frozenset({Sign.BRONCHOSPASM})


def at_150() -> Scenario:
    """A first infusion 130 min in: 100 ml/h from 60 min, 150 ml/h from 120 min."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(130))
    assert scenario.state.rate_ml_h == 150.0
    return scenario


def deadline_of(scenario: Scenario, kind: DeadlineKind) -> object:
    return next((d.at for d in deadlines(scenario.state) if d.kind is kind), None)


def rates_since(scenario: Scenario, mark: int) -> list[float]:
    return [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)]


def withdrawn_at(scenario: Scenario) -> object:
    return next(a.at for a in scenario.audit if a.type == "withdrawn")


# --- I4, I5, I10: windows after two reports in one stop ----------------------------------------


def test_I5_I10_window_counts_from_the_grade_3_reports_own_onset_and_withdraws_there() -> None:
    """Grade 2 at t0, then grade 3 reported at t0+30 with onset t0+20: the window runs from
    t0+20 to t0+140, not from the first report's onset; the record keeps onset t0 (I10, L4)."""
    scenario = at_150()
    t0 = scenario.now
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, onset_at=t0 + minutes(20), actor="n"))
    reaction = scenario.state.reaction
    assert reaction is not None
    assert reaction.observation_started_at == t0 + minutes(20)
    assert deadline_of(scenario, DeadlineKind.OBSERVATION_END) == t0 + minutes(140)
    assert reaction.onset_at == t0  # the earliest onset: the record does not move later
    assert reaction.running_min == pytest.approx(130.0)
    scenario.advance_to(t0 + minutes(139))
    assert scenario.phase() is InfusionPhase.STOPPED_OBSERVATION
    scenario.advance(minutes(1))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert withdrawn_at(scenario) == t0 + minutes(140)


def test_I5_I2_a_grade_2_reassessment_inside_the_later_window_allows_the_resume() -> None:
    """Same stop: grade 2 at t0, grade 3 with onset t0+20; at t0+130 (past t0+120, inside the
    window to t0+140) the nurse reassesses grade 2: no withdrawal, resume at half (I2)."""
    scenario = at_150()
    t0 = scenario.now
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, onset_at=t0 + minutes(20), actor="n"))
    scenario.advance_to(t0 + minutes(130))
    assert scenario.phase() is InfusionPhase.STOPPED_OBSERVATION
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.advance_to(t0 + minutes(140))
    assert scenario.phase() is InfusionPhase.PAUSED  # the window closed at grade 2
    assert not scenario.state.course.withdrawn
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    assert rates_since(scenario, mark) == [75.0]
    assert scenario.phase() is InfusionPhase.RUNNING


def test_I5_I10_L4_a_grade_3_report_with_an_earlier_onset_opens_the_window_at_that_onset() -> None:
    """Grade 1 at t0, then grade 3 at t0+15 with onset t0-20: the window opens at t0-20 (its
    own onset) and ends at t0+100; the record moves to t0-20 (at 100 ml/h, and a running time
    at onset never later than the truth: 130 min less the 35 min since the onset)."""
    scenario = at_150()
    t0 = scenario.now
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(15))
    scenario.send(ReactionReported(grade=3, signs=OTHER, onset_at=t0 - minutes(20), actor="n"))
    reaction = scenario.state.reaction
    assert reaction is not None
    assert reaction.onset_at == t0 - minutes(20)
    assert reaction.observation_started_at == t0 - minutes(20)
    assert reaction.running_min == pytest.approx(95.0)  # L4 counts from the earliest onset
    assert reaction.rate_ml_h == 100.0  # the confirmed rate at that onset
    scenario.advance_to(t0 + minutes(99))
    assert scenario.phase() is InfusionPhase.STOPPED_OBSERVATION
    scenario.advance(minutes(1))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert withdrawn_at(scenario) == t0 + minutes(100)


def test_I5_I10_an_earlier_onset_after_the_window_opened_moves_only_the_record() -> None:
    """Grade 3 at t0 opens the window; a report at t0+30 with onset t0-20 moves the record's
    onset, running time and rate at onset, never the window (it still ends at t0+120)."""
    scenario = at_150()
    t0 = scenario.now
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, onset_at=t0 - minutes(20), actor="n"))
    reaction = scenario.state.reaction
    assert reaction is not None
    assert (reaction.onset_at, reaction.rate_ml_h) == (t0 - minutes(20), 100.0)
    assert reaction.running_min == pytest.approx(80.0)  # 130 min less the 50 since the onset
    assert reaction.observation_started_at == t0
    assert deadline_of(scenario, DeadlineKind.OBSERVATION_END) == t0 + minutes(120)
    scenario.advance_to(t0 + minutes(119))
    assert scenario.phase() is InfusionPhase.STOPPED_OBSERVATION
    scenario.advance(minutes(1))
    assert withdrawn_at(scenario) == t0 + minutes(120)


def test_I4_I10_a_later_reports_earlier_onset_does_not_move_the_6_h_clock() -> None:
    """Grade 2 bronchospasm at t0 starts I4's 6 h; a report at t0+30 with onset t0-20 moves the
    record to t0-20 but I4 still withdraws at t0+6 h, not at t0+5 h 40."""
    scenario = at_150()
    t0 = scenario.now
    scenario.send(ReactionReported(grade=2, signs=SPASM, actor="nurse"))
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=2, signs=SPASM, onset_at=t0 - minutes(20), actor="n"))
    reaction = scenario.state.reaction
    assert reaction is not None
    assert reaction.onset_at == t0 - minutes(20)
    assert reaction.bronchospasm_onset_at == t0
    assert deadline_of(scenario, DeadlineKind.BRONCHOSPASM_LIMIT) == t0 + timedelta(hours=6)
    scenario.advance_to(t0 + timedelta(hours=5, minutes=59))
    assert scenario.phase() is InfusionPhase.PAUSED
    scenario.advance(minutes(1))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert withdrawn_at(scenario) == t0 + timedelta(hours=6)


def test_I10_L4_the_earliest_onset_entered_decides_infusion_2s_row() -> None:
    """Infusion 1: grade 1 reported at 185 min of running, then (5 min later, paused) grade 2
    with onset 10 min before the first report: the record's running time at onset is taken
    from the earliest onset (185 - 15 = 170 min, never later than the truth), inside the first
    3 hours, so infusion 2 repeats the first row."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(185))
    t0 = scenario.now
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(5))
    scenario.send(ReactionReported(grade=2, signs=OTHER, onset_at=t0 - minutes(10), actor="n"))
    assert scenario.state.reaction is not None
    assert scenario.state.reaction.running_min == pytest.approx(170.0)
    scenario.send(ResumeRequested(actor="nurse"))
    scenario.run_to_end()
    assert scenario.phase() is InfusionPhase.COMPLETED
    record = infusion_record(scenario.state)
    assert [r.running_min for r in record.reactions] == [pytest.approx(170.0)]
    assert select_row(REVIEW, 2, CourseState(infusions=(record,))).kind is RowKind.FIRST


# --- A2: a latched communication loss holds escalation -----------------------------------------


def lost_and_back(scenario: Scenario) -> None:
    """The link is lost for 10 min; the pump kept running at its step and reads back so."""
    scenario.send(LinkLost())
    scenario.advance(minutes(10))
    pump = scenario.pump
    scenario.send(LinkRestored(running=True, rate_ml_h=pump.rate, volume_infused_ml=pump.volume))


def test_A2_L1_the_link_back_alone_never_resumes_the_ladder() -> None:
    """30 min at 50 ml/h, 10 min lost, then 2 h with the link back and the alarm latched: no
    step, the rate stays 50 ml/h; running time counts again once the pump is read back."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    mark = scenario.mark()
    lost_and_back(scenario)
    assert MachineAlarm.COMM_LOSS.value in scenario.state.latched
    assert scenario.state.counting
    assert deadline_of(scenario, DeadlineKind.ESCALATION) is None
    scenario.advance(minutes(120))
    assert rates_since(scenario, mark) == []
    assert scenario.state.rate_ml_h == 50.0
    assert scenario.state.running_min == pytest.approx(150.0)  # the 10 min lost do not count


def test_A2_L1_after_the_nurse_clears_comm_loss_the_step_comes_a_full_interval_later() -> None:
    """The step due at 60 min waits for the clear (at 160 min); then one full interval of
    running from the clear, and one increment only (50 -> 100 ml/h)."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    lost_and_back(scenario)
    scenario.advance(minutes(120))
    cleared = scenario.now
    mark = scenario.mark()
    scenario.send(ClearAlarm(alarm="comm_loss", actor="nurse", role="nurse"))
    assert MachineAlarm.COMM_LOSS.value not in scenario.state.latched
    assert rates_since(scenario, mark) == []  # a clear never moves the pump
    assert deadline_of(scenario, DeadlineKind.ESCALATION) == cleared + minutes(60)
    scenario.advance(minutes(59))
    assert scenario.state.rate_ml_h == 50.0
    scenario.advance(minutes(1))
    assert rates_since(scenario, mark) == [100.0]


def test_A2_L1_a_clear_refused_while_the_link_is_lost_keeps_escalation_held() -> None:
    """Comm loss cannot be cleared before the link is back (A1 clarification); once back and
    cleared, the ladder resumes from the clear."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(70))  # 100 ml/h for 10 min
    scenario.send(LinkLost())
    refused = scenario.send(ClearAlarm(alarm="comm_loss", actor="nurse", role="nurse"))
    assert refused.refusal is not None
    assert refused.refusal.rule == "A2"
    scenario.advance(minutes(5))
    pump = scenario.pump
    scenario.send(LinkRestored(running=True, rate_ml_h=pump.rate, volume_infused_ml=pump.volume))
    scenario.advance(minutes(90))
    assert scenario.state.rate_ml_h == 100.0
    scenario.send(ClearAlarm(alarm="comm_loss", actor="nurse", role="nurse"))
    scenario.advance(minutes(60))
    assert scenario.state.rate_ml_h == 150.0


# --- L6 past 210 min of running time ----------------------------------------------------------


def test_L6_past_210_min_of_running_after_a_reaction_the_steps_go_to_200_at_most() -> None:
    """Subsequent row (100 ml/h): grade 2 at 50 min, resume at 50 ml/h; steps at 110 (100),
    170 (150), then at 230 min, past 210, L6 no longer binds: 200 ml/h (L2), and no more."""
    scenario = started(RowKind.SUBSEQUENT)
    assert scenario.state.min_duration_min == 210
    scenario.advance(minutes(50))
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    scenario.run_to_end()
    assert scenario.phase() is InfusionPhase.COMPLETED
    assert [rate for _, rate in scenario.profile] == [100.0, 50.0, 100.0, 150.0, 200.0]
    late = [c for c in scenario.commands if isinstance(c, SetRate) and c.rate_ml_h == 200.0]
    assert [run for run, rate in scenario.profile if rate == 200.0] == [pytest.approx(230.0)]
    assert "L6" not in late[0].decision.rules  # no cap from a minimum duration already run
    assert scenario.state.delivered_ml == pytest.approx(500.0)


@pytest.mark.parametrize("running_min", [209.999, 210.0, 210.001, 300.0, 10_000.0])
def test_L6_at_and_past_210_min_the_cap_is_gone_and_never_divides_by_zero(
    running_min: float,
) -> None:
    """L6 at exactly 210 min and beyond gives no cap (no division by zero, no negative time);
    the step is min(next rate, 200 ml/h)."""
    cap = min_duration_cap(100.0, running_min, 210)
    if running_min < 210:
        assert cap is not None
        assert cap.value_ml_h > 0
    else:
        assert cap is None
    decision = step_decision(
        REVIEW, 175.0, remaining_ml=100.0, running_min=running_min, min_duration_min=210
    )
    assert decision.rate_ml_h == 200.0
    assert decision.bound_by.rule == "L2"


# --- L4, I11: infusion 2's row ------------------------------------------------------------------


def test_L4_I11_a_delayed_reaction_after_completion_gives_infusion_2_the_first_row() -> None:
    """Infusion 1 completed clean, then a grade 1 reported after completion (I11): infusion 2
    takes the first-infusion row (1000 ml at 50 ml/h), as it would without the late report
    take the second (500 ml)."""
    scenario = started(RowKind.FIRST)
    scenario.run_to_end()
    assert scenario.phase() is InfusionPhase.COMPLETED
    clean = CourseState(infusions=(infusion_record(scenario.state),))
    assert select_row(REVIEW, 2, clean).kind is RowKind.SECOND
    decision = scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    assert decision.refusal is None
    assert decision.commands == ()  # no pump action after the end
    record = infusion_record(scenario.state)
    assert [r.after_completion for r in record.reactions] == [True]
    history = CourseState(infusions=(record,))
    assert select_row(REVIEW, 2, history).kind is RowKind.FIRST
    second = plan(REVIEW, 2, history)
    assert (second.bag_ml, second.initial_rate_ml_h) == (1000, 50)


@pytest.mark.parametrize("ran_min", [100, 200])
def test_L4_infusion_1_stopped_early_with_no_reaction_gives_infusion_2_the_first_row(
    ran_min: int,
) -> None:
    """Infusion 1 stopped for good by a nurse (no reaction), before or after 3 h of running:
    it did not complete, so it cannot show it was tolerated; infusion 2 repeats the first row."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(ran_min))
    scenario.send(Stop(reason="patient left", actor="nurse"))
    assert scenario.phase() is InfusionPhase.STOPPED
    record = infusion_record(scenario.state)
    assert (record.completed, record.reactions) == (False, ())
    history = CourseState(infusions=(record,))
    row = select_row(REVIEW, 2, history)
    assert row.kind is RowKind.FIRST
    assert row.rules[0].rule == "L4"
    second = plan(REVIEW, 2, history)
    assert (second.bag_ml, second.initial_rate_ml_h) == (1000, 50)
