"""I1-I8, I10: a reaction report and its reassessments pinned fact by fact (issue 22).

Each test feeds a concrete report to `decide` and checks what the audit trail records of it
(the reaction as the course will record it, the I4 hold and the I5 window with their start,
the phase it leads to, a withdrawal with its cause) and what a refusal says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from machine_scenario import LABEL, OTHER, T0, Scenario, facts, minutes, planned, started

from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.machine import (
    Decision,
    InfusionPhase,
    MachineAlarm,
    RaiseAlarm,
    ReactionReported,
    Reassessed,
    Resolved,
    ResumeRequested,
    SetRate,
    Start,
    Stop,
    StopPump,
    TimePassed,
    decide,
)
from pumpctl.core.protocol import RowKind

BRONCHOSPASM = frozenset({Sign.BRONCHOSPASM})
EDEMA = frozenset({Sign.LARYNGEAL_EDEMA})


def at_100(after: float = 70.0) -> Scenario:
    """The first infusion at 100 ml/h (the step at 60 min), `after` minutes in."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(after))
    return scenario


def trail(decision: Decision) -> list[tuple[str, str, dict[str, object]]]:
    """The audit trail, a reaction's signs as a set (their order is no fact)."""
    out = []
    for kind, rule, data in facts(decision.audit):
        if isinstance(data.get("reaction"), dict):
            reaction = dict(data["reaction"])  # type: ignore[call-overload]
            reaction["signs"] = set(reaction["signs"])
            data = {**data, "reaction": reaction}  # noqa: PLW2901
        out.append((kind, rule, data))
    return out


def record(
    grade: int,
    max_grade: int,
    signs: set[str],
    running_min: float,
    onset: datetime,
    *,
    rate: float = 100.0,
) -> dict[str, object]:
    return {
        "grade": grade,
        "max_grade": max_grade,
        "signs": signs,
        "rate_ml_h": rate,
        "running_min": running_min,
        "infusion_number": 1,
        "after_completion": False,
        "onset_at": onset.isoformat().replace("+00:00", "Z"),
    }


def test_I1_a_report_before_the_start_is_refused_with_nothing_to_stop() -> None:
    state = planned()
    decision = decide(
        state, ReactionReported(grade=1, signs=OTHER, actor="a"), state.bag_prepared_at
    )
    assert decision.refusal is not None
    assert (decision.refusal.rule, decision.refusal.reason) == (
        "I1",
        "the infusion has not started: no pump to stop",
    )


def test_I1_I2_a_grade_1_report_stops_first_pauses_and_is_audited_as_recorded() -> None:
    scenario = at_100()
    first = scenario.state.next_command_id
    event = ReactionReported(grade=1, signs=OTHER, actor="ann")
    decision = decide(scenario.state, event, scenario.now)
    assert decision.commands == (StopPump(first),)
    assert decision.state.phase is InfusionPhase.PAUSED
    assert not decision.state.unexplained_stop
    assert trail(decision) == [
        (
            "reaction",
            "I1",
            {"actor": "ann", "reaction": record(1, 1, {"other"}, 70.0, scenario.now)},
        ),
        ("paused", "I2", {"grade": 1}),
    ]


def test_I1_I4_I5_a_grade_3_bronchospasm_opens_the_hold_and_the_window_at_its_onset() -> None:
    scenario = at_100()
    onset = scenario.now - minutes(5)
    event = ReactionReported(grade=3, signs=BRONCHOSPASM, onset_at=onset, actor="ann")
    decision = decide(scenario.state, event, scenario.now)
    reaction = decision.state.reaction
    assert reaction is not None
    assert (reaction.bronchospasm_seen_at, reaction.bronchospasm_onset_at) == (onset, onset)
    assert reaction.observation_started_at == onset
    assert not reaction.resolved
    assert decision.state.phase is InfusionPhase.STOPPED_OBSERVATION
    assert trail(decision) == [
        (
            "reaction",
            "I1",
            {"actor": "ann", "reaction": record(3, 3, {"bronchospasm"}, 65.0, onset)},
        ),
        ("bronchospasm_hold", "I4", {"onset_at": onset.isoformat()}),
        ("observation_started", "I5", {"window_start": onset.isoformat()}),
        ("stopped_observation", "I5", {"grade": 3}),
    ]
    assert {a.at for a in decision.audit} == {scenario.now}


def test_I5_a_reassessment_keeps_the_highest_grade_and_every_sign() -> None:
    scenario = at_100()
    onset = scenario.now - minutes(5)
    scenario.send(ReactionReported(grade=3, signs=BRONCHOSPASM, onset_at=onset, actor="ann"))
    scenario.advance(minutes(10))
    decision = decide(scenario.state, Reassessed(grade=2, signs=OTHER, actor="bob"), scenario.now)
    assert trail(decision) == [
        (
            "reassessed",
            "I5",
            {"actor": "bob", "reaction": record(2, 3, {"bronchospasm", "other"}, 65.0, onset)},
        )
    ]
    assert decision.state.phase is InfusionPhase.STOPPED_OBSERVATION  # the window runs on
    refusal = decide(
        started(RowKind.FIRST).state, Reassessed(grade=1, signs=OTHER, actor="a"), scenario.now
    ).refusal
    assert refusal is not None
    assert (refusal.rule, refusal.reason) == (
        "I5",
        "no reaction is open: report a new reaction instead",
    )


def test_I4_a_bronchospasm_named_first_at_grade_1_holds_from_that_onset_when_it_reaches_2() -> None:
    scenario = at_100()
    seen = scenario.now - minutes(3)
    scenario.send(ReactionReported(grade=1, signs=BRONCHOSPASM, onset_at=seen, actor="ann"))
    assert scenario.state.reaction is not None
    assert scenario.state.reaction.bronchospasm_seen_at == seen
    assert scenario.state.reaction.bronchospasm_onset_at is None
    scenario.advance(minutes(5))
    decision = decide(scenario.state, Reassessed(grade=2, signs=OTHER, actor="b"), scenario.now)
    reaction = decision.state.reaction
    assert reaction is not None
    assert reaction.bronchospasm_onset_at == seen
    assert ("bronchospasm_hold", "I4", {"onset_at": seen.isoformat()}) in trail(decision)


def test_I4_a_bronchospasm_named_by_a_reassessment_is_seen_at_its_time() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="ann"))
    scenario.advance(minutes(5))
    decision = decide(
        scenario.state, Reassessed(grade=1, signs=BRONCHOSPASM, actor="b"), scenario.now
    )
    reaction = decision.state.reaction
    assert reaction is not None
    assert reaction.bronchospasm_seen_at == scenario.now
    assert reaction.signs == {Sign.OTHER, Sign.BRONCHOSPASM}


def test_I4_a_resolution_stated_before_the_bronchospasm_reached_grade_2_does_not_lift_it() -> None:

    scenario = at_100()
    scenario.send(ReactionReported(grade=1, signs=BRONCHOSPASM, actor="ann"))
    scenario.send(Resolved(actor="ann"))
    assert scenario.state.reaction is not None
    assert scenario.state.reaction.resolved
    decision = decide(scenario.state, Reassessed(grade=2, signs=OTHER, actor="b"), scenario.now)
    reaction = decision.state.reaction
    assert reaction is not None
    assert not reaction.resolved
    assert reaction.hold_open
    # once the hold is open, a report naming bronchospasm again undoes a resolution too
    lifted = decide(decision.state, Resolved(actor="ann"), scenario.now)
    again = decide(lifted.state, Reassessed(grade=2, signs=BRONCHOSPASM, actor="b"), scenario.now)
    assert again.state.reaction is not None
    assert not again.state.reaction.resolved
    other = decide(lifted.state, Reassessed(grade=2, signs=OTHER, actor="b"), scenario.now)
    assert other.state.reaction is not None
    assert other.state.reaction.resolved


@pytest.mark.parametrize(
    ("grade", "signs", "rule", "reason"),
    [
        (2, EDEMA, "I3", "grade 2 laryngeal edema"),
        (4, OTHER, "I7", "grade 4: permanent discontinuation (protocol policy)"),
    ],
)
def test_I3_I7_I8_a_withdrawal_is_audited_with_its_cause_and_marks_the_course(
    grade: int, signs: frozenset[Sign], rule: str, reason: str
) -> None:

    scenario = Scenario(planned(RowKind.FIRST, protocol=LABEL))

    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.advance(minutes(70))
    first = scenario.state.next_command_id
    decision = decide(
        scenario.state, ReactionReported(grade=grade, signs=signs, actor="a"), scenario.now
    )
    assert decision.commands == (StopPump(first),)
    assert decision.state.phase is InfusionPhase.WITHDRAWN
    assert decision.state.course.withdrawn
    assert decision.state.course.withdrawn_reason == f"{rule}: {reason}"
    assert decision.state.reaction is None
    assert [r.grade for r in decision.state.reactions] == [grade]
    assert trail(decision)[1:] == [
        ("withdrawn", rule, {"reason": reason}),
        ("course_withdrawn", "I8", {"cause": rule, "reason": reason}),
    ]


def test_I3_grade_1_laryngeal_edema_pauses_without_withdrawing() -> None:
    scenario = at_100()
    decision = decide(
        scenario.state, ReactionReported(grade=1, signs=EDEMA, actor="a"), scenario.now
    )
    assert decision.state.phase is InfusionPhase.PAUSED
    assert not decision.state.course.withdrawn


def test_I10_an_onset_at_the_start_is_taken_and_one_before_it_is_not() -> None:
    scenario = at_100()
    start = scenario.state.started_at
    assert start is not None
    at_start = ReactionReported(grade=1, signs=OTHER, onset_at=start, actor="a")
    decision = decide(scenario.state, at_start, scenario.now)
    assert decision.refusal is None
    assert decision.state.reaction is not None
    assert decision.state.reaction.running_min == 0.0
    before = ReactionReported(grade=1, signs=OTHER, onset_at=start - minutes(1), actor="a")
    refusal = decide(scenario.state, before, scenario.now).refusal
    assert refusal is not None
    assert (refusal.field, refusal.rule, refusal.reason) == (
        "onset_at",
        "I10",
        f"the onset is before the current running period (from {start.isoformat()})",
    )


def test_I10_a_later_report_with_an_earlier_onset_moves_the_record_only_back() -> None:
    scenario = at_100(90.0)
    first_onset = scenario.now - minutes(5)
    scenario.send(ReactionReported(grade=1, signs=OTHER, onset_at=first_onset, actor="a"))
    earlier = scenario.now - minutes(40)  # at 50 min: still at 50 ml/h
    decision = decide(
        scenario.state,
        ReactionReported(grade=1, signs=OTHER, onset_at=earlier, actor="a"),
        scenario.now,
    )
    reaction = decision.state.reaction
    assert reaction is not None
    assert (reaction.onset_at, reaction.running_min, reaction.rate_ml_h) == (earlier, 50.0, 50.0)
    later = decide(
        scenario.state,
        ReactionReported(grade=1, signs=OTHER, onset_at=scenario.now - minutes(1), actor="a"),
        scenario.now,
    )
    assert later.state.reaction is not None
    assert later.state.reaction.onset_at == first_onset
    assert later.state.reaction.running_min == 85.0


def test_I10_a_later_report_with_the_same_onset_leaves_the_record_as_it_was() -> None:
    """Paused 10 min (no running time): a report naming the same onset again moves nothing
    (its running time at onset stays 65 min)."""
    scenario = at_100()
    onset = scenario.now - minutes(5)
    scenario.send(ReactionReported(grade=1, signs=OTHER, onset_at=onset, actor="a"))
    scenario.advance(minutes(10))
    decision = decide(
        scenario.state,
        ReactionReported(grade=1, signs=OTHER, onset_at=onset, actor="a"),
        scenario.now,
    )
    reaction = decision.state.reaction
    assert reaction is not None
    assert (reaction.onset_at, reaction.running_min) == (onset, 65.0)


def test_I4_a_reassessment_naming_no_bronchospasm_sees_none() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="a"))
    decision = decide(scenario.state, Reassessed(grade=2, signs=OTHER, actor="b"), scenario.now)
    reaction = decision.state.reaction
    assert reaction is not None
    assert reaction.bronchospasm_seen_at is None
    assert reaction.bronchospasm_onset_at is None


def test_I4_resolved_inside_a_hold_is_audited_under_I4() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=2, signs=BRONCHOSPASM, actor="a"))
    decision = decide(scenario.state, Resolved(actor="ann"), scenario.now)
    assert facts(decision.audit) == [("resolved", "I4", {"actor": "ann"})]
    assert decision.state.reaction is not None  # still paused: a nurse resumes (I9)


def test_I4_resolved_after_a_stop_for_good_closes_the_reaction_into_the_record() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=2, signs=BRONCHOSPASM, actor="a"))
    scenario.send(Stop(reason="end", actor="dr"))
    assert scenario.state.reaction is not None
    decision = decide(scenario.state, Resolved(actor="ann"), scenario.now)
    assert decision.state.reaction is None
    assert [(r.grade, r.signs) for r in decision.state.reactions] == [(2, BRONCHOSPASM)]
    # inside an I5 window a resolution after the stop keeps the reaction open
    window = at_100()
    window.send(ReactionReported(grade=3, signs=BRONCHOSPASM, actor="a"))
    window.send(Stop(reason="end", actor="dr"))
    kept = decide(window.state, Resolved(actor="ann"), window.now)
    assert kept.state.reaction is not None


def test_I5_I11_a_reassessment_after_a_stop_inside_the_window_is_audited_with_the_person() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="a"))
    scenario.send(Stop(reason="end", actor="dr"))
    scenario.advance(minutes(10))
    decision = decide(scenario.state, Reassessed(grade=2, signs=OTHER, actor="bob"), scenario.now)
    onset = scenario.now - minutes(10)
    assert trail(decision) == [
        (
            "reassessed",
            "I5",
            {"actor": "bob", "reaction": record(2, 3, {"other"}, 70.0, onset)},
        )
    ]


def test_I10_I11_a_report_after_a_stop_inside_the_window_moves_the_onset_back() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="a"))
    scenario.send(Stop(reason="end", actor="dr"))
    scenario.advance(minutes(10))
    earlier = scenario.now - minutes(15)  # 5 min before the first report
    event = ReactionReported(grade=2, signs=OTHER, onset_at=earlier, actor="bob")
    decision = decide(scenario.state, event, scenario.now)
    # running time at that onset: 70 min now less the 15 min since (a lower bound, I10)
    assert trail(decision) == [
        (
            "reaction",
            "I5",
            {"actor": "bob", "reaction": record(2, 3, {"other"}, 55.0, earlier)},
        )
    ]
    assert decision.audit[0].at == scenario.now


def test_I3_I8_a_withdrawal_while_paused_sends_the_stop_again() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=1, signs=EDEMA, actor="a"))
    assert not scenario.state.stop_outstanding
    first = scenario.state.next_command_id
    decision = decide(scenario.state, Reassessed(grade=2, signs=OTHER, actor="b"), scenario.now)
    assert decision.state.phase is InfusionPhase.WITHDRAWN
    assert decision.commands == (StopPump(first),)


def test_I5_I1_a_withdrawal_at_the_window_s_end_stops_first_in_a_late_decision() -> None:
    """The bag warning (L9) and the window's end (I5, still grade 3) both fell due before a
    late time driver's call: the withdrawal's stop is the first command of that decision."""
    prepared = T0 - timedelta(hours=12)  # the warning at 2 h, the expiry at 3 h
    scenario = Scenario(planned(RowKind.FIRST, prepared_at=prepared))
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="a"))
    late = scenario.now + timedelta(hours=2, minutes=1)  # the window ended at 2 h 30
    decision = decide(scenario.state, TimePassed(), late)
    assert decision.state.phase is InfusionPhase.WITHDRAWN
    assert isinstance(decision.commands[0], StopPump)
    assert [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)] == [
        MachineAlarm.BAG_EXPIRING
    ]


def test_I5_a_second_report_in_one_stop_is_a_reassessment_audited_as_a_report() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="ann"))
    scenario.advance(minutes(5))
    decision = decide(
        scenario.state, ReactionReported(grade=2, signs=OTHER, actor="bob"), scenario.now
    )
    onset = scenario.now - minutes(5)
    assert trail(decision) == [
        ("reaction", "I5", {"actor": "bob", "reaction": record(2, 2, {"other"}, 70.0, onset)})
    ]
    assert decision.audit[0].at == scenario.now


def test_I1_a_report_s_stop_goes_ahead_of_an_alarm_due_at_that_instant() -> None:
    prepared = T0 - timedelta(hours=14) + minutes(1)  # the bag warning one minute in
    scenario = Scenario(planned(RowKind.FIRST, prepared_at=prepared))
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.now += minutes(1)
    decision = decide(
        scenario.state, ReactionReported(grade=1, signs=OTHER, actor="a"), scenario.now
    )
    assert isinstance(decision.commands[0], StopPump)
    assert [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)] == [
        MachineAlarm.BAG_EXPIRING
    ]


def test_I6_I8_the_third_severe_occurrence_withdraws_in_words() -> None:

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
    scenario = started(RowKind.SUBSEQUENT, course=course, infusion_number=3)
    scenario.advance(minutes(30))
    decision = decide(
        scenario.state, ReactionReported(grade=3, signs=OTHER, actor="a"), scenario.now
    )
    reason = "occurrence 3 of grade >= 3"
    assert ("withdrawn", "I6", {"reason": reason}) in trail(decision)
    assert {a.at for a in decision.audit} == {scenario.now}


def test_I5_I8_grade_3_again_after_the_window_ended_withdraws_in_words() -> None:
    scenario = at_100()
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="a"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="a"))
    scenario.advance(timedelta(hours=2))
    decision = decide(scenario.state, Reassessed(grade=3, signs=OTHER, actor="a"), scenario.now)
    reason = "grade 3 after the 2 h window ended"
    assert ("withdrawn", "I5", {"reason": reason}) in trail(decision)
    assert decision.state.course.withdrawn_reason == f"I5: {reason}"
    assert {a.at for a in decision.audit} == {scenario.now}


def test_I2_L6_a_resume_is_bounded_by_the_minimum_duration_too() -> None:
    """A subsequent infusion (210 min at least) at 150 ml/h, 70 min in, 20 ml left: half the
    rate (75) would finish too soon; L6 caps the resume at 20 ml over the 140 min left."""
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(70))
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="a"))
    state = scenario.state.updated({"bag_infused_ml": scenario.state.bag_volume_ml - 20.0})

    decision = decide(state, ResumeRequested(actor="a"), scenario.now)
    (rate,) = [c for c in decision.commands if isinstance(c, SetRate)]
    assert rate.decision.bound_by.rule == "L6"
    assert rate.rate_ml_h == pytest.approx(20.0 / (140 / 60), abs=0.1)
    assert rate.rate_ml_h < 75.0
