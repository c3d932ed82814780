"""The ladder pinned fact by fact: start (L3, L4, L8, L9, I8), steps (L1, L2, L6), hold (L7)
(issue 22).

Each test feeds one start, one step's deadline or one hold to `decide` and checks the commands
in order with their ids, the state they leave, the audit trail with its facts, and the words
and rule of every refusal (docs/clinical-rules.md, L1-L9, I8).
"""

from __future__ import annotations

from datetime import datetime

import pytest
from machine_scenario import OTHER, T0, facts, minutes, planned, started

from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord
from pumpctl.core.machine import (
    ClearVolume,
    Decision,
    Hold,
    InfusionPhase,
    InfusionState,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpConfirmedStopped,
    PumpPowerReset,
    Release,
    ResumeRequested,
    Run,
    SetRate,
    SetVtbi,
    Start,
    TimePassed,
    decide,
)
from pumpctl.core.protocol import RowKind


def refused(decision: Decision, rule: str, reason: str) -> None:
    refusal = decision.refusal
    assert refusal is not None
    assert (refusal.kind, refusal.rule, refusal.reason) == ("rule", rule, reason)
    assert decision.commands == ()


# --- L3: the start ----------------------------------------------------------------------------


def test_L3_a_start_clears_the_counter_programs_the_bag_then_the_rate_then_runs() -> None:
    state = planned(RowKind.FIRST)
    course = state.course
    now = T0 + minutes(5)
    decision = decide(state, Start(actor="ann", course=course), now)
    clear, vtbi, rate, run = decision.commands
    assert (clear, vtbi, run) == (ClearVolume(1), SetVtbi(2, 1000.0), Run(4))
    assert isinstance(rate, SetRate)
    assert (rate.id, rate.rate_ml_h) == (3, 50.0)
    bound = rate.decision.bound_by
    assert (bound.rule, bound.value_ml_h, bound.reason) == (
        "L1",
        50.0,
        "initial rate of the row 50",
    )
    s = decision.state
    assert (s.phase, s.started_at, s.period_started_at) == (InfusionPhase.STARTING, now, now)
    assert (s.rate_ml_h, s.at_rate_min, s.next_command_id) == (50.0, 0.0, 5)
    assert [(c.id, c.op.value, c.rate_ml_h) for c in s.outstanding] == [
        (1, "clear_volume", None),
        (2, "set_vtbi", None),
        (3, "set_rate", 50.0),
        (4, "start", 50.0),
    ]
    assert (s.vtbi_programmed_ml, s.volume_read_ml) == (None, None)
    assert facts(decision.audit) == [
        (
            "started",
            "L3",
            {
                "actor": "ann",
                "vtbi_ml": 1000.0,
                "rate_ml_h": 50.0,
                "decision": rate.decision.to_json(),
            },
        )
    ]
    assert decision.audit[0].at == now


def test_L3_a_start_after_the_start_names_the_phase() -> None:
    scenario = started(RowKind.FIRST)
    event = Start(actor="a", course=scenario.state.course)
    refused(decide(scenario.state, event, scenario.now), "L3", "the infusion is already running")


def test_I8_a_start_on_a_withdrawn_course_is_refused_in_words() -> None:
    state = planned(RowKind.FIRST)
    course = CourseState(withdrawn=True, withdrawn_reason="I6: occurrence 3")
    refused(
        decide(state, Start(actor="a", course=course), T0),
        "I8",
        "the patient's course is withdrawn",
    )


def test_L9_a_start_on_an_expired_bag_is_refused_in_words() -> None:
    state = planned(RowKind.FIRST).updated({"bag_expired": True})
    refused(
        decide(state, Start(actor="a", course=state.course), T0),
        "L9",
        "the bag is past its stability: prepare a new bag",
    )


def test_L8_a_start_with_an_earlier_infusion_missing_says_what_to_enter() -> None:
    state = planned(RowKind.SECOND)
    refused(
        decide(state, Start(actor="a", course=CourseState()), T0),
        "L8",
        "L4: no record of infusion 1 (L8: enter it, or plan with --assume-no-reactions)",
    )


def test_L4_a_start_whose_course_now_gives_another_row_says_which() -> None:
    """Planned as a second infusion on a clean first; the first now shows a reaction (L4):
    the first-infusion row applies, and the start is refused naming it."""
    state = planned(RowKind.SECOND)
    reaction = ReactionRecord(
        grade=1, max_grade=1, signs=OTHER, rate_ml_h=50.0, running_min=10.0, infusion_number=1
    )
    course = CourseState(
        infusions=(
            InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0, reactions=(reaction,)),
        )
    )
    decision = decide(state, Start(actor="a", course=course), T0)
    assert decision.refusal is not None
    assert decision.refusal.rule == "L4"
    assert decision.refusal.reason == (
        "the course's history now gives the first-infusion row "
        "(1000 ml at 50 ml/h): plan the infusion again"
    )


# --- L1, L2, L6: the steps --------------------------------------------------------------------


def test_L1_a_step_is_audited_with_from_to_and_the_running_time() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(59))
    first = scenario.state.next_command_id
    at = scenario.now + minutes(1)
    decision = decide(scenario.state, TimePassed(), at)
    (step,) = decision.commands
    assert isinstance(step, SetRate)
    assert (step.id, step.rate_ml_h) == (first, 100.0)
    assert step.decision.bound_by.reason == "one increment of 50 ml/h above 50 ml/h"
    assert not decision.state.ladder_settled
    assert facts(decision.audit) == [
        (
            "rate_step",
            "L1",
            {
                "from_ml_h": 50.0,
                "to_ml_h": 100.0,
                "running_min": 60.0,
                "decision": step.decision.to_json(),
            },
        )
    ]
    assert decision.audit[0].at == at


def test_L6_the_step_L6_bounds_is_audited_under_L6_and_settles_the_ladder() -> None:
    scenario = started(RowKind.SUBSEQUENT)
    scenario.run_to_end()
    steps = [
        (k, r, {n: v for n, v in d.items() if n != "decision"})
        for k, r, d in facts(scenario.audit)
        if k == "rate_step"
    ]
    assert steps == [
        ("rate_step", "L1", {"from_ml_h": 100.0, "to_ml_h": 150.0, "running_min": 60.0}),
        ("rate_step", "L6", {"from_ml_h": 150.0, "to_ml_h": 166.6, "running_min": 120.0}),
    ]


# --- L7: hold and release ---------------------------------------------------------------------


def test_L7_hold_and_release_are_audited_with_the_person_and_the_rate() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    held = decide(scenario.state, Hold(actor="dr"), scenario.now)
    assert held.state.held
    assert held.state.at_rate_min == pytest.approx(40.0)  # held: the time at rate is kept
    assert facts(held.audit) == [("hold", "L7", {"actor": "dr", "rate_ml_h": 50.0})]
    refused(decide(held.state, Hold(actor="dr"), scenario.now), "L7", "escalation is already held")
    released = decide(held.state, Release(actor="ann"), scenario.now)
    assert not released.state.held
    assert released.state.at_rate_min == 0.0  # a full interval from the release
    assert facts(released.audit) == [("release", "L7", {"actor": "ann", "rate_ml_h": 50.0})]
    refused(
        decide(scenario.state, Release(actor="ann"), scenario.now), "L7", "escalation is not held"
    )


# --- L3, A1: a pump that lost its program ---------------------------------------------------


def test_L3_A1_a_resume_after_a_power_reset_programs_the_vtbi_once_first() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.auto_confirm = False
    scenario.pump.running = False
    scenario.send(PumpPowerReset(volume_infused_ml=0.0))
    left = scenario.state.bag_volume_ml
    first = scenario.state.next_command_id
    decision = decide(scenario.state, ResumeRequested(actor="ann"), scenario.now)
    vtbi, rate, run = decision.commands
    assert vtbi == SetVtbi(first, left)
    assert isinstance(rate, SetRate)
    assert (rate.id, rate.rate_ml_h, run) == (first + 1, 50.0, Run(first + 2))
    # the time already run at the step is kept: same rate after an alarm (L1)
    assert decision.state.at_rate_min == pytest.approx(30.0)
    # a VTBI already on its way is not sent twice
    again = scenario.state.updated(
        {"outstanding": decision.state.outstanding[:1], "next_command_id": first + 1}
    )
    twice = decide(again, ResumeRequested(actor="ann"), scenario.now)
    assert [type(c) for c in twice.commands] == [SetRate, Run]


def test_A1_L6_a_resume_after_a_pump_alarm_on_a_row_with_a_minimum_duration_keeps_the_step() -> (
    None
):
    """A subsequent infusion (L6: 210 min at least) at 150 ml/h, stopped by an occlusion at
    70 min: the resume runs at the same step, which L6 does not bound there."""
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(70))
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    decision = decide(scenario.state, ResumeRequested(actor="ann"), scenario.now)
    rate, run = decision.commands
    assert isinstance(rate, SetRate)
    assert rate.rate_ml_h == 150.0
    assert [limit.rule for limit in rate.decision.considered] == ["A1", "L2", "L6"]
    assert isinstance(run, Run)


def test_L3_L8_the_start_keeps_the_course_read_at_the_start() -> None:
    state = planned(RowKind.SECOND)
    course = CourseState(
        infusions=(
            InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0, given_elsewhere=True),
        )
    )
    assert course != state.course
    decision = decide(state, Start(actor="a", course=course), T0)
    assert decision.refusal is None
    assert decision.state.course == course


def test_L3_a_counter_read_before_the_start_is_not_this_infusion_s() -> None:
    state = planned(RowKind.FIRST)
    reset = decide(state, PumpPowerReset(volume_infused_ml=5.0), T0)
    assert reset.state.volume_read_ml == 5.0
    decision = decide(reset.state, Start(actor="a", course=state.course), T0)
    assert decision.state.volume_read_ml is None


def test_L6_the_start_of_a_row_with_a_minimum_duration_considers_it() -> None:
    state = planned(RowKind.SUBSEQUENT)
    decision = decide(state, Start(actor="a", course=state.course), T0)
    (rate,) = [c for c in decision.commands if isinstance(c, SetRate)]
    assert [limit.rule for limit in rate.decision.considered] == ["L1", "L2", "L6"]


def at_59_with_left(left_ml: float) -> tuple[InfusionState, datetime]:
    """A subsequent infusion (100 ml/h) 59 min in, `left_ml` left when the step falls due."""
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(59))
    s = scenario.state
    given_at_60 = s.bag_infused_ml + 100.0 / 60
    return s.updated({"delivered_before_bag_ml": s.bag_ml - given_at_60 - left_ml}), scenario.now


def test_L6_a_step_that_leaves_no_rate_settles_the_ladder_audited_with_what_is_left() -> None:
    state, now = at_59_with_left(0.01)
    at = now + minutes(1)
    decision = decide(state, TimePassed(), at)
    assert decision.commands == ()
    assert decision.state.ladder_settled
    assert decision.state.at_rate_min == 0.0
    ((kind, rule, data),) = facts(decision.audit)
    assert (kind, rule, list(data)) == ("ladder_settled", "L6", ["remaining_ml"])
    assert data["remaining_ml"] == pytest.approx(0.01, abs=1e-6)
    assert decision.audit[0].at == at


def test_L6_a_step_L6_holds_at_the_current_rate_is_audited_with_its_limits() -> None:
    state, now = at_59_with_left(250.0)
    at = now + minutes(1)
    decision = decide(state, TimePassed(), at)
    assert decision.commands == ()
    assert decision.state.ladder_settled
    assert decision.state.at_rate_min == 0.0
    ((kind, rule, data),) = facts(decision.audit)
    assert (kind, rule, list(data)) == ("ladder_settled", "L6", ["decision"])
    assert data["decision"]["rate_ml_h"] == 100.0  # type: ignore[index]
    assert decision.audit[0].at == at


def test_L6_A1_a_resume_with_no_rate_left_to_run_at_is_refused_under_L6() -> None:
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(30))
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    s = scenario.state
    state = s.updated({"delivered_before_bag_ml": s.bag_ml - s.bag_infused_ml - 0.01})
    decision = decide(state, ResumeRequested(actor="ann"), scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.rule == "L6"
    assert decision.refusal.reason.startswith("no rate is left to run at (")
    assert decision.refusal.reason.endswith(")")


def test_I8_D1_a_state_whose_day_its_protocol_does_not_split_is_refused_at_the_start() -> None:
    """A split-dose day on a protocol that gives infusion 1 in one day: the course cannot be
    planned that way, and the start says why (the planner's words, under I8)."""
    state = planned(RowKind.FIRST).updated({"day": 2})
    refused(
        decide(state, Start(actor="a", course=state.course), T0),
        "I8",
        "day: only infusion 1 of a split-first-dose protocol is given on two days",
    )
