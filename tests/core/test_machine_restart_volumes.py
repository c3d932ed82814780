"""A restart keeps the volumes (L3, A4; issue 19, point 2).

The controller saves a decision that changed nothing but time at most every 10 s, so the state
a restart rebuilds may be older than the pump's counter; and the time the controller was down
shows in clinical time only as far as its clock saw it (a clock that went on from the record,
A7, saw none of it). A pump that did only what it was allowed to is then not mistaken for
over-infusion, the under-infusion expectation keeps what was given, and a power reset found on
the restart counts the most the pump may have given, so the VTBI programmed again never exceeds
the bag less that.
"""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from machine_scenario import FakePump, Scenario, examples, minutes, started

from pumpctl.core.machine import (
    InfusionState,
    MachineAlarm,
    PumpConfirmedRunning,
    PumpPowerReset,
    Restarted,
    ResumeRequested,
    SetRate,
    SetVtbi,
    StopPump,
    decide,
)
from pumpctl.core.protocol import RowKind

PROPERTY = settings(
    max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def stored(scenario: Scenario) -> InfusionState:
    """The state as the store gave it back, attached after a restart (the link taken as lost
    until the pump is read, as `PumpSupervisor.attach(recovered=True)` does)."""
    return InfusionState.from_json(scenario.state.to_json()).updated({"link_lost": True})


def rebuilt(scenario: Scenario, *, ran_on: timedelta, clock_saw: timedelta) -> Scenario:
    """A restart from `scenario`'s state as last saved: the pump ran on for `ran_on` since that
    save; the controller's clinical clock shows `clock_saw` of that time."""
    state = stored(scenario)
    scenario.pump.infuse(ran_on)
    return Scenario(state, now=scenario.now + clock_saw, pump=scenario.pump)


def read_back(scenario: Scenario) -> Restarted:
    pump = scenario.pump
    return Restarted(
        running=pump.running,
        rate_ml_h=pump.rate if pump.running else 0.0,
        volume_infused_ml=pump.volume,
    )


def over_infusion(scenario: Scenario) -> bool:
    return MachineAlarm.OVER_INFUSION in [a.kind for a in scenario.alarms()]


def test_L3_A4_a_restart_whose_clock_saw_none_of_the_downtime_is_not_over_infusion() -> None:
    """The last save is 10 min older than the pump's counter, and the clock went on from the
    record: the pump at its step gave 16.7 ml the bound never saw. Not over-infusion: the bound
    and the expectation are carried up to the counter, and the ladder goes on."""
    first = started(RowKind.FIRST)
    first.advance(minutes(90))  # 100 ml/h for 30 min: 100 ml given
    scenario = rebuilt(first, ran_on=minutes(10), clock_saw=timedelta(0))
    mark = scenario.mark()
    decision = scenario.send(read_back(scenario))
    assert scenario.pump.volume > first.state.volume_bound_ml * 1.05 + 1  # beyond the old bound
    assert not over_infusion(scenario)
    assert not any(isinstance(c, StopPump) for c in scenario.since(mark))
    state = scenario.state
    assert not state.link_lost
    assert state.volume_bound_ml >= scenario.pump.volume
    assert state.volume_expected_ml >= scenario.pump.volume
    kept = [a for a in decision.audit if a.type == "volume_baseline"]
    assert [a.rule for a in kept] == ["A4"]
    scenario.advance(minutes(30))  # the 30 min left of the interval at 100 ml/h (A4)
    assert scenario.state.rate_ml_h == 150.0
    assert not over_infusion(scenario)


def test_L3_A4_a_restart_keeps_the_expectation_so_a_line_blocked_after_it_is_seen() -> None:
    """The pump gave 16.7 ml while the controller was down (its clock saw all of it). The
    expectation keeps that volume, so a line that gives nothing from the restart on is an
    under-infusion alarm after 15 min of running short, not later by what was given unseen."""
    first = started(RowKind.FIRST)
    first.advance(minutes(75))  # 100 ml/h for 15 min
    scenario = rebuilt(first, ran_on=minutes(10), clock_saw=minutes(10))
    scenario.send(read_back(scenario))
    assert scenario.state.volume_expected_ml >= scenario.pump.volume
    blocked = scenario.pump.volume
    for _ in range(25):  # the pump says it runs at 100 ml/h; nothing reaches the patient
        scenario.now += minutes(1)
        scenario.send(PumpConfirmedRunning(rate_ml_h=100.0, volume_infused_ml=blocked))
    assert MachineAlarm.UNDER_INFUSION in [a.kind for a in scenario.alarms()]
    assert not over_infusion(scenario)


def test_L3_A4_a_power_reset_found_on_restart_reprograms_the_bag_less_the_most_given() -> None:
    """Issue 19's case: saved at 50 ml, the pump gave 66.7 ml at 100 ml/h before it lost power
    with the controller down. The VTBI programmed on the resume is at most 1000 - 66.7 ml: what
    the pump may have given since the last save counts as given, never only the 50 ml saved."""
    first = started(RowKind.FIRST)
    first.advance(minutes(60))  # the step to 100 ml/h is confirmed at 50 ml
    assert first.state.volume_read_ml == 50.0
    scenario = rebuilt(first, ran_on=minutes(10), clock_saw=minutes(12))
    given = scenario.pump.volume
    assert abs(given - 66.67) < 0.01
    scenario.pump = FakePump()  # power lost: program and counter gone
    scenario.send(PumpPowerReset(volume_infused_ml=0.0))
    scenario.send(Restarted(running=False, rate_ml_h=0.0, volume_infused_ml=0.0))
    assert scenario.state.delivered_ml >= given
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse", no_reaction=True))
    vtbi = [c.volume_ml for c in scenario.since(mark) if isinstance(c, SetVtbi)]
    assert vtbi
    assert vtbi[0] <= scenario.state.bag_ml - given
    rates = [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)]
    assert rates == [100.0]  # A1: the same rate, never a jump


@PROPERTY
@given(
    minute=st.integers(min_value=5, max_value=300),
    unsaved=st.integers(min_value=0, max_value=20),
    down=st.integers(min_value=0, max_value=30),
)
def test_L3_A4_property_a_power_reset_on_restart_never_reprograms_more_than_is_left(
    minute: int, unsaved: int, down: int
) -> None:
    """Whenever the save and however long the pump ran unsaved and unsupervised before losing
    power: the VTBI programmed again never exceeds the bag less what the pump really gave."""
    first = started(RowKind.FIRST)
    first.advance(minutes(minute))
    ran = minutes(unsaved + down)
    scenario = rebuilt(first, ran_on=ran, clock_saw=ran)
    given = scenario.pump.volume
    scenario.pump = FakePump()
    scenario.send(PumpPowerReset(volume_infused_ml=0.0))
    scenario.send(Restarted(running=False, rate_ml_h=0.0, volume_infused_ml=0.0))
    mark = scenario.mark()
    scenario.send(ResumeRequested(actor="nurse", no_reaction=True))
    for command in scenario.since(mark):
        if isinstance(command, SetVtbi):
            assert command.volume_ml <= scenario.state.bag_ml - given + 1e-6


def test_L3_A4_a_pump_found_faster_at_a_restart_is_still_judged_for_over_infusion() -> None:
    """Only a pump that did what it was allowed to has its counter taken as given: one read
    back faster than its step is set back down, and its volume is judged against the bound."""
    first = started(RowKind.FIRST)
    first.advance(minutes(90))
    scenario = rebuilt(first, ran_on=timedelta(0), clock_saw=minutes(10))
    scenario.pump.rate = 200.0  # ran at twice its step while the controller was down
    scenario.pump.infuse(minutes(10))
    mark = scenario.mark()
    scenario.send(read_back(scenario))
    assert over_infusion(scenario)
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))


def test_L3_A4_a_state_saved_before_the_most_was_kept_counts_its_bound_on_power_reset() -> None:
    """A state saved by an earlier version has no `volume_most_ml`: a power reset then counts
    the over-infusion bound (an upper bound too), never less than the running estimate."""
    first = started(RowKind.FIRST)
    first.advance(minutes(90))
    data = json.loads(first.state.to_json())
    del data["volume_most_ml"]
    old = InfusionState.from_json(json.dumps(data)).updated({"link_lost": True})
    assert old.volume_most_ml is None
    later = first.now + minutes(10)
    decision = decide(old, PumpPowerReset(volume_infused_ml=0.0), later)
    assert decision.state.delivered_before_bag_ml >= old.volume_bound_ml
