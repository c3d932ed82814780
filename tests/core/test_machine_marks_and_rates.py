"""A8 alarm marks, the rates the pump is confirmed at (I10, L1), and what must stay stopped
(A1, A3), pinned at the cases the broader tests pass by (issue 22)."""

from __future__ import annotations

from datetime import timedelta

from machine_scenario import OTHER, minutes, started

from pumpctl.core.history import Sign
from pumpctl.core.machine import (
    AcknowledgeAlarm,
    ClearAlarm,
    CommandUnconfirmed,
    DeadlineKind,
    InfusionState,
    LinkLost,
    LinkRestored,
    MachineAlarm,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    RaiseAlarm,
    ReactionReported,
    Resolved,
    ResumeRequested,
    SetRate,
    Stop,
    StopPump,
    TimePassed,
    deadlines,
    decide,
)
from pumpctl.core.protocol import RowKind


def mark(state: InfusionState, kind: str) -> tuple[object, object, bool]:
    (found,) = [m for m in state.alarm_marks if m.kind == kind]
    return found.raised_at, found.acknowledged_by, found.ended


def test_A8_a_second_command_unconfirmed_is_a_new_alarm_unacknowledged() -> None:
    """One command's fate is one alarm: acknowledged, it stays acknowledged; the next command
    unconfirmed is a new alarm that sounds again."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(59))
    scenario.auto_confirm = False
    scenario.advance(minutes(1))
    (step,) = [c for c in scenario.state.outstanding if c.op == "set_rate"]
    scenario.send(CommandUnconfirmed(command_id=step.id))
    first = scenario.now
    assert mark(scenario.state, "command_unconfirmed") == (first, None, True)
    scenario.send(AcknowledgeAlarm(alarm="command_unconfirmed", actor="ann"))
    assert mark(scenario.state, "command_unconfirmed") == (first, "ann", True)
    # the step is put back (A3); the nurse clears the alarm; the next step goes out an
    # interval later and is unconfirmed again: a new alarm
    scenario.send(ClearAlarm(alarm="command_unconfirmed", actor="ann", role="nurse"))
    scenario.advance(minutes(60))
    (again,) = [c for c in scenario.state.outstanding if c.op == "set_rate"]
    assert again.id > step.id
    scenario.send(CommandUnconfirmed(command_id=again.id))
    assert mark(scenario.state, "command_unconfirmed") == (scenario.now, None, True)


def test_A8_a_latched_machine_alarm_s_cause_stands_until_cleared() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    over = decide(
        scenario.state,
        PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=80.0),
        scenario.now,
    )
    assert mark(over.state, "over_infusion") == (scenario.now, None, False)


def test_A8_clearing_one_alarm_keeps_another_s_acknowledgement() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    volume = scenario.pump.volume
    scenario.send(LinkLost())
    lost_at = scenario.now
    scenario.send(AcknowledgeAlarm(alarm="comm_loss", actor="ann"))
    scenario.now += minutes(1)
    scenario.send(LinkRestored(running=True, rate_ml_h=30.0, volume_infused_ml=volume))
    assert "rate_lower_than_expected" in scenario.state.latched
    scenario.send(ClearAlarm(alarm="rate_lower_than_expected", actor="bob", role="nurse"))
    assert mark(scenario.state, "comm_loss") == (lost_at, "ann", True)


def test_A1_A3_a_pump_read_running_while_a_clinician_must_clear_an_alarm_is_stopped() -> None:
    """Over-infusion stopped the pump (its stop confirmed); the pump read running again while
    only a clinician may clear that alarm is stopped again, loudly."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=80.0))
    assert "over_infusion" in scenario.state.latched
    assert not scenario.state.stop_outstanding
    scenario.auto_confirm = False
    decision = decide(
        scenario.state,
        PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=80.0),
        scenario.now,
    )
    assert isinstance(decision.commands[0], StopPump)
    kinds = [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)]
    assert kinds == [MachineAlarm.PUMP_NOT_STOPPED]


# --- I10, L1: the rates confirmed -------------------------------------------------------------


def test_I10_L1_a_step_confirmed_is_a_rate_change_from_its_confirmation() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(60))
    s = scenario.state
    assert [(p.at, p.rate_ml_h) for p in s.rate_history] == [
        (scenario.now - minutes(60), 50.0),
        (scenario.now, 100.0),
    ]
    assert s.last_change_at == scenario.now


def test_I10_L1_the_same_rate_confirmed_again_after_an_alarm_is_no_change() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(70))
    volume = scenario.pump.volume
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=volume))
    history = scenario.state.rate_history
    changed_at = scenario.state.last_change_at
    scenario.now += minutes(5)
    start = scenario.mark()
    scenario.send(ResumeRequested(actor="n"))
    assert [c.rate_ml_h for c in scenario.since(start) if isinstance(c, SetRate)] == [100.0]
    assert scenario.state.rate_history == history
    assert scenario.state.last_change_at == changed_at


def test_I10_L1_a_resume_below_1_ml_h_is_a_rate_change() -> None:
    scenario = started(RowKind.FIRST)
    for _ in range(6):
        scenario.advance(minutes(1))
        scenario.send(ReactionReported(grade=1, signs=OTHER, actor="n"))
        scenario.send(ResumeRequested(actor="n"))
    assert scenario.state.confirmed_rate_ml_h == 0.7
    assert scenario.state.last_change_at == scenario.now


def test_I10_a_stop_confirmed_twice_is_one_point_at_0() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="n"))
    points = scenario.state.rate_history
    assert points[-1].rate_ml_h == 0.0
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    assert scenario.state.rate_history == points


def test_A8_a_state_kept_before_marks_gets_one_per_alarm_with_its_rule_and_cause() -> None:
    """A stored state with alarms latched or reported and no marks: each gets a mark raised no
    later than now, under its own rule, ended if its cause no longer stands."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    old = scenario.state.updated(
        {
            "latched": frozenset({"comm_loss", "occlusion", "under_infusion"}),
            "alarms": frozenset({"occlusion"}),
            "alarm_marks": (),
        }
    )
    now = scenario.now + minutes(1)
    decision = decide(old, TimePassed(), now)
    assert [(m.kind, m.rule, m.raised_at, m.ended) for m in decision.state.alarm_marks] == [
        ("comm_loss", "A2", now, True),  # the link is up: its cause has ended
        ("occlusion", "A1", now, False),  # the pump still reports it
        ("under_infusion", "L3", now, False),  # latched until cleared
    ]


# --- what falls due on time alone -------------------------------------------------------------


def test_I4_a_resolved_bronchospasm_has_no_6_h_limit_left() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    scenario.send(ReactionReported(grade=2, signs=frozenset({Sign.BRONCHOSPASM}), actor="n"))
    assert DeadlineKind.BRONCHOSPASM_LIMIT in [d.kind for d in deadlines(scenario.state)]
    scenario.send(Resolved(actor="n"))
    assert DeadlineKind.BRONCHOSPASM_LIMIT not in [d.kind for d in deadlines(scenario.state)]


def test_I4_I5_after_a_stop_the_window_s_end_falls_due_before_the_hold_s_limit() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    scenario.send(ReactionReported(grade=3, signs=frozenset({Sign.BRONCHOSPASM}), actor="n"))
    scenario.send(Stop(reason="end", actor="dr"))
    onset = scenario.now
    assert [(d.kind, d.at) for d in deadlines(scenario.state)] == [
        (DeadlineKind.OBSERVATION_END, onset + timedelta(hours=2)),
        (DeadlineKind.BRONCHOSPASM_LIMIT, onset + timedelta(hours=6)),
    ]


def test_L1_the_next_step_is_never_less_than_an_interval_after_the_last_rate_change() -> None:
    """A full interval already counted at the rate, but the rate confirmed only 10 min ago:
    the step falls due 60 min after that confirmation."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    state = scenario.state.updated(
        {"at_rate_min": 60.0, "last_change_at": scenario.now - minutes(10)}
    )
    (step,) = [d for d in deadlines(state) if d.kind is DeadlineKind.ESCALATION]
    assert step.at == scenario.now + minutes(50)
