"""Volumes read back, pinned at their thresholds: over- and under-infusion, bad reads,
baselines, restarts and power resets (L3, A1, A2, A4; issue 22).

The thresholds are those of docs/clinical-rules.md (Clarifications, L3): over-infusion is more
than 5 % + 1 ml above the bound; under-infusion is more than 10 % and more than 5 ml short for
15 min of running; a read more than 0.05 ml below the last one is a bad read.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from machine_scenario import OTHER, T0, Scenario, facts, minutes, planned, started

from pumpctl.core.machine import (
    BagReplaced,
    CommandConfirmed,
    InfusionState,
    MachineAlarm,
    PumpConfirmedRunning,
    PumpPowerReset,
    RaiseAlarm,
    ReactionReported,
    Restarted,
    Start,
    StopPump,
    decide,
)
from pumpctl.core.machine.volumes import goes_backwards, possible_rate
from pumpctl.core.protocol import RowKind
from pumpctl.core.rules import Rule


def alarms(decision: object) -> list[MachineAlarm]:
    return [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)]  # type: ignore[attr-defined]


def read(volume: float, rate: float = 50.0) -> PumpConfirmedRunning:
    return PumpConfirmedRunning(rate_ml_h=rate, volume_infused_ml=volume)


def forty_minutes_in() -> Scenario:
    """The first infusion 40 min at 50 ml/h; the pump read then (33.3 ml)."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    scenario.send(read(scenario.pump.volume))
    scenario.auto_confirm = False
    return scenario


# --- over-infusion ----------------------------------------------------------------------------


def test_L3_exactly_1_ml_above_a_fresh_baseline_is_not_over_infusion() -> None:
    """Just after the baseline (bound 0), 1 ml more is the margin itself: no alarm."""
    scenario = Scenario(planned(RowKind.FIRST), auto_confirm=False)
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    for command_id in (1, 2):
        scenario.send(
            CommandConfirmed(
                command_id=command_id,
                running=False,
                rate_ml_h=0.0,
                volume_infused_ml=0.0,
                vtbi_ml=1000.0 if command_id == 2 else None,
            )
        )
    assert scenario.state.volume_bound_ml == 0.0
    assert decide(scenario.state, read(1.0), scenario.now).commands == ()
    over = decide(scenario.state, read(1.1), scenario.now)
    assert alarms(over) == [MachineAlarm.OVER_INFUSION]


def test_L3_A1_over_infusion_stops_the_pump_first_and_says_what_was_possible() -> None:
    scenario = forty_minutes_in()
    bound = scenario.state.volume_bound_ml
    assert bound == pytest.approx(100 / 3)
    decision = decide(scenario.state, read(60.0), scenario.now)
    words = (
        f"60 ml given, at most {bound:.1f} ml possible: pump stopped; "
        "a clinician must check and clear"
    )
    assert decision.commands == (
        StopPump(scenario.state.next_command_id),
        RaiseAlarm(MachineAlarm.OVER_INFUSION, words, Rule.L3),
    )
    assert decision.state.volume_read_ml == 60.0
    assert decision.state.volume_most_ml == 60.0
    again = decide(decision.state, read(61.0), scenario.now)
    assert again.commands == ()  # said once while latched


def test_L3_I1_over_infusion_s_stop_goes_ahead_of_an_alarm_due_at_that_instant() -> None:
    prepared = T0 - timedelta(hours=14) + minutes(1)  # the bag warning one minute in
    scenario = Scenario(planned(RowKind.FIRST, prepared_at=prepared))
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.now += minutes(1)
    decision = decide(scenario.state, read(30.0), scenario.now)
    assert isinstance(decision.commands[0], StopPump)
    assert alarms(decision) == [MachineAlarm.BAG_EXPIRING, MachineAlarm.OVER_INFUSION]


# --- under-infusion ---------------------------------------------------------------------------


def short_for(expected: float, since: float | None) -> tuple[InfusionState, Scenario]:
    scenario = forty_minutes_in()
    running_min = scenario.state.running_min
    changes: dict[str, object] = {
        "volume_expected_ml": expected,
        "volume_bound_ml": expected,
        "volume_read_ml": 0.0,
    }
    changes["under_since_min"] = None if since is None else running_min - since
    return scenario.state.updated(changes), scenario


def test_L3_under_infusion_after_15_min_of_running_says_given_and_expected() -> None:
    state, scenario = short_for(100.0, since=15.0)
    decision = decide(state, read(50.0), scenario.now)
    words = (
        "50 ml given, 100.0 ml expected from the confirmed rates for 15 min of running: "
        "check the line"
    )
    assert decision.commands == (RaiseAlarm(MachineAlarm.UNDER_INFUSION, words, Rule.L3),)
    early, _ = short_for(100.0, since=14.9)
    assert decide(early, read(50.0), scenario.now).commands == ()


@pytest.mark.parametrize(
    ("expected", "volume"),
    [(100.0, 90.0), (40.0, 35.0)],
    ids=["exactly 10 % short", "exactly 5 ml short"],
)
def test_L3_exactly_at_a_threshold_is_not_short(expected: float, volume: float) -> None:
    state, scenario = short_for(expected, since=None)
    decision = decide(state, read(volume), scenario.now)
    assert decision.state.under_since_min is None
    shorter = decide(state, read(volume - 0.5), scenario.now)
    assert shorter.state.under_since_min == scenario.state.running_min


# --- bad reads, baselines ---------------------------------------------------------------------


def test_A2_a_read_more_than_0_05_ml_below_the_last_is_a_bad_read_and_no_baseline_none() -> None:
    state = forty_minutes_in().state.updated({"volume_read_ml": 1.05})
    assert 1.05 - 0.05 == 1.0
    assert not goes_backwards(state, 1.0)
    assert goes_backwards(state, 0.99)
    no_vtbi = state.updated({"vtbi_programmed_ml": None})
    assert not goes_backwards(no_vtbi, 0.0)
    no_read = state.updated({"volume_read_ml": None})
    assert not goes_backwards(no_read, 0.0)


def test_L3_L9_a_cleared_counter_is_the_new_baseline_for_every_figure() -> None:
    """Paused by a reaction, a new bag: its clear-volume confirmed at 2 ml resets the bound,
    the expectation, the most given and the shortfall's start to that counter."""
    scenario = forty_minutes_in()
    scenario.auto_confirm = True
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="n"))
    scenario.auto_confirm = False
    bag = scenario.send(BagReplaced(prepared_at=scenario.now, actor="n"))
    clear = bag.pump_commands[0]
    state = scenario.state.updated({"under_since_min": 10.0})
    event = CommandConfirmed(
        command_id=clear.id, running=False, rate_ml_h=0.0, volume_infused_ml=2.0
    )
    decision = decide(state, event, scenario.now)
    s = decision.state
    assert (s.volume_read_ml, s.bag_infused_ml, s.volume_bound_ml) == (2.0, 2.0, 2.0)
    assert (s.volume_expected_ml, s.volume_most_ml, s.under_since_min) == (2.0, 2.0, None)


def test_L3_a_paused_pump_with_only_volume_commands_out_may_run_at_nothing() -> None:
    scenario = forty_minutes_in()
    scenario.auto_confirm = True
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="n"))
    scenario.auto_confirm = False
    scenario.send(BagReplaced(prepared_at=scenario.now, actor="n"))
    assert [c.op.value for c in scenario.state.outstanding] == ["clear_volume", "set_vtbi"]
    assert possible_rate(scenario.state) == 0.0


# --- A4, L3: restarts and power resets --------------------------------------------------------


def test_L3_A4_a_power_reset_counts_the_last_read_plus_what_may_have_run_since() -> None:
    """Read at 30 ml at 40 min (a slow pump): the bound is 33.3 ml, but the most the pump may
    have given is the 30 ml read (nothing has run since): 30 ml count as given."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    state = scenario.send(read(30.0, rate=50.0)).state
    assert state.volume_bound_ml == pytest.approx(100 / 3)
    assert state.volume_most_ml == 30.0
    decision = decide(state, PumpPowerReset(volume_infused_ml=0.0), scenario.now)
    assert decision.state.delivered_before_bag_ml == pytest.approx(30.0)


def test_A4_a_restart_before_the_vtbi_is_confirmed_keeps_no_counter() -> None:
    scenario = Scenario(planned(RowKind.FIRST), auto_confirm=False)
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    state = scenario.state.updated({"link_lost": True})
    event = Restarted(running=False, rate_ml_h=0.0, volume_infused_ml=5.0)
    decision = decide(state, event, scenario.now)
    assert "volume_baseline" not in [k for k, _, _ in facts(decision.audit)]
    assert decision.state.volume_bound_ml == state.volume_bound_ml


def test_A4_a_restart_at_exactly_the_bound_moves_nothing() -> None:
    scenario = forty_minutes_in()
    state = scenario.state.updated({"link_lost": True, "volume_bound_ml": 40.0})
    event = Restarted(running=True, rate_ml_h=50.0, volume_infused_ml=40.0)
    decision = decide(state, event, scenario.now)
    assert "volume_baseline" not in [k for k, _, _ in facts(decision.audit)]
