"""The pump and the link in the machine: A1-A4, and the deadlines a time driver arms."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from machine_scenario import OTHER, T0, Scenario, minutes, started

from pumpctl.core.machine import (
    DeadlineKind,
    InfusionPhase,
    InfusionState,
    LinkLost,
    LinkRestored,
    MachineAlarm,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    ReactionReported,
    Restarted,
    ResumeRequested,
    Run,
    SetRate,
    Stop,
    StopPump,
    TimePassed,
    deadlines,
    decide,
    lost_program,
    next_deadline,
)
from pumpctl.core.machine.volumes import BACKWARDS_TOLERANCE_ML
from pumpctl.core.protocol import RowKind


def occlusion(scenario: Scenario) -> None:
    """The pump stops on an occlusion alarm."""
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))


def rises(scenario: Scenario, mark: int) -> list[float]:
    return [c.rate_ml_h for c in scenario.since(mark) if isinstance(c, SetRate)]


# --- A1 ---------------------------------------------------------------------------------------


def test_A1_an_alarm_suspends_escalation_and_running_time_but_keeps_time_at_rate() -> None:
    """40 min at 50 ml/h, a 30 min occlusion, then 20 more minutes complete the interval (L1)."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    occlusion(scenario)
    assert scenario.alarms() == []  # the pump's own alarm: recorded, not duplicated
    assert next(a for a in scenario.audit if a.type == "pump_alarm").rule == "A1"
    assert all(d.kind is not DeadlineKind.ESCALATION for d in deadlines(scenario.state))
    scenario.advance(minutes(30))
    assert scenario.state.running_min == pytest.approx(40.0)
    assert scenario.state.at_rate_min == pytest.approx(40.0)
    mark = scenario.mark()
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    assert not any(isinstance(c, Run) for c in scenario.since(mark))  # a nurse restarts it
    scenario.send(ResumeRequested(actor="nurse"))
    assert rises(scenario, mark) == [50.0]  # the same rate: no jump, no skipped step
    scenario.advance(minutes(19))
    assert scenario.state.rate_ml_h == 50.0
    scenario.advance(minutes(1))
    assert scenario.state.rate_ml_h == 100.0
    assert scenario.state.running_min == pytest.approx(60.0)


def test_A1_a_pump_that_restarts_itself_after_the_alarm_continues_at_the_same_rate() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(70))
    occlusion(scenario)
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    scenario.pump.running = True
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=100.0, volume_infused_ml=scenario.pump.volume))
    assert scenario.since(mark) == []
    assert scenario.state.counting
    scenario.advance(minutes(50))
    assert scenario.state.rate_ml_h == 150.0


def test_A1_resume_with_an_alarm_in_force_is_refused() -> None:
    scenario = started(RowKind.FIRST)
    occlusion(scenario)
    decision = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.rule == "A1"


def test_A1_an_unexpected_stop_is_an_alarm_and_is_left_stopped() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    scenario.pump.running = False
    mark = scenario.mark()
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    assert [c.kind for c in scenario.alarms()] == [MachineAlarm.PUMP_STOPPED]
    assert not any(isinstance(c, Run) for c in scenario.since(mark))


# --- A2 ---------------------------------------------------------------------------------------


def test_A2_link_loss_raises_an_alarm_and_stops_the_clock_of_the_ladder() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(LinkLost())
    assert [c.kind for c in scenario.alarms()] == [MachineAlarm.COMM_LOSS]
    assert scenario.alarms()[0].rule == "A2"
    scenario.advance(minutes(60))
    assert scenario.state.running_min == pytest.approx(30.0)
    assert scenario.state.rate_ml_h == 50.0


def test_A2_a_pump_found_faster_is_set_back_down() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(LinkLost())
    scenario.advance(minutes(10))
    # What really happened meanwhile: the pump just sped up (the volume is still plausible).
    scenario.pump.rate, scenario.pump.volume = 120.0, 33.0
    mark = scenario.mark()
    scenario.send(LinkRestored(running=True, rate_ml_h=120.0, volume_infused_ml=33.0))
    sent = scenario.since(mark)
    assert [c.rate_ml_h for c in sent if isinstance(c, SetRate)] == [50.0]
    assert MachineAlarm.RATE_TOO_HIGH in [c.kind for c in scenario.alarms()]
    assert scenario.state.delivered_ml == pytest.approx(33.0)  # the pump's own figure
    assert scenario.state.pump_rate_ml_h == 50.0  # confirmed back down
    assert scenario.state.outstanding == ()


def test_A2_a_pump_found_stopped_or_slower_is_left_as_it_is() -> None:
    for running, rate in ((False, 0.0), (True, 20.0)):
        scenario = started(RowKind.FIRST)
        scenario.advance(minutes(70))
        scenario.send(LinkLost())
        mark = scenario.mark()
        scenario.send(LinkRestored(running=running, rate_ml_h=rate, volume_infused_ml=60.0))
        assert not any(isinstance(c, Run | SetRate) for c in scenario.since(mark))
        kinds = [c.kind for c in scenario.alarms()]
        assert kinds[-1] in {MachineAlarm.PUMP_STOPPED, MachineAlarm.RATE_LOWER}
        scenario.advance(minutes(120))  # escalation stays suspended until a nurse acts
        assert scenario.state.rate_ml_h == 100.0
        assert not rises(scenario, mark)


def test_A2_a_stopped_infusion_found_running_is_stopped_loudly() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.send(LinkLost())
    mark = scenario.mark()
    scenario.send(LinkRestored(running=True, rate_ml_h=50.0, volume_infused_ml=1.0))
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))
    assert scenario.alarms()[-1].kind is MachineAlarm.PUMP_NOT_STOPPED


def test_A2_resume_without_a_link_is_refused() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    scenario.send(LinkLost())
    decision = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.rule == "A2"


# --- A3 ---------------------------------------------------------------------------------------


def test_A3_escalation_waits_for_the_confirmation_of_the_last_command() -> None:
    scenario = started(RowKind.FIRST)
    scenario.auto_confirm = False
    scenario.advance(minutes(60))
    assert scenario.state.rate_ml_h == 100.0
    assert [c.op for c in scenario.state.outstanding] == ["set_rate"]
    scenario.advance(minutes(90))  # the pump never confirms 100 ml/h
    assert scenario.state.rate_ml_h == 100.0
    assert scenario.state.running_min == pytest.approx(150.0)  # unconfirmed still runs
    assert all(d.kind is not DeadlineKind.ESCALATION for d in deadlines(scenario.state))
    scenario.send(scenario.pump.confirm(scenario.state.outstanding[0].id))
    deadline = next_deadline(scenario.state)
    assert deadline is not None
    assert (deadline.kind, deadline.at) == (DeadlineKind.ESCALATION, T0 + minutes(210))


def test_A3_a_pump_running_after_its_stop_was_confirmed_is_the_loudest_alarm() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=0.0))
    assert any(isinstance(c, StopPump) for c in scenario.since(mark))
    alarm = scenario.alarms()[-1]
    assert (alarm.kind, alarm.rule) == (MachineAlarm.PUMP_NOT_STOPPED, "A3")
    assert "clamp the line" in alarm.message


def test_A3_a_late_running_readback_while_the_stop_is_on_its_way_is_not_an_alarm() -> None:
    scenario = started(RowKind.FIRST)
    scenario.auto_confirm = False
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    mark = scenario.mark()
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=0.0))
    assert scenario.since(mark) == []


# --- A4 ---------------------------------------------------------------------------------------


def test_A4_the_state_is_a_value_that_survives_storage() -> None:
    scenario = started(RowKind.SUBSEQUENT)
    scenario.advance(minutes(75))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    stored = scenario.state.to_json()
    rebuilt = InfusionState.from_json(stored)
    assert rebuilt == scenario.state
    later = T0 + minutes(200)
    assert decide(rebuilt, TimePassed(), later) == decide(scenario.state, TimePassed(), later)


def test_A4_a_restart_never_restarts_the_ladder_nor_raises_the_rate() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(90))  # 100 ml/h for 30 min
    rebuilt = InfusionState.from_json(scenario.state.to_json())
    resumed = Scenario(rebuilt, now=scenario.now + minutes(20), pump=scenario.pump)
    mark = resumed.mark()
    resumed.send(Restarted(running=True, rate_ml_h=100.0, volume_infused_ml=95.0))
    assert rises(resumed, mark) == []
    assert resumed.state.rate_ml_h == 100.0
    assert resumed.state.running_min == pytest.approx(90.0)  # the gap is not counted
    assert resumed.state.at_rate_min == pytest.approx(30.0)
    resumed.advance(minutes(30))
    assert resumed.state.rate_ml_h == 150.0


def test_A4_a_pump_found_stopped_after_a_restart_stays_stopped() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(90))
    mark = scenario.mark()
    scenario.now += minutes(5)
    scenario.send(Restarted(running=False, rate_ml_h=0.0, volume_infused_ml=95.0))
    assert not any(isinstance(c, Run | SetRate) for c in scenario.since(mark))
    assert scenario.alarms()[-1].rule == "A4"


# --- deadlines, stop ------------------------------------------------------------------------


def test_next_deadline_names_what_is_due() -> None:
    scenario = started(RowKind.FIRST)
    assert next_deadline(scenario.state).kind is DeadlineKind.ESCALATION  # type: ignore[union-attr]
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="nurse"))
    kinds = [d.kind for d in deadlines(scenario.state)]
    assert kinds == [
        DeadlineKind.OBSERVATION_END,
        DeadlineKind.BAG_WARNING,
        DeadlineKind.BAG_EXPIRY,
    ]
    assert deadlines(scenario.state)[0].at == T0 + timedelta(hours=2)


def test_stop_for_good_stops_the_pump_and_is_terminal() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(Stop(reason="patient request", actor="nurse"))
    assert scenario.state.phase is InfusionPhase.STOPPED
    assert any(isinstance(c, StopPump) for c in scenario.commands)
    assert next_deadline(scenario.state) is None
    decision = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    assert decision.refusal is not None
    assert decision.commands == ()


def test_L3_A1_lost_program_is_a_counter_gone_back_with_a_vtbi_not_the_programmed_one() -> None:
    """A power reset is told from a bad read by the VTBI: both need the counter gone back."""
    scenario = started()
    scenario.advance(minutes(90))
    state = scenario.state
    assert state.vtbi_programmed_ml is not None
    assert state.volume_read_ml is not None
    assert state.volume_read_ml > 1
    read, vtbi = state.volume_read_ml, state.vtbi_programmed_ml
    assert lost_program(state, 0.0, 0.0)  # counter and program gone: a power reset
    assert not lost_program(state, 0.0, vtbi)  # same program, counter back: a bad read (A2)
    assert not lost_program(state, read, 0.0)  # counter not back: not a reset by this reading
    assert not lost_program(started().state.updated({"vtbi_programmed_ml": None}), 0.0, 0.0)


@given(
    read=st.floats(min_value=0, max_value=1000),
    volume=st.floats(min_value=0, max_value=1000),
    vtbi=st.floats(min_value=0, max_value=1000),
)
def test_L3_A1_property_lost_program_needs_both_signs(
    read: float, volume: float, vtbi: float
) -> None:
    state = started().state.updated({"volume_read_ml": read, "vtbi_programmed_ml": 1000.0})
    said = lost_program(state, volume, vtbi)
    assert said == (volume < read - BACKWARDS_TOLERANCE_ML and abs(vtbi - 1000.0) > 0.5)
