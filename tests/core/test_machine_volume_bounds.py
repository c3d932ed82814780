"""The volume rules at their edges (L3, A2, A4) and the end of the ladder (L6), each pinned so
that the rule with one condition changed fails (docs/mutation.md names the mutants these kill).

- L3 under-infusion needs both: more than 10 % *and* more than 5 ml short, for 15 min.
- L3 over-infusion: the bound's slope is the highest rate the pump may run at; a pump read
  stopped runs at no rate, whatever rate it shows.
- A2: a bad read is audited under A2 with the volume read and the last one taken.
- L3, L6, L9: with nothing left to give no step is taken and no bag is changed; a step L6 bounds
  is the last one, and a resume after a reaction climbs again.
"""

from __future__ import annotations

import pytest
from machine_scenario import OTHER, Scenario, minutes, started

from pumpctl.core.machine import (
    AuditEvent,
    BagReplaced,
    DeadlineKind,
    InfusionState,
    LinkRestored,
    MachineAlarm,
    PumpAlarmRaised,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    ReactionReported,
    Refusal,
    ResumeRequested,
    SetRate,
    deadlines,
    decide,
)
from pumpctl.core.machine.volumes import accrue, possible_rate
from pumpctl.core.protocol import RowKind
from pumpctl.core.rules import Rule


def under_alarms(scenario: Scenario) -> list[object]:
    return [a for a in scenario.alarms() if a.kind is MachineAlarm.UNDER_INFUSION]


def read_short(scenario: Scenario, short_ml: float) -> None:
    """The pump reads running at its rate, `short_ml` below what it gave."""
    volume = scenario.pump.volume - short_ml
    scenario.send(PumpConfirmedRunning(rate_ml_h=scenario.pump.rate, volume_infused_ml=volume))


def escalation_due(state: InfusionState) -> bool:
    return any(d.kind is DeadlineKind.ESCALATION for d in deadlines(state))


# --- L3: under-infusion needs both thresholds ----------------------------------------------------


def test_L3_more_than_10_percent_but_at_most_5_ml_short_is_no_under_infusion() -> None:
    """4 ml short of 8 to 33 ml expected (12 to 48 %) for 30 min of running: no alarm."""
    scenario = started(RowKind.FIRST)
    for _ in range(4):
        scenario.advance(minutes(10))
        read_short(scenario, 4.0)
    assert scenario.state.volume_expected_ml == pytest.approx(33.333, abs=1e-3)
    assert scenario.state.under_since_min is None
    assert under_alarms(scenario) == []


def test_L3_more_than_5_ml_but_at_most_10_percent_short_is_no_under_infusion() -> None:
    """6 ml short of 175 to 250 ml expected (2 to 3.4 %) for 30 min of running: no alarm."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(130))
    for _ in range(4):
        read_short(scenario, 6.0)
        scenario.advance(minutes(10))
    assert scenario.state.under_since_min is None
    assert under_alarms(scenario) == []


def test_L3_both_thresholds_passed_for_15_min_of_running_is_one_under_infusion_alarm() -> None:
    """30 ml short of 200 to 250 ml (12 to 15 %) from 140 min: the alarm at 155 min, once, no
    stop; made up, the count starts again."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(140))
    read_short(scenario, 30.0)
    assert scenario.state.under_since_min == pytest.approx(140.0)
    scenario.advance(minutes(14))
    read_short(scenario, 30.0)
    assert under_alarms(scenario) == []
    scenario.advance(minutes(1))
    read_short(scenario, 30.0)
    scenario.advance(minutes(5))
    read_short(scenario, 30.0)
    assert len(under_alarms(scenario)) == 1
    assert scenario.alarms()[-1].rule is Rule.L3
    assert scenario.state.pump_running
    read_short(scenario, 0.0)  # the shortfall is made up: the count starts again
    assert scenario.state.under_since_min is None


# --- L3: the over-infusion bound's slope ----------------------------------------------------


def test_L3_a_pump_read_stopped_adds_nothing_to_the_bound_whatever_rate_it_shows() -> None:
    """A pump read stopped (a New Era pump shows its programmed rate while stopped) may run at
    no rate: the bound's slope is 0, and the state keeps 0 as the pump's rate."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.pump.running = False
    scenario.send(LinkRestored(running=False, rate_ml_h=50.0, volume_infused_ml=25.0))
    state = scenario.state
    assert (state.pump_running, state.pump_rate_ml_h) == (False, 0.0)
    stored = state.updated({"pump_rate_ml_h": 50.0, "confirmed_rate_ml_h": 0.0})  # as stored
    assert possible_rate(stored) == 0.0
    assert accrue(stored, 60.0, counting=False)["volume_bound_ml"] == state.volume_bound_ml
    later = decide(stored, PumpConfirmedStopped(volume_infused_ml=25.0), scenario.now + minutes(60))
    assert later.state.volume_bound_ml == pytest.approx(state.volume_bound_ml)


def test_L3_the_bound_grows_at_the_highest_rate_the_pump_may_run_at() -> None:
    """Running at 50 ml/h, read at 60: the slope is 60; with the link lost, the step counts too."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    read = scenario.state.updated({"pump_rate_ml_h": 60.0})
    assert possible_rate(read) == 60.0
    assert accrue(read, 30.0, counting=True) == {
        "volume_bound_ml": pytest.approx(read.volume_bound_ml + 30.0),
        "volume_most_ml": pytest.approx((read.volume_most_ml or 0.0) + 30.0),
        "volume_expected_ml": pytest.approx(read.volume_expected_ml + 25.0),
    }
    lost = read.updated({"link_lost": True, "rate_ml_h": 80.0, "pump_running": False})
    assert possible_rate(lost) == 80.0
    assert possible_rate(lost.updated({"link_lost": False})) == 50.0  # the confirmed rate


# --- A2: a bad read -------------------------------------------------------------------------


def test_A2_a_bad_read_is_audited_under_A2_with_the_volume_and_the_last_taken() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=25.0))
    decision = scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=3.0))
    assert decision.audit == (
        AuditEvent("bad_read", Rule.A2, scenario.now, {"volume_ml": 3.0, "last_ml": 25.0}),
    )
    assert decision.commands == ()


# --- L3, L6, L9: nothing left to give, and the ladder's end ----------------------------------


def nothing_left(scenario: Scenario) -> InfusionState:
    """The state with everything given (earlier bags gave the rest), the pump still running."""
    s = scenario.state
    return s.updated({"delivered_before_bag_ml": s.bag_ml - s.bag_infused_ml})


def test_L3_L1_with_nothing_left_to_give_the_due_step_is_not_taken_and_the_ladder_settles() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(50))
    scenario.state = nothing_left(scenario)
    assert scenario.state.remaining_ml == 0.0
    decision = decide(
        scenario.state,
        PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=scenario.pump.volume + 8.0),
        scenario.now + minutes(10),
    )
    assert decision.refusal is None
    assert not any(isinstance(c, SetRate) for c in decision.commands)
    assert [a.type for a in decision.audit if a.type != "volume_baseline"] == []
    assert decision.state.ladder_settled
    assert not escalation_due(decision.state)


def test_L3_L9_a_bag_is_not_changed_when_nothing_is_left_and_is_with_half_a_ml() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(50))
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    empty = nothing_left(scenario)
    event = BagReplaced(prepared_at=scenario.now, actor="nurse")
    refused = decide(empty, event, scenario.now)
    assert refused.refusal == Refusal("rule", "nothing is left to give", rule=Rule.L3)
    half = empty.updated({"delivered_before_bag_ml": empty.delivered_before_bag_ml - 0.5})
    taken = decide(half, event, scenario.now)
    assert taken.refusal is None
    assert taken.state.bag_volume_ml == pytest.approx(0.5)


def test_L6_a_step_L6_bounds_is_the_last_and_a_resume_climbs_again() -> None:
    """Subsequent row (500 ml, 210 min): at 120 min L6 bounds the step to 200 at 166.7 ml/h:
    the ladder is settled, no step is due; after a reaction the resume at half climbs again."""
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(121))
    assert scenario.state.rate_ml_h == pytest.approx(166.7, abs=0.1)
    step = next(a for a in reversed(scenario.audit) if a.type == "rate_step")
    assert step.rule is Rule.L6
    assert scenario.state.ladder_settled
    assert not escalation_due(scenario.state)
    scenario.advance(minutes(70))
    assert [a.type for a in scenario.audit].count("ladder_settled") == 0
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.send(ResumeRequested(actor="nurse"))
    assert not scenario.state.ladder_settled
    assert escalation_due(scenario.state)


def ladder_settled_audit(scenario: Scenario) -> list[AuditEvent]:
    return [a for a in scenario.audit if a.type == "ladder_settled"]


def test_L6_a_step_L6_leaves_no_rate_for_settles_the_ladder_once() -> None:
    """Subsequent row, 0.01 ml left at the 60-min step: L6 leaves no positive rate, so the
    ladder settles at the current step (audited once under L6) and no step falls due again."""
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(50))
    s = scenario.state
    given_at_60 = s.bag_infused_ml + 100.0 * 10 / 60
    scenario.state = s.updated({"delivered_before_bag_ml": s.bag_ml - given_at_60 - 0.01})
    scenario.advance(minutes(10))
    assert [(a.rule, set(a.data)) for a in ladder_settled_audit(scenario)] == [
        (Rule.L6, {"remaining_ml"})
    ]
    assert scenario.state.ladder_settled
    assert not escalation_due(scenario.state)
    scenario.advance(minutes(90))
    assert len(ladder_settled_audit(scenario)) == 1
    assert scenario.state.rate_ml_h == 100.0


def test_L6_a_step_L6_holds_at_the_current_rate_settles_the_ladder_once() -> None:
    """Subsequent row, 250 ml left at the 60-min step with 150 min to go: L6 caps at 100 ml/h,
    the current step: settled (audited once under L6), no step falls due again."""
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(50))
    s = scenario.state
    given_at_60 = s.bag_infused_ml + 100.0 * 10 / 60
    scenario.state = s.updated({"delivered_before_bag_ml": s.bag_ml - 250.0 - given_at_60})
    scenario.advance(minutes(10))
    assert [a.rule for a in ladder_settled_audit(scenario)] == [Rule.L6]
    assert scenario.state.ladder_settled
    assert not escalation_due(scenario.state)
    scenario.advance(minutes(60))
    assert len(ladder_settled_audit(scenario)) == 1
    assert scenario.state.rate_ml_h == 100.0
