"""Infusion-related reactions in the machine: I1-I11 with Table 5's numbers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from machine_scenario import LABEL, OTHER, REVIEW, T0, Scenario, minutes, planned, started
from planning_helpers import SPLIT

from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.machine import (
    DeadlineKind,
    InfusionPhase,
    LinkLost,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    ReactionReported,
    Reassessed,
    Resolved,
    ResumeRequested,
    Run,
    SetRate,
    Start,
    StopPump,
    TimePassed,
    decide,
    infusion_record,
    initial_state,
    next_deadline,
)
from pumpctl.core.planner import select_row
from pumpctl.core.protocol import RowKind

EDEMA = frozenset({Sign.LARYNGEAL_EDEMA})
SPASM = frozenset({Sign.BRONCHOSPASM})


def at_150() -> Scenario:
    """A first infusion two hours in: running at 150 ml/h."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(130))
    assert scenario.state.rate_ml_h == 150.0
    return scenario


def refused_rule(scenario: Scenario, event: object) -> str | None:
    """Send `event` without keeping it; the refusal's rule (None if accepted)."""
    decision = decide(scenario.state, event, scenario.now)  # type: ignore[arg-type]
    if decision.refusal is None:
        return None
    assert (
        decision.state.model_dump()
        == decide(scenario.state, TimePassed(), scenario.now).state.model_dump()
    )
    assert not any(isinstance(c, Run | SetRate) for c in decision.commands)
    return decision.refusal.rule


def withdrawals(scenario: Scenario) -> list[tuple[str | None, str | None]]:
    return [(a.type, a.rule) for a in scenario.audit if "withdrawn" in a.type]


# --- I1 ---------------------------------------------------------------------------------------


def test_I1_any_reaction_stops_the_pump_at_once() -> None:
    scenario = at_150()
    decision = decide(
        scenario.state,
        ReactionReported(grade=1, signs=OTHER, actor="nurse"),
        scenario.now,
    )
    assert isinstance(decision.commands[0], StopPump)
    assert decision.state.phase is InfusionPhase.PAUSED
    assert next(a for a in decision.audit if a.type == "reaction").rule == "I1"


def test_I1_a_reaction_takes_precedence_over_alarm_recovery() -> None:
    scenario = at_150()
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    mark = scenario.mark()
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    scenario.advance(minutes(30))
    assert not any(isinstance(c, Run | SetRate) for c in scenario.since(mark))
    # The pump restarted at its own panel: the machine stops it again (I1 over A1).
    scenario.send(PumpConfirmedRunning(rate_ml_h=150.0, volume_infused_ml=scenario.pump.volume))
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 75.0  # I2, not the same rate A1 would give


# --- I2 ---------------------------------------------------------------------------------------


def test_I2_grade_1_pauses_and_resumes_at_half_then_climbs_from_zero() -> None:
    """Grade 1 at 150 ml/h: paused; resume at 75; +50 after each full hour from the resume."""
    scenario = at_150()
    scenario.send(ReactionReported(grade=1, actor="nurse", signs=OTHER))
    assert scenario.state.phase is InfusionPhase.PAUSED
    running = scenario.state.running_min
    scenario.advance(minutes(45))
    assert scenario.state.running_min == running  # paused: no running time
    assert next_deadline(scenario.state).kind is not DeadlineKind.ESCALATION  # type: ignore[union-attr]
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse"))
    resume = next(c for c in scenario.since(mark) if isinstance(c, SetRate))
    assert resume.rate_ml_h == 75.0
    assert resume.decision.bound_by.rule == "I2"
    assert any(isinstance(c, Run) for c in scenario.since(mark))
    scenario.advance(minutes(59))
    assert scenario.state.rate_ml_h == 75.0
    scenario.advance(minutes(1))
    assert scenario.state.rate_ml_h == 125.0
    scenario.advance(minutes(60))
    assert scenario.state.rate_ml_h == 175.0
    scenario.advance(minutes(60))
    assert scenario.state.rate_ml_h == 200.0
    scenario.run_to_end()
    assert scenario.phase() is InfusionPhase.COMPLETED


def test_I2_half_rate_is_rounded_down_to_a_tenth() -> None:
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(125))
    assert scenario.state.rate_ml_h == 166.6
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 83.3


# --- I3 ---------------------------------------------------------------------------------------


def test_I3_grade_2_laryngeal_edema_withdraws() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=EDEMA, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.WITHDRAWN
    assert any(isinstance(c, StopPump) for c in scenario.commands)
    assert withdrawals(scenario) == [("withdrawn", "I3"), ("course_withdrawn", "I8")]
    assert scenario.state.course.withdrawn


def test_I3_grade_1_laryngeal_edema_pauses_and_a_reassessment_to_2_withdraws() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=1, signs=EDEMA, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.PAUSED
    scenario.send(Reassessed(grade=2, signs=EDEMA, actor="nurse"))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario)[0] == ("withdrawn", "I3")


def test_I3_wins_over_I5_when_both_apply() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=EDEMA | SPASM, actor="nurse"))
    assert withdrawals(scenario)[0] == ("withdrawn", "I3")


# --- I4 ---------------------------------------------------------------------------------------


def test_I4_bronchospasm_blocks_resume_until_resolved() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=SPASM, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.PAUSED
    assert refused_rule(scenario, ResumeRequested(actor="nurse")) == "I4"
    scenario.advance(timedelta(hours=5))
    scenario.send(Resolved(actor="nurse"))
    assert refused_rule(scenario, ResumeRequested(actor="nurse")) is None
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 75.0  # resume per I2


def test_I4_not_resolved_within_6_h_of_onset_withdraws() -> None:
    scenario = at_150()
    onset = scenario.now - minutes(30)  # the nurse enters an earlier onset
    scenario.send(ReactionReported(grade=2, signs=SPASM, onset_at=onset, actor="nurse"))
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert deadline.kind is DeadlineKind.BRONCHOSPASM_LIMIT
    assert deadline.at == onset + timedelta(hours=6)
    scenario.advance(timedelta(hours=5, minutes=29))
    assert scenario.state.phase is InfusionPhase.PAUSED
    scenario.advance(minutes(1))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario)[0] == ("withdrawn", "I4")
    assert next(a for a in scenario.audit if a.type == "withdrawn").at == onset + timedelta(hours=6)


def test_I4_I5_grade_3_bronchospasm_needs_both_grade_2_and_resolved() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=SPASM, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.STOPPED_OBSERVATION
    scenario.send(Resolved(actor="nurse"))
    assert refused_rule(scenario, ResumeRequested(actor="nurse")) == "I5"
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 75.0


# --- I5 ---------------------------------------------------------------------------------------


def test_I5_grade_3_observes_2_h_and_withdraws_if_still_3() -> None:
    scenario = at_150()
    opened = scenario.now
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.STOPPED_OBSERVATION
    assert refused_rule(scenario, ResumeRequested(actor="nurse")) == "I5"
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert (deadline.kind, deadline.at) == (DeadlineKind.OBSERVATION_END, opened + minutes(120))
    scenario.advance(minutes(119))
    assert scenario.state.phase is InfusionPhase.STOPPED_OBSERVATION
    scenario.advance(minutes(1))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario) == [("withdrawn", "I5"), ("course_withdrawn", "I8")]


def test_I5_decreasing_to_2_inside_the_window_allows_a_resume_at_half() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(50))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.STOPPED_OBSERVATION
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.phase() is InfusionPhase.RUNNING
    assert scenario.state.rate_ml_h == 75.0


def test_I5_resume_also_after_the_window_closed_at_grade_2() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=4, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(90))
    scenario.send(Reassessed(grade=1, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(60))
    assert scenario.state.phase is InfusionPhase.PAUSED
    ended = next(a for a in scenario.audit if a.type == "observation_ended")
    assert ended.rule == "I5"
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 75.0


def test_I5_3_then_2_then_3_is_one_reaction_and_the_window_is_not_restarted() -> None:
    scenario = at_150()
    opened = scenario.now
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(30))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(30))
    scenario.send(
        ReactionReported(grade=3, signs=OTHER, actor="nurse")
    )  # a further report in the same stop
    scenario.advance(minutes(60))
    assert scenario.state.phase is InfusionPhase.WITHDRAWN
    assert next(a for a in scenario.audit if a.type == "withdrawn").at == opened + minutes(120)
    records = scenario.state.reactions
    assert len(records) == 1
    assert (records[0].grade, records[0].max_grade) == (3, 3)


def test_I5_an_earlier_onset_opens_the_window_earlier() -> None:
    scenario = at_150()
    onset = scenario.now - minutes(100)
    scenario.send(ReactionReported(grade=3, onset_at=onset, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(20))
    assert scenario.state.phase is InfusionPhase.WITHDRAWN


def test_I5_grade_3_again_after_the_window_closed_withdraws() -> None:
    """Safer reading: the same reaction back at grade 3 after its window did not settle."""
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.advance(minutes(130))
    assert scenario.state.phase is InfusionPhase.PAUSED
    scenario.send(Reassessed(grade=3, signs=OTHER, actor="nurse"))
    assert withdrawals(scenario)[0] == ("withdrawn", "I5")


# --- I6 ---------------------------------------------------------------------------------------


def severe(infusion_number: int) -> ReactionRecord:
    return ReactionRecord(
        grade=2, max_grade=3, rate_ml_h=100.0, running_min=70.0, infusion_number=infusion_number
    )


def test_I6_the_third_grade_3_over_the_course_withdraws_at_once() -> None:
    course = CourseState(
        infusions=(
            InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0, reactions=(severe(1),)),
            InfusionRecord(infusion_number=2, highest_rate_ml_h=200.0, reactions=(severe(2),)),
        )
    )
    scenario = started(RowKind.SECOND, course=course, infusion_number=3)
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario)[0] == ("withdrawn", "I6")


def test_I6_counts_occurrences_not_reports_within_one_infusion() -> None:
    scenario = at_150()
    # First occurrence: 3 -> 4 -> 2 is one occurrence.
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(Reassessed(grade=4, signs=OTHER, actor="nurse"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    scenario.advance(minutes(10))
    # Second occurrence after a resume: a new one.
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.phase is InfusionPhase.RUNNING
    assert scenario.state.rate_ml_h == 37.5
    scenario.advance(minutes(10))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario)[0] == ("withdrawn", "I6")
    assert [r.max_grade for r in scenario.state.reactions] == [4, 3, 3]


# --- I7 ---------------------------------------------------------------------------------------


def test_I7_grade_4_follows_I5_under_the_review() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=4, signs=OTHER, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.STOPPED_OBSERVATION
    assert not scenario.state.course.withdrawn


def test_I7_grade_4_withdraws_at_once_under_the_label_policy() -> None:
    scenario = started(RowKind.FIRST, protocol=LABEL)
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=4, signs=OTHER, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario) == [("withdrawn", "I7"), ("course_withdrawn", "I8")]


# --- I8 ---------------------------------------------------------------------------------------


def test_I8_withdrawn_is_terminal_and_refuses_everything_naming_I8() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=EDEMA, actor="nurse"))
    assert scenario.state.terminal
    for event in (
        ResumeRequested(actor="nurse"),
        Start(actor="nurse", course=scenario.state.course),
        Resolved(actor="nurse"),
        Reassessed(grade=1, signs=OTHER, actor="nurse"),
    ):
        decision = decide(scenario.state, event, scenario.now)
        assert decision.refusal is not None
        assert decision.refusal.rule in {"I8", "I11"}
        assert decision.commands == ()
    assert scenario.state.course.withdrawn_reason is not None
    assert scenario.state.course.withdrawn_reason.startswith("I3")


def test_I8_a_withdrawn_course_cannot_start_an_infusion() -> None:
    state = planned(RowKind.SECOND)
    course = state.course.model_copy(
        update={"withdrawn": True, "withdrawn_reason": "I3: laryngeal edema"}
    )
    decision = decide(state, Start(actor="nurse", course=course), T0)
    assert decision.refusal is not None
    assert decision.refusal.rule == "I8"
    assert decision.commands == ()


# --- I9 ---------------------------------------------------------------------------------------


def test_I9_the_machine_never_resumes_on_its_own() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(Reassessed(grade=1, signs=OTHER, actor="nurse"))
    mark = scenario.mark()
    scenario.advance(timedelta(hours=6))  # the window closes; nothing resumes
    assert not any(isinstance(c, Run | SetRate) for c in scenario.since(mark))
    assert scenario.state.phase is InfusionPhase.PAUSED


def test_I9_resume_while_running_is_refused() -> None:
    scenario = at_150()
    assert refused_rule(scenario, ResumeRequested(actor="nurse")) == "I9"


# --- I10 --------------------------------------------------------------------------------------


def test_I10_reactions_carry_rate_running_time_and_infusion_number() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    record = infusion_record(scenario.state).reactions[0]
    assert (record.rate_ml_h, record.infusion_number, record.grade) == (150.0, 1, 2)
    assert record.running_min == pytest.approx(130.0)
    audit = next(a for a in scenario.audit if a.type == "reaction")
    assert audit.data["reaction"]["rate_ml_h"] == 150.0  # type: ignore[index]
    assert audit.data["reaction"]["infusion_number"] == 1  # type: ignore[index]


def test_I10_an_onset_after_the_report_is_refused() -> None:
    scenario = at_150()
    assert refused_rule(
        scenario,
        ReactionReported(
            grade=1,
            onset_at=scenario.now + minutes(1),
            signs=OTHER,
            actor="nurse",
        ),
    )


# --- I11 --------------------------------------------------------------------------------------


def test_I11_a_reaction_after_completion_is_recorded_without_pump_action() -> None:
    scenario = started(RowKind.SECOND)
    scenario.run_to_end()
    scenario.advance(timedelta(days=1))
    decision = decide(
        scenario.state,
        ReactionReported(grade=2, signs=OTHER, actor="nurse"),
        scenario.now,
    )
    assert decision.commands == ()
    assert decision.state.phase is InfusionPhase.COMPLETED
    record = decision.state.reactions[-1]
    assert record.after_completion
    assert record.running_min == pytest.approx(240.0)
    assert infusion_record(decision.state).reactions == (record,)
    assert next(a for a in decision.audit if a.type == "reaction").rule == "I11"


def test_I11_a_late_third_grade_3_withdraws_the_course() -> None:
    course = CourseState(
        infusions=(
            InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0, reactions=(severe(1),)),
            InfusionRecord(infusion_number=2, highest_rate_ml_h=200.0, reactions=(severe(2),)),
        )
    )
    scenario = started(RowKind.SECOND, course=course, infusion_number=3)
    scenario.run_to_end()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    assert not scenario.state.course.withdrawn
    decision = decide(
        scenario.state,
        Reassessed(grade=3, signs=OTHER, actor="nurse"),
        scenario.now,
    )
    assert decision.commands == ()
    assert decision.state.course.withdrawn
    assert [(a.type, a.rule) for a in decision.audit][-1] == ("course_withdrawn", "I8")


def test_I5_an_onset_more_than_2_h_ago_at_grade_3_withdraws_in_the_same_decision() -> None:
    scenario = at_150()
    running = scenario.state.running_min
    decision = decide(
        scenario.state,
        ReactionReported(
            grade=3,
            onset_at=scenario.now - minutes(125),
            signs=OTHER,
            actor="nurse",
        ),
        scenario.now,
    )
    assert decision.state.phase is InfusionPhase.WITHDRAWN
    assert isinstance(decision.commands[0], StopPump)
    assert decision.state.running_min == running  # time is never counted twice
    assert decision.state.last_event_at == scenario.now


# --- safety review: edge cases of I1-I11 -----------------------------------------------------


def test_I1_a_reaction_when_a_step_falls_due_stops_first_and_never_steps() -> None:
    """The step due at 60 min was not yet processed (late time driver): the stop goes first."""
    scenario = started(RowKind.FIRST)
    for late in (0.0, 30.0):
        decision = decide(
            scenario.state,
            ReactionReported(grade=1, signs=OTHER, actor="nurse"),
            T0 + minutes(60 + late),
        )
        assert isinstance(decision.commands[0], StopPump)
        assert not any(isinstance(c, SetRate | Run) for c in decision.commands)
        assert decision.state.reaction is not None
        assert decision.state.reaction.rate_ml_h == 50.0
        assert not any(a.type == "rate_step" for a in decision.audit)


def test_I2_a_reaction_before_a_step_is_confirmed_resumes_at_half_the_rate_it_ran_at() -> None:
    """Step to 100 commanded, never confirmed: the pump is known to have run at 50 -> 25."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(59))
    scenario.auto_confirm = False
    scenario.advance(minutes(1))
    assert scenario.state.rate_ml_h == 100.0
    assert scenario.state.outstanding != ()
    scenario.auto_confirm = True
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 25.0
    assert scenario.state.reactions[-1].rate_ml_h == 50.0


def test_I2_a_reaction_while_the_pump_runs_slower_than_the_step_resumes_at_half_its_rate() -> None:
    """A2 left a pump found at 60 ml/h (step 100) as it was: I2 halves the 60 it really ran at."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(70))
    scenario.send(LinkLost())
    scenario.pump.rate = 60.0
    scenario.send(
        LinkRestored(running=True, rate_ml_h=60.0, volume_infused_ml=scenario.pump.volume)
    )
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 30.0


def test_I2_a_reaction_while_paused_for_an_alarm_halves_the_last_non_zero_rate() -> None:
    scenario = at_150()
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="air_in_line"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    assert scenario.state.pump_rate_ml_h == 0.0
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(PumpAlarmCleared(alarm="air_in_line"))
    scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 75.0


def test_I3_a_grade_2_reassessment_of_a_reaction_with_laryngeal_edema_withdraws() -> None:
    """The sign recorded earlier in the same reaction counts: the nurse need not repeat it."""
    scenario = at_150()
    scenario.send(ReactionReported(grade=1, signs=EDEMA, actor="nurse"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))  # signs default to `other`
    assert scenario.state.phase is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario)[0] == ("withdrawn", "I3")


def test_I4_a_grade_2_reassessment_of_a_bronchospasm_holds_from_the_bronchospasm_onset() -> None:
    scenario = at_150()
    onset = scenario.now - minutes(30)
    scenario.send(ReactionReported(grade=1, signs=SPASM, onset_at=onset, actor="nurse"))
    scenario.advance(minutes(60))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))  # signs default to `other`
    assert refused_rule(scenario, ResumeRequested(actor="nurse")) == "I4"
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert (deadline.kind, deadline.at) == (
        DeadlineKind.BRONCHOSPASM_LIMIT,
        onset + timedelta(hours=6),
    )


def test_I5_a_grade_3_report_after_a_resume_opens_a_new_window_and_is_a_new_occurrence() -> None:
    scenario = at_150()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    scenario.advance(minutes(20))
    reopened = scenario.now
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert (deadline.kind, deadline.at) == (DeadlineKind.OBSERVATION_END, reopened + minutes(120))
    assert [r.max_grade for r in scenario.state.reaction_records] == [3, 3]


def test_I6_split_first_dose_day_1_occurrences_count_on_day_2() -> None:
    """Days 1 and 2 are both infusion 1: day 1's grade >= 3 reactions still count (course-wide)."""
    day1 = InfusionRecord(
        infusion_number=1, highest_rate_ml_h=150.0, reactions=(severe(1), severe(1)), day=1
    )
    state = initial_state(
        SPLIT, infusion_number=1, day=2, course=CourseState(infusions=(day1,)), bag_prepared_at=T0
    )
    assert state.bag_ml == SPLIT.rows.second.bag_ml  # the split day's row, from the protocol
    scenario = Scenario(state)
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.advance(minutes(30))
    assert infusion_record(scenario.state).day == 2
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    assert scenario.state.phase is InfusionPhase.WITHDRAWN
    assert withdrawals(scenario)[0] == ("withdrawn", "I6")


def test_I10_L4_an_earlier_onset_records_the_running_time_at_onset() -> None:
    """Onset at 175 min, reported at 185 min: recorded at <= 175 min, so L4 counts it."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(185))
    scenario.send(
        ReactionReported(
            grade=1,
            onset_at=scenario.now - minutes(10),
            signs=OTHER,
            actor="nurse",
        )
    )
    assert scenario.state.reaction is not None
    assert scenario.state.reaction.running_min == pytest.approx(175.0)
    scenario.send(ResumeRequested(actor="nurse"))
    scenario.run_to_end()
    assert scenario.state.phase is InfusionPhase.COMPLETED
    history = CourseState(infusions=(infusion_record(scenario.state),))
    assert select_row(REVIEW, 2, history).kind is RowKind.FIRST


def test_I11_a_late_grade_2_laryngeal_edema_withdraws_the_course() -> None:
    """I3 applies to a delayed reaction too: no pump action, but no further infusion."""
    scenario = started(RowKind.SECOND)
    scenario.run_to_end()
    decision = decide(
        scenario.state, ReactionReported(grade=2, signs=EDEMA, actor="nurse"), scenario.now
    )
    assert decision.commands == ()
    assert decision.state.phase is InfusionPhase.COMPLETED
    assert decision.state.course.withdrawn
    assert decision.state.course.withdrawn_reason is not None
    assert decision.state.course.withdrawn_reason.startswith("I3")


def test_I11_a_late_grade_4_withdraws_the_course_under_the_label_policy() -> None:
    scenario = started(RowKind.SECOND, protocol=LABEL)
    scenario.run_to_end()
    decision = decide(
        scenario.state,
        ReactionReported(grade=4, signs=OTHER, actor="nurse"),
        scenario.now,
    )
    assert decision.commands == ()
    assert decision.state.course.withdrawn
    assert [(a.type, a.rule) for a in decision.audit][-1] == ("course_withdrawn", "I8")
