"""I9 resumes and I11 late reactions pinned fact by fact (issue 22).

Each test feeds one resume or one reaction reported after the end to `decide` and checks the
outcome a nurse and the audit trail see: the rule and words of every refusal (in the order
A3, A2, L9, A1, A4, I9, I4, I5), the rate a resume runs at and the limits that gave it, the
alarms a resume acknowledges, the record a late reaction leaves, and the course withdrawals it
causes (docs/clinical-rules.md, I2, I4, I5, I9, I10, I11, A1-A4).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from machine_scenario import LABEL, OTHER, Scenario, facts, minutes, planned, started

from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.machine import (
    CommandConfirmed,
    Decision,
    InfusionPhase,
    InfusionState,
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
    Stop,
    decide,
)
from pumpctl.core.machine.state import RatePoint
from pumpctl.core.protocol import RowKind

RESUME = ResumeRequested(actor="nurse")


def refused(decision: Decision, rule: str, reason: str) -> None:
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.rule, decision.refusal.reason) == (
        "rule",
        rule,
        reason,
    )
    assert decision.commands == ()


def invalid(decision: Decision, reason: str) -> None:
    assert decision.refusal is not None
    refusal = decision.refusal
    assert (refusal.kind, refusal.field, refusal.rule, refusal.reason) == (
        "invalid",
        "onset_at",
        "I10",
        reason,
    )
    assert decision.commands == ()


def paused(grade: int = 1, after: float = 70.0) -> Scenario:
    """The first infusion (100 ml/h from 60 min) paused by a reaction of `grade` at `after`."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(after))
    scenario.send(ReactionReported(grade=grade, signs=OTHER, actor="nurse"))
    return scenario


# --- I9: why a resume is refused, rule by rule, in order --------------------------------------


def test_L3_a_resume_before_the_start_is_refused() -> None:
    refused(
        decide(planned(), RESUME, planned().bag_prepared_at), "L3", "the infusion has not started"
    )


@pytest.mark.parametrize(
    ("changes", "rule", "reason"),
    [
        (
            {"stop_unconfirmed": True, "link_lost": True},
            "A3",
            "the pump is not yet confirmed stopped: clamp the line",
        ),
        ({"link_lost": True, "bag_expired": True}, "A2", "no link to the pump"),
        (
            {"bag_expired": True, "alarms": frozenset({"occlusion"})},
            "L9",
            "the bag is past its stability: replace it first",
        ),
        (
            {
                "alarms": frozenset({"occlusion", "air_in_line"}),
                "latched": frozenset({"core_fault"}),
            },
            "A1",
            "clear the pump alarm first (air_in_line, occlusion)",
        ),
        (
            {"latched": frozenset({"safety_envelope", "over_infusion"}), "unexplained_stop": True},
            "A1",
            "over_infusion: a clinician must clear it first",
        ),
        (
            {"latched": frozenset({"safety_envelope"})},
            "A1",
            "safety_envelope: a clinician must clear it first",
        ),
    ],
)
def test_A3_A2_L9_A1_a_resume_is_refused_by_the_first_rule_that_forbids_it(
    changes: dict[str, object], rule: str, reason: str
) -> None:
    scenario = paused()
    state = scenario.state.updated(changes)
    refused(decide(state, RESUME, scenario.now), rule, reason)


def unexplained() -> tuple[InfusionState, Scenario]:
    """Running, then found stopped with no record why (A4), no reaction open."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    return scenario.state.updated({"unexplained_stop": True}), scenario


def test_A4_a_stop_with_no_record_why_needs_a_reaction_or_no_reaction_to_resume() -> None:
    state, scenario = unexplained()
    refused(
        decide(state, RESUME, scenario.now),
        "A4",
        "the pump was found stopped with no record why: report a reaction or say none",
    )
    said = decide(state, ResumeRequested(actor="nurse", no_reaction=True), scenario.now)
    assert said.refusal is None
    assert not said.state.unexplained_stop


def test_I9_a_resume_of_a_pump_running_at_the_step_is_refused_but_not_one_running_slower() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    refused(
        decide(scenario.state, RESUME, scenario.now),
        "I9",
        "the pump is already running at the current step",
    )
    slower = scenario.state.updated({"pump_rate_ml_h": 30.0})
    assert decide(slower, RESUME, scenario.now).refusal is None
    within = scenario.state.updated({"pump_rate_ml_h": 50.04})
    assert decide(within, RESUME, scenario.now).refusal is not None


def test_I4_a_resume_inside_the_bronchospasm_hold_is_refused_in_words() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    signs = frozenset({Sign.BRONCHOSPASM})
    scenario.send(ReactionReported(grade=2, signs=signs, actor="nurse"))
    refused(
        decide(scenario.state, RESUME, scenario.now),
        "I4",
        "bronchospasm grade >= 2: no resume until it is marked resolved",
    )


def test_I5_a_resume_at_grade_3_inside_the_window_is_refused_in_words() -> None:
    scenario = paused(grade=3)
    refused(
        decide(scenario.state, RESUME, scenario.now),
        "I5",
        "grade 3 inside the observation window: resume only at <= 2",
    )


# --- I2, I5: a resume after a reaction --------------------------------------------------------


def test_I2_a_resume_after_grade_1_runs_at_half_and_is_audited_with_its_limits() -> None:
    """Grade 1 at 70 min, at 100 ml/h: resume at 50, the interval from zero, the reaction a
    record of the infusion, audited under I2 with the limit chain."""
    scenario = paused(grade=1)
    first = scenario.state.next_command_id
    decision = decide(scenario.state, ResumeRequested(actor="ann"), scenario.now)
    setrate, run = decision.commands
    assert isinstance(setrate, SetRate)
    assert (setrate.id, setrate.rate_ml_h) == (first, 50.0)
    assert run == Run(first + 1)
    bound = setrate.decision.bound_by
    assert (bound.rule, bound.value_ml_h, bound.reason) == (
        "I2",
        50.0,
        "resume at 0.5 x the last rate 100 ml/h",
    )
    s = decision.state
    assert (s.phase, s.ladder_settled, s.rate_ml_h, s.at_rate_min) == (
        InfusionPhase.RUNNING,
        False,
        50.0,
        0.0,
    )
    assert s.period_started_at == scenario.now
    assert s.reaction is None
    assert [r.grade for r in s.reactions] == [1]
    assert facts(decision.audit) == [
        (
            "resumed",
            "I2",
            {
                "actor": "ann",
                "rate_ml_h": 50.0,
                "decision": setrate.decision.to_json(),
            },
        )
    ]
    assert decision.audit[0].at == scenario.now


def test_I5_a_resume_after_a_window_is_audited_under_I5() -> None:
    scenario = paused(grade=3)
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="nurse"))
    decision = decide(scenario.state, RESUME, scenario.now)
    assert [(a.type.value, a.rule.value) for a in decision.audit] == [("resumed", "I5")]
    assert decision.state.rate_ml_h == 50.0


def test_I2_a_resume_after_the_settled_ladder_climbs_again() -> None:
    scenario = paused(grade=1)
    state = scenario.state.updated({"ladder_settled": True})
    assert not decide(state, RESUME, scenario.now).state.ladder_settled


def test_I2_a_reaction_before_the_pump_ever_ran_resumes_at_half_and_is_still_starting() -> None:
    """The run was never confirmed running: the resume halves the initial rate (50 to 25) and
    the infusion is starting again, not running."""
    scenario = Scenario(planned(RowKind.FIRST), auto_confirm=False)
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    for command_id in (1, 2, 3, 4):
        vtbi = 1000.0 if command_id == 2 else None
        scenario.send(
            CommandConfirmed(
                command_id=command_id,
                running=False,
                rate_ml_h=0.0,
                volume_infused_ml=0.0,
                vtbi_ml=vtbi,
            )
        )
    reaction = scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    for command in reaction.pump_commands:
        scenario.send(
            CommandConfirmed(
                command_id=command.id, running=False, rate_ml_h=0.0, volume_infused_ml=0.0
            )
        )
    decision = decide(scenario.state, RESUME, scenario.now)
    assert decision.state.phase is InfusionPhase.STARTING
    assert [c.rate_ml_h for c in decision.commands if isinstance(c, SetRate)] == [25.0]


def test_I2_a_ninth_halving_is_refused_saying_why() -> None:
    scenario = started(RowKind.FIRST)
    for _ in range(9):
        scenario.advance(minutes(1))
        scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        if scenario.state.rate_ml_h > 0.1:
            scenario.send(RESUME)
    refused(
        decide(scenario.state, RESUME, scenario.now),
        "I2",
        "half of 0.1 ml/h is below the pump's smallest rate (rate chain: I2 leaves no positive "
        "rate (resume at 0.5 x the last rate 0.1 ml/h))",
    )


# --- A1, A2, A4: a resume after the pump stopped ----------------------------------------------


def test_A1_A2_a_resume_acknowledges_the_stop_and_the_lower_rate_and_runs_at_the_step() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    volume = scenario.pump.volume
    scenario.send(PumpConfirmedRunning(rate_ml_h=30.0, volume_infused_ml=volume))
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=volume))
    assert {"rate_lower_than_expected", "pump_stopped_unexpectedly"} <= scenario.state.latched
    first = scenario.state.next_command_id
    decision = decide(scenario.state, ResumeRequested(actor="ann"), scenario.now)
    assert not ({"rate_lower_than_expected", "pump_stopped_unexpectedly"} & decision.state.latched)
    assert decision.state.period_started_at == scenario.now
    setrate, run = decision.commands
    assert isinstance(setrate, SetRate)
    assert (setrate.id, setrate.rate_ml_h, run) == (first, 50.0, Run(first + 1))
    bound = setrate.decision.bound_by
    assert (bound.rule, bound.reason) == ("A1", "continue at the same rate after the pump stopped")
    assert facts(decision.audit) == [
        (
            "alarm_cleared",
            "A1",
            {"alarm": "pump_stopped_unexpectedly", "actor": "ann", "by": "resume"},
        ),
        (
            "alarm_cleared",
            "A1",
            {"alarm": "rate_lower_than_expected", "actor": "ann", "by": "resume"},
        ),
        ("resumed", "A1", {"actor": "ann", "rate_ml_h": 50.0}),
    ]
    assert {a.at for a in decision.audit} == {scenario.now}


def test_A1_a_resume_after_a_pump_alarm_keeps_its_latch_for_the_nurse_s_clear() -> None:
    """Only the stop and the lower rate are acknowledged by a resume; a pump alarm is
    cleared by a nurse (A1), so a resume with one latched is refused."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    decision = decide(scenario.state, RESUME, scenario.now)
    assert decision.refusal is None
    assert "occlusion" in decision.state.latched


# --- I11: reactions after the end -------------------------------------------------------------


def completed_second() -> Scenario:
    """The second infusion (240 min) completed, then two hours later."""
    scenario = started(RowKind.SECOND)
    scenario.run_to_end()
    assert scenario.phase() is InfusionPhase.COMPLETED
    scenario.advance(timedelta(hours=2))
    return scenario


def test_I11_a_late_reaction_is_a_record_after_completion_with_its_onset() -> None:
    scenario = completed_second()
    onset = scenario.now - minutes(30)
    event = ReactionReported(grade=2, signs=OTHER, onset_at=onset, actor="ann")
    decision = decide(scenario.state, event, scenario.now)
    assert decision.commands == ()
    record = decision.state.reactions[-1]
    expected = ReactionRecord(
        grade=2,
        max_grade=2,
        signs=OTHER,
        rate_ml_h=0.0,
        running_min=240.0,
        infusion_number=2,
        after_completion=True,
        onset_at=onset,
    )
    assert record == expected
    assert facts(decision.audit) == [
        ("reaction", "I11", {"actor": "ann", "reaction": expected.model_dump(mode="json")})
    ]
    assert decision.audit[0].at == scenario.now
    unstated = decide(
        scenario.state, ReactionReported(grade=1, signs=OTHER, actor="a"), scenario.now
    )
    assert unstated.state.reactions[-1].onset_at == scenario.now


def test_I11_a_late_reaction_after_a_stop_for_good_is_not_after_completion() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(Stop(reason="patient request", actor="dr"))
    scenario.advance(minutes(10))
    decision = decide(
        scenario.state, ReactionReported(grade=1, signs=OTHER, actor="a"), scenario.now
    )
    record = decision.state.reactions[-1]
    assert not record.after_completion
    assert record.running_min == pytest.approx(30.0)
    assert decision.state.phase is InfusionPhase.STOPPED


def test_I10_I11_a_late_onset_must_lie_between_the_start_and_the_report() -> None:
    scenario = completed_second()
    start = scenario.state.started_at
    assert start is not None
    after = ReactionReported(grade=1, signs=OTHER, onset_at=scenario.now + minutes(1), actor="a")
    invalid(decide(scenario.state, after, scenario.now), "the onset is after the report")
    before = ReactionReported(grade=1, signs=OTHER, onset_at=start - minutes(1), actor="a")
    invalid(
        decide(scenario.state, before, scenario.now), "the onset is before the infusion started"
    )
    at_start = ReactionReported(grade=1, signs=OTHER, onset_at=start, actor="a")
    assert decide(scenario.state, at_start, scenario.now).refusal is None
    at_report = ReactionReported(grade=1, signs=OTHER, onset_at=scenario.now, actor="a")
    assert decide(scenario.state, at_report, scenario.now).refusal is None


def test_I5_I11_a_reaction_after_a_stop_inside_the_window_is_a_reassessment_of_it() -> None:
    scenario = paused(grade=3)
    scenario.send(Stop(reason="end", actor="dr"))
    scenario.advance(minutes(10))
    assert scenario.phase() is InfusionPhase.STOPPED
    late = ReactionReported(grade=2, signs=OTHER, onset_at=scenario.now - minutes(5), actor="a")
    decision = decide(scenario.state, late, scenario.now)
    assert decision.state.reaction is not None
    assert (decision.state.reaction.grade, decision.state.reaction.max_grade) == (2, 3)
    assert [(a.type.value, a.rule.value) for a in decision.audit] == [("reaction", "I5")]
    future = ReactionReported(grade=2, signs=OTHER, onset_at=scenario.now + minutes(1), actor="a")
    invalid(decide(scenario.state, future, scenario.now), "the onset is after the report")


def test_I3_I11_a_late_grade_2_laryngeal_edema_withdraws_the_course_in_words() -> None:
    scenario = completed_second()
    event = ReactionReported(grade=2, signs=frozenset({Sign.LARYNGEAL_EDEMA}), actor="a")
    decision = decide(scenario.state, event, scenario.now)
    reason = "grade 2 laryngeal edema (after the end, I11)"
    assert decision.state.course.withdrawn
    assert decision.state.course.withdrawn_reason == f"I3: {reason}"
    assert facts(decision.audit)[-1] == (
        "course_withdrawn",
        "I8",
        {"cause": "I3", "reason": reason},
    )
    assert decision.state.phase is InfusionPhase.COMPLETED
    grade_1 = ReactionReported(grade=1, signs=frozenset({Sign.LARYNGEAL_EDEMA}), actor="a")
    assert not decide(scenario.state, grade_1, scenario.now).state.course.withdrawn


def test_I6_I11_a_late_third_severe_reaction_withdraws_the_course_in_words() -> None:
    severe = ReactionRecord(
        grade=3, max_grade=3, signs=OTHER, rate_ml_h=50.0, running_min=10.0, infusion_number=1
    )
    course = CourseState(
        infusions=(
            InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0, reactions=(severe,)),
            InfusionRecord(
                infusion_number=2,
                highest_rate_ml_h=200.0,
                reactions=(severe.model_copy(update={"infusion_number": 2}),),
            ),
        )
    )
    scenario = started(RowKind.SECOND, course=course, infusion_number=3)
    scenario.run_to_end()
    decision = decide(
        scenario.state, ReactionReported(grade=3, signs=OTHER, actor="a"), scenario.now
    )
    reason = "occurrence 3 of grade >= 3"
    assert decision.state.course.withdrawn_reason == f"I6: {reason}"
    assert facts(decision.audit)[-1] == (
        "course_withdrawn",
        "I8",
        {"cause": "I6", "reason": reason},
    )
    # the course is withdrawn once: a later report withdraws nothing more
    again = decide(decision.state, ReactionReported(grade=1, signs=OTHER, actor="a"), scenario.now)
    assert [a.type.value for a in again.audit] == ["reaction"]


def test_I11_a_late_reaction_is_reassessed_and_the_record_keeps_its_highest_grade() -> None:
    scenario = completed_second()
    refused(
        decide(scenario.state, Reassessed(grade=2, signs=OTHER, actor="a"), scenario.now),
        "I11",
        "no reaction reported after completion to reassess",
    )
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="a"))
    bronchospasm = frozenset({Sign.BRONCHOSPASM})
    decision = decide(
        scenario.state, Reassessed(grade=1, signs=bronchospasm, actor="b"), scenario.now
    )
    record = decision.state.reactions[-1]
    assert (record.grade, record.max_grade) == (1, 2)
    assert record.signs == OTHER | bronchospasm
    assert len(decision.state.reactions) == 1
    assert facts(decision.audit) == [
        ("reassessed", "I11", {"actor": "b", "reaction": record.model_dump(mode="json")})
    ]


def test_I4_I2_resolved_is_audited_under_I4_only_for_a_bronchospasm_hold() -> None:
    scenario = paused(grade=1)
    decision = decide(scenario.state, Resolved(actor="ann"), scenario.now)
    assert facts(decision.audit) == [("resolved", "I2", {"actor": "ann"})]
    refused(
        decide(decision.state, Resolved(actor="ann"), scenario.now),
        "I4",
        "the reaction is already marked resolved",
    )
    started_ = started(RowKind.FIRST)
    refused(decide(started_.state, Resolved(actor="a"), started_.now), "I4", "no reaction is open")


def test_I11_a_reassessment_changes_only_the_last_late_reaction() -> None:
    scenario = completed_second()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="a"))
    scenario.send(ReactionReported(grade=2, signs=OTHER, actor="a"))
    decision = decide(scenario.state, Reassessed(grade=3, signs=OTHER, actor="b"), scenario.now)
    assert [(r.grade, r.max_grade) for r in decision.state.reactions] == [(1, 1), (3, 3)]


def test_I7_I11_under_the_label_a_late_grade_4_withdraws_in_words_and_a_grade_2_does_not() -> None:
    scenario = started(RowKind.SECOND, protocol=LABEL)
    scenario.run_to_end()
    scenario.advance(timedelta(hours=1))
    decision = decide(
        scenario.state, ReactionReported(grade=4, signs=OTHER, actor="a"), scenario.now
    )
    reason = "grade 4: permanent discontinuation (protocol policy)"
    assert decision.state.course.withdrawn_reason == f"I7: {reason}"
    assert facts(decision.audit)[-1] == (
        "course_withdrawn",
        "I8",
        {"cause": "I7", "reason": reason},
    )
    assert decision.audit[-1].at == scenario.now
    grade_2 = decide(
        scenario.state, ReactionReported(grade=2, signs=OTHER, actor="a"), scenario.now
    )
    assert not grade_2.state.course.withdrawn


def test_I9_a_pump_read_within_half_the_resolution_of_the_step_is_at_the_step() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    state = scenario.state.updated({"rate_ml_h": 0.1, "pump_rate_ml_h": 0.05})
    refused(
        decide(state, RESUME, scenario.now), "I9", "the pump is already running at the current step"
    )


def test_I2_a_reaction_while_the_pump_runs_slower_below_1_ml_h_halves_its_rate() -> None:
    """Step and confirmed rate 0.7 ml/h, the pump read at 0.5 (slower, A2): the resume halves
    the rate it ran at, 0.5, to 0.2 (the safer reading, I2)."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    state = scenario.state.updated(
        {"rate_ml_h": 0.7, "confirmed_rate_ml_h": 0.7, "pump_rate_ml_h": 0.5}
    )
    state = state.updated(
        {"rate_history": (*state.rate_history, RatePoint(at=scenario.now, rate_ml_h=0.7))}
    )
    reported = decide(state, ReactionReported(grade=1, signs=OTHER, actor="a"), scenario.now)
    assert reported.state.reaction is not None
    assert reported.state.reaction.rate_before_ml_h == 0.5
    (stop,) = reported.pump_commands
    confirmed = CommandConfirmed(
        command_id=stop.id, running=False, rate_ml_h=0.0, volume_infused_ml=scenario.pump.volume
    )
    stopped = decide(reported.state, confirmed, scenario.now)
    resumed = decide(stopped.state, RESUME, scenario.now)
    assert [c.rate_ml_h for c in resumed.commands if isinstance(c, SetRate)] == [0.2]
