"""The rate ladder in the infusion machine: L1, L2, L3, L6, L7, L9 and the reference durations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from machine_scenario import OTHER, REVIEW, T0, Scenario, minutes, planned, started
from pydantic import ValidationError

from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord
from pumpctl.core.machine import (
    BagReplaced,
    ClearVolume,
    DeadlineKind,
    Hold,
    InfusionPhase,
    MachineAlarm,
    PumpCompleted,
    RaiseAlarm,
    Release,
    Run,
    SetRate,
    SetVtbi,
    Start,
    StopPump,
    TimePassed,
    decide,
    initial_state,
    next_deadline,
)
from pumpctl.core.protocol import RowKind


def set_rates(scenario: Scenario) -> list[float]:
    return [c.rate_ml_h for c in scenario.commands if isinstance(c, SetRate)]


# --- reference durations (clinical-rules.md, "Reference durations") -----------------------


def test_L1_L2_L3_first_infusion_takes_390_min_with_the_table_3_profile() -> None:
    """First infusion: 50, 100, 150 for an hour each, then 200 ml/h for 3.5 h: 6 h 30 min."""
    scenario = started(RowKind.FIRST)
    scenario.run_to_end()
    assert scenario.state.phase is InfusionPhase.COMPLETED
    assert scenario.state.running_min == pytest.approx(390.0, abs=1e-6)
    assert scenario.profile == [(0.0, 50.0), (60.0, 100.0), (120.0, 150.0), (180.0, 200.0)]
    assert scenario.state.delivered_ml == pytest.approx(1000.0)
    assert scenario.state.highest_rate_ml_h == 200.0


def test_L1_L2_second_infusion_takes_240_min() -> None:
    """Second infusion: 50, 100, 150, then 200 ml/h for 1 h: 4 h."""
    scenario = started(RowKind.SECOND)
    scenario.run_to_end()
    assert scenario.state.phase is InfusionPhase.COMPLETED
    assert scenario.state.running_min == pytest.approx(240.0, abs=1e-6)
    assert scenario.profile == [(0.0, 50.0), (60.0, 100.0), (120.0, 150.0), (180.0, 200.0)]


def test_L6_subsequent_infusion_takes_210_min_and_never_less() -> None:
    """Subsequent: 100 and 150 for an hour each, then 166.6 ml/h for 250 ml: 3 h 30 min."""
    scenario = started(RowKind.SUBSEQUENT)
    scenario.run_to_end()
    assert scenario.state.phase is InfusionPhase.COMPLETED
    assert scenario.profile == [(0.0, 100.0), (60.0, 150.0), (120.0, 166.6)]
    assert scenario.state.running_min == pytest.approx(210.04, abs=0.01)
    assert scenario.state.running_min >= 210.0
    step = next(c for c in scenario.commands if isinstance(c, SetRate) and c.rate_ml_h == 166.6)
    assert step.decision.bound_by.rule == "L6"
    assert step.decision.rules == ("L1", "L2", "L6")


# --- L1 ---------------------------------------------------------------------------------------


def test_L1_rises_one_increment_only_after_a_full_interval() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(59.9))
    assert scenario.state.rate_ml_h == 50.0
    assert set_rates(scenario) == [50.0]
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert deadline.kind is DeadlineKind.ESCALATION
    assert deadline.rule == "L1"
    assert deadline.at == T0 + minutes(60)
    scenario.advance(minutes(0.1))
    assert set_rates(scenario) == [50.0, 100.0]
    step = [a for a in scenario.audit if a.type == "rate_step"]
    assert [(a.rule, a.at, a.data["to_ml_h"]) for a in step] == [("L1", T0 + minutes(60), 100.0)]


def test_L1_A3_a_late_time_driver_gives_one_step_and_waits_for_its_confirmation() -> None:
    """TimePassed 90 min late: one step, and the next interval counts from its confirmation."""
    scenario = started(RowKind.FIRST)
    scenario.now = T0 + minutes(150)
    scenario.send(TimePassed())
    assert set_rates(scenario) == [50.0, 100.0]
    step = next(a for a in scenario.audit if a.type == "rate_step")
    assert step.at == T0 + minutes(60)  # processed at its own instant
    assert scenario.state.running_min == pytest.approx(150.0)
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert deadline.kind is DeadlineKind.ESCALATION
    assert deadline.at == T0 + minutes(210)


# --- L2 ---------------------------------------------------------------------------------------


def test_L2_no_commanded_rate_exceeds_200_ml_h() -> None:
    scenario = started(RowKind.FIRST)
    scenario.run_to_end()
    assert max(set_rates(scenario)) == 200.0
    top = next(c for c in scenario.commands if isinstance(c, SetRate) and c.rate_ml_h == 200.0)
    assert "L2" in top.decision.rules


def test_L4_L5_L6_the_row_comes_from_the_course_never_from_the_caller() -> None:
    """A caller cannot give infusion 3 the 100 ml/h row, nor infusion 1 a 500 ml bag."""
    with pytest.raises(TypeError):
        initial_state(  # type: ignore[call-arg]
            REVIEW,
            infusion_number=1,
            bag_ml=500.0,
            initial_rate_ml_h=200.0,
            course=CourseState(),
            bag_prepared_at=T0,
        )
    first = initial_state(REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=T0)
    assert (first.bag_ml, first.initial_rate_ml_h) == (1000.0, 50.0)
    # Infusion 1 had a grade 1 reaction: infusion 3 does not get the 100 ml/h row (L5).
    reaction = ReactionRecord(
        grade=1, max_grade=1, signs=OTHER, rate_ml_h=50.0, running_min=30.0, infusion_number=1
    )
    course = CourseState(
        infusions=(
            InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0, reactions=(reaction,)),
            InfusionRecord(infusion_number=2, highest_rate_ml_h=200.0),
        )
    )
    third = initial_state(REVIEW, infusion_number=3, course=course, bag_prepared_at=T0)
    assert (third.bag_ml, third.initial_rate_ml_h, third.min_duration_min) == (500.0, 50.0, None)


def test_L8_an_infusion_number_the_course_already_holds_is_refused() -> None:
    course = CourseState(infusions=(InfusionRecord(infusion_number=1, highest_rate_ml_h=200.0),))
    with pytest.raises(ValueError, match="infusion_number"):
        initial_state(REVIEW, infusion_number=1, course=course, bag_prepared_at=T0)


# --- L3 ---------------------------------------------------------------------------------------


def test_L3_start_programs_vtbi_equal_to_the_bag_before_run() -> None:
    state = planned(RowKind.FIRST)
    decision = decide(state, Start(actor="nurse", course=state.course), T0)
    # the pump's counter is cleared first: the last infusion given on it must not count (L3)
    assert [type(c) for c in decision.commands] == [ClearVolume, SetVtbi, SetRate, Run]
    _clear, vtbi, rate, _ = decision.commands
    assert isinstance(vtbi, SetVtbi)
    assert vtbi.volume_ml == 1000.0
    assert isinstance(rate, SetRate)
    assert rate.rate_ml_h == 50.0
    assert decision.state.phase is InfusionPhase.STARTING
    started_event = next(a for a in decision.audit if a.type == "started")
    assert started_event.rule == "L3"
    assert started_event.data["vtbi_ml"] == 1000.0


def test_L3_complete_only_when_the_pump_reports_the_vtbi_delivered() -> None:
    scenario = started(RowKind.SECOND)
    scenario.advance(minutes(239))
    assert scenario.state.phase is InfusionPhase.RUNNING
    scenario.advance(minutes(2))  # the pump delivers its 500 ml VTBI and stops by itself
    assert scenario.phase() is InfusionPhase.COMPLETED
    assert scenario.state.delivered_ml == pytest.approx(500.0)
    assert next(a for a in scenario.audit if a.type == "completed").rule == "L3"


def test_L3_a_completion_reported_early_is_an_under_infusion_alarm() -> None:
    """37.5 of 1000 ml is not a completion: the infusion stays open for a nurse."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(45))
    scenario.pump.running = False
    scenario.send(PumpCompleted(volume_infused_ml=37.5))
    assert scenario.phase() is InfusionPhase.RUNNING
    assert scenario.alarms()[-1].kind is MachineAlarm.UNDER_INFUSION
    assert scenario.alarms()[-1].rule == "L3"
    assert not scenario.state.pump_running


def test_L3_start_twice_is_refused_and_changes_nothing() -> None:
    scenario = started(RowKind.FIRST)
    before = scenario.state
    decision = decide(before, Start(actor="nurse", course=before.course), scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.rule == "L3"
    assert decision.state == before
    assert decision.commands == ()


# --- L6 ---------------------------------------------------------------------------------------


def test_L6_only_applies_to_the_row_that_has_a_minimum_duration() -> None:
    scenario = started(RowKind.SECOND)
    scenario.run_to_end()
    assert all("L6" not in c.decision.rules for c in scenario.commands if isinstance(c, SetRate))


# --- L7 ---------------------------------------------------------------------------------------


def test_L7_hold_keeps_the_rate_and_release_waits_a_full_interval() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(Hold(actor="dr"))
    assert next_deadline(scenario.state) is None or (
        next_deadline(scenario.state).kind is not DeadlineKind.ESCALATION  # type: ignore[union-attr]
    )
    scenario.advance(minutes(120))
    assert scenario.state.rate_ml_h == 50.0
    assert scenario.state.running_min == pytest.approx(150.0)  # held time is running time
    scenario.send(Release(actor="dr"))
    scenario.advance(minutes(59))
    assert scenario.state.rate_ml_h == 50.0
    scenario.advance(minutes(1))
    assert scenario.state.rate_ml_h == 100.0
    assert [(a.type, a.rule) for a in scenario.audit if a.type in {"hold", "release"}] == [
        ("hold", "L7"),
        ("release", "L7"),
    ]


def test_L7_hold_twice_or_release_without_hold_is_refused() -> None:
    scenario = started(RowKind.FIRST)
    refused = decide(scenario.state, Release(actor="nurse"), scenario.now)
    assert refused.refusal is not None
    assert refused.refusal.rule == "L7"
    assert refused.state == scenario.state
    scenario.send(Hold(actor="nurse"))
    again = decide(scenario.state, Hold(actor="nurse"), scenario.now)
    assert again.refusal is not None
    assert again.refusal.rule == "L7"


# --- L9 ---------------------------------------------------------------------------------------


def test_L9_warns_at_14_h_stops_at_15_h_and_a_new_bag_continues_at_the_step() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(Hold(actor="dr"))  # 50 ml/h: 1000 ml would take 20 h
    scenario.advance(timedelta(hours=13, minutes=59))
    assert not scenario.alarms()
    scenario.advance(minutes(1))
    assert [a.kind for a in scenario.alarms()] == [MachineAlarm.BAG_EXPIRING]
    assert scenario.alarms()[0].rule == "L9"
    mark = scenario.mark()
    scenario.advance(minutes(60))
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))
    assert [a.kind for a in scenario.alarms()][-1] is MachineAlarm.BAG_EXPIRED
    assert scenario.state.bag_expired
    assert scenario.state.running_min == pytest.approx(900.0)
    assert scenario.state.delivered_ml == pytest.approx(750.0)
    scenario.advance(minutes(30))  # waiting for the new bag: no running time
    assert scenario.state.running_min == pytest.approx(900.0)
    resumed = decide(
        scenario.state, Start(actor="nurse", course=scenario.state.course), scenario.now
    )
    assert resumed.refusal is not None
    mark = scenario.mark()
    new_bag_at = scenario.now
    scenario.send(BagReplaced(prepared_at=new_bag_at, actor="nurse"))
    sent = scenario.since(mark)
    # L9: clear-volume and the new VTBI, then the same step and run.
    assert [type(c) for c in sent[:4]] == [ClearVolume, SetVtbi, SetRate, Run]
    assert isinstance(sent[1], SetVtbi)
    assert sent[1].volume_ml == 250.0
    assert isinstance(sent[2], SetRate)
    assert sent[2].rate_ml_h == 50.0
    assert scenario.state.phase is InfusionPhase.RUNNING
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert deadline.kind is DeadlineKind.BAG_WARNING
    assert deadline.at == new_bag_at + timedelta(hours=14)
    scenario.run_to_end()
    assert scenario.phase() is InfusionPhase.COMPLETED
    assert scenario.state.delivered_ml == pytest.approx(1000.0)
    assert scenario.state.running_min == pytest.approx(1200.0)


def test_L9_a_bag_is_not_changed_while_the_pump_runs() -> None:
    scenario = started(RowKind.FIRST)
    decision = decide(scenario.state, BagReplaced(prepared_at=T0, actor="nurse"), scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.rule == "L9"
    assert decision.state == scenario.state


def test_L9_an_expired_bag_cannot_be_started() -> None:
    state = planned(RowKind.FIRST, prepared_at=T0 - timedelta(hours=16))
    decision = decide(state, Start(actor="nurse", course=state.course), T0)
    assert decision.refusal is not None
    assert decision.refusal.rule == "L9"
    assert not any(isinstance(c, Run) for c in decision.commands)
    assert any(isinstance(c, RaiseAlarm) for c in decision.commands)  # the expiry, on time


def test_L9_prepared_in_the_future_is_refused() -> None:
    scenario = started(RowKind.FIRST)
    decision = decide(scenario.state, BagReplaced(prepared_at=T0 + minutes(5), actor="nurse"), T0)
    assert decision.refusal is not None
    assert decision.refusal.rule == "L9"


def test_naive_datetimes_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="prepared_at"):
        BagReplaced(prepared_at=T0.replace(tzinfo=None), actor="nurse")
    state = planned()
    decision = decide(state, Start(actor="nurse", course=state.course), T0.replace(tzinfo=None))
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.field) == ("invalid", "now")
    assert decision.state == state
    assert decision.commands == ()


def test_time_never_runs_backwards() -> None:
    scenario = started(RowKind.FIRST)
    decision = decide(scenario.state, TimePassed(), T0 - minutes(1))
    assert decision.refusal is not None
    assert decision.refusal.field == "now"
    assert decision.state == scenario.state


def test_L9_a_replacement_bag_already_past_its_stability_is_refused() -> None:
    """A new bag must itself be in date: no Run is ever sent with an expired bag."""
    scenario = started(RowKind.FIRST)
    scenario.send(Hold(actor="dr"))
    scenario.advance(timedelta(hours=15))
    assert scenario.state.bag_expired
    old = scenario.now - timedelta(hours=15, minutes=1)
    decision = decide(scenario.state, BagReplaced(prepared_at=old, actor="nurse"), scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.rule == "L9"
    assert not any(isinstance(c, Run | SetRate | SetVtbi) for c in decision.commands)
    # One in its last hour is taken, and warned about at once.
    scenario.send(
        BagReplaced(prepared_at=scenario.now - timedelta(hours=14, minutes=30), actor="nurse")
    )
    assert scenario.state.phase is InfusionPhase.RUNNING
    assert scenario.alarms()[-1].kind is MachineAlarm.BAG_EXPIRING


def test_L9_a_new_bag_keeps_the_time_already_run_at_the_step() -> None:
    """The step's running time survives the bag change (A1, L9): no restart of the interval."""
    scenario = started(RowKind.FIRST, prepared_at=T0 - timedelta(hours=14, minutes=40))
    scenario.advance(minutes(40))  # expires at 20 min
    assert scenario.state.bag_expired
    assert scenario.state.at_rate_min == pytest.approx(20.0)
    scenario.send(BagReplaced(prepared_at=scenario.now, actor="nurse"))
    scenario.advance(minutes(39))
    assert scenario.state.rate_ml_h == 50.0
    scenario.advance(minutes(1))
    assert scenario.state.rate_ml_h == 100.0


def test_L9_L1_a_step_due_as_the_bag_expires_waits_for_the_new_bag_to_run() -> None:
    """Expiry and step at the same instant: stop first; the step follows the new bag's run."""
    scenario = started(RowKind.FIRST, prepared_at=T0 - timedelta(hours=14))
    scenario.advance(minutes(60))
    assert scenario.state.bag_expired
    assert set_rates(scenario) == [50.0]  # no rise went out with the stop
    mark = scenario.mark()
    scenario.send(BagReplaced(prepared_at=scenario.now, actor="nurse"))
    sent = [c for c in scenario.since(mark) if isinstance(c, SetRate | Run)]
    first, then = sent[:2]
    assert isinstance(first, SetRate)
    assert first.rate_ml_h == 50.0  # the same step first (L9, A1: no jump on restart)
    assert isinstance(then, Run)
    assert [c.rate_ml_h for c in sent if isinstance(c, SetRate)] == [50.0, 100.0]
    assert next(a for a in scenario.audit if a.type == "rate_step").rule == "L1"
