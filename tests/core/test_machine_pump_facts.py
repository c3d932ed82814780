"""Pump facts and command fates pinned fact by fact: A1-A4, A8, L3 (issue 22).

Each test feeds one concrete read-back, fate or staff action to `decide` and checks the exact
outcome a nurse and the audit trail see: which commands go out and in which order (I1: the
stop first), which alarm is raised under which rule with which words, what the audit trail
records, and the words and rule of every refusal (docs/clinical-rules.md, A1-A4, A8, L3).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from machine_scenario import OTHER, T0, Scenario, facts, minutes, planned, running_first, started

from pumpctl.core.machine import (
    AcknowledgeAlarm,
    BagReplaced,
    ClearAlarm,
    CommandConfirmed,
    CommandDenied,
    CommandUnconfirmed,
    Decision,
    Hold,
    InfusionPhase,
    InfusionState,
    LinkLost,
    LinkRestored,
    MachineAlarm,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    PumpPowerReset,
    RaiseAlarm,
    ReactionReported,
    Restarted,
    ResumeRequested,
    SafetyEnvelopeTripped,
    SetRate,
    Start,
    Stop,
    StopPump,
    decide,
)
from pumpctl.core.machine.pump import REFUSED_RUN_WORDS, lost_program
from pumpctl.core.machine.state import CommandOp, SentCommand
from pumpctl.core.protocol import RowKind
from pumpctl.core.rules import Rule


def starting() -> Scenario:
    """A first infusion just started, no fate known yet: clear-volume 1, VTBI 2 (1000 ml),
    rate 3 (50 ml/h), run 4."""
    scenario = Scenario(planned(RowKind.FIRST), auto_confirm=False)
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    return scenario


def running(after: float = 40.0) -> Scenario:
    """A first infusion run `after` minutes at 50 ml/h; later fates are fed by hand."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(after))
    scenario.auto_confirm = False
    return scenario


def confirmed(
    command_id: int,
    *,
    running: bool = False,
    rate: float = 0.0,
    volume: float = 0.0,
    vtbi: float | None = None,
) -> CommandConfirmed:
    return CommandConfirmed(
        command_id=command_id,
        running=running,
        rate_ml_h=rate,
        volume_infused_ml=volume,
        vtbi_ml=vtbi,
    )


def alarm(decision: Decision) -> RaiseAlarm:
    """The one alarm `decision` raises."""
    (raised,) = [c for c in decision.commands if isinstance(c, RaiseAlarm)]
    return raised


def alarm_fact(kind: MachineAlarm, rule: str, message: str) -> tuple[str, str, dict[str, object]]:
    return ("alarm", rule, {"kind": kind.value, "message": message})


def refused(decision: Decision, rule: str, reason: str) -> None:
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.rule, decision.refusal.reason) == (
        "rule",
        rule,
        reason,
    )
    assert decision.commands == ()


# --- A3: the fate of each kind of command ------------------------------------------------------


def test_A3_the_confirmation_of_a_command_never_sent_is_audited_as_unknown() -> None:
    scenario = running()
    volume = scenario.pump.volume
    event = confirmed(99, running=True, rate=50.0, volume=volume)
    decision = decide(scenario.state, event, scenario.now)
    assert decision.refusal is None
    assert decision.commands == ()
    assert facts(decision.audit) == [("confirmed", "A3", {"command_id": 99, "known": False})]


def test_L3_the_volume_cleared_is_the_new_baseline() -> None:
    scenario = starting()
    decision = decide(scenario.state, confirmed(1, volume=0.0), scenario.now)
    assert facts(decision.audit) == [
        ("volume_baseline", "L3", {"volume_ml": 0.0, "why": "volume cleared"})
    ]
    assert [c.id for c in decision.state.outstanding] == [2, 3, 4]
    assert decision.state.volume_read_ml == 0.0


def test_L3_a_vtbi_read_back_within_half_a_ml_is_the_vtbi_programmed() -> None:
    scenario = starting()
    decision = decide(scenario.state, confirmed(2, vtbi=1000.5), scenario.now)
    assert decision.commands == ()
    assert decision.state.vtbi_programmed_ml == 1000.5
    assert facts(decision.audit) == [
        ("volume_baseline", "L3", {"volume_ml": 0.0, "why": "new VTBI"})
    ]


@pytest.mark.parametrize(("vtbi", "shown"), [(999.4, "999.4"), (900.0, "900.0"), (None, "None")])
def test_L3_a_vtbi_read_back_other_than_the_bag_stops_the_pump_first(
    vtbi: float | None, shown: str
) -> None:
    """The rate and the run are still on their way: the pump may run, so it is stopped first,
    then the alarm says what was read back and what was programmed."""
    scenario = starting()
    decision = decide(scenario.state, confirmed(2, vtbi=vtbi), scenario.now)
    words = f"the pump reads back a VTBI of {shown} ml, 1000 ml was programmed"
    assert decision.commands == (
        StopPump(5),
        RaiseAlarm(MachineAlarm.PUMP_INCONSISTENT, words, Rule.L3),
    )
    assert decision.state.vtbi_programmed_ml is None
    assert facts(decision.audit) == [
        ("confirmed", "L3", {"command_id": 2, "vtbi_ml": vtbi}),
        alarm_fact(MachineAlarm.PUMP_INCONSISTENT, "L3", words),
    ]


def test_L3_a_wrong_vtbi_for_a_new_bag_while_stopped_needs_no_stop() -> None:
    """A new bag during an occlusion: clear-volume and VTBI only, the pump stopped; a wrong
    VTBI read back is an alarm and nothing is sent."""
    scenario = running()
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))

    bag = scenario.send(BagReplaced(prepared_at=scenario.now, actor="nurse"))
    vtbi_id = bag.pump_commands[1].id
    decision = decide(scenario.state, confirmed(vtbi_id, vtbi=500.0), scenario.now)
    assert [type(c) for c in decision.commands] == [RaiseAlarm]
    assert alarm(decision).kind is MachineAlarm.PUMP_INCONSISTENT


def test_A3_a_stop_confirmed_stopped_is_audited_with_its_id_and_records_rate_0() -> None:
    scenario = running()
    stop = scenario.send(Stop(reason="done", actor="nurse"))
    (command,) = stop.pump_commands
    scenario.pump.running = False
    decision = decide(
        scenario.state, confirmed(command.id, volume=scenario.pump.volume), scenario.now
    )
    s = decision.state
    assert (s.stop_unconfirmed, s.confirmed_rate_ml_h, s.pump_running) == (False, 0.0, False)
    assert s.rate_history[-1].rate_ml_h == 0.0
    assert s.rate_history[-1].at == scenario.now
    assert facts(decision.audit) == [("confirmed_stopped", "A3", {"command_id": command.id})]


def test_A3_a_stop_confirmed_with_the_pump_still_running_is_stopped_again_loudly() -> None:
    scenario = running()
    stop = scenario.send(Stop(reason="done", actor="nurse"))
    (command,) = stop.pump_commands
    volume = scenario.pump.volume
    decision = decide(
        scenario.state, confirmed(command.id, running=True, rate=50.0, volume=volume), scenario.now
    )
    words = "pump running at 50 ml/h while it must be stopped: clamp the line"
    assert decision.commands == (
        StopPump(command.id + 1),
        RaiseAlarm(MachineAlarm.PUMP_NOT_STOPPED, words, Rule.A3),
    )
    assert decision.state.stop_unconfirmed
    assert facts(decision.audit) == [alarm_fact(MachineAlarm.PUMP_NOT_STOPPED, "A3", words)]
    # A3: while that stop is on its way, a read running waits for its fate
    again = decide(
        decision.state,
        PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=volume),
        scenario.now,
    )
    assert again.commands == ()
    assert again.audit == ()
    # its fate: still running: the stop goes again, first, audited; the alarm is not repeated
    fate = decide(
        decision.state,
        confirmed(command.id + 1, running=True, rate=50.0, volume=volume),
        scenario.now,
    )
    assert fate.commands == (StopPump(command.id + 2),)
    assert facts(fate.audit) == [("stop_resent", "A3", {"rate_ml_h": 50.0})]
    # and a read stopped at last confirms the stop, late
    late = decide(fate.state, PumpConfirmedStopped(volume_infused_ml=volume), scenario.now)
    assert not late.state.stop_unconfirmed
    assert late.state.confirmed_rate_ml_h == 0.0
    assert late.state.rate_history[-1].rate_ml_h == 0.0
    assert facts(late.audit) == [("confirmed_stopped", "A3", {"late": True})]


def test_A1_a_step_confirmed_while_the_pump_stands_in_an_alarm_is_not_the_step() -> None:
    """60 min at 50 ml/h: the step to 100 goes out; the pump stops on an occlusion before it
    ran it: its confirmation (stopped) puts the step back to 50 (A1: same rate after)."""
    scenario = running(59.0)
    scenario.advance(minutes(1))
    (step,) = [c for c in scenario.since(0) if isinstance(c, SetRate) and c.rate_ml_h == 100.0]
    assert scenario.state.rate_ml_h == 100.0
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    decision = decide(scenario.state, confirmed(step.id, volume=scenario.pump.volume), scenario.now)
    assert decision.state.rate_ml_h == 50.0
    assert decision.state.confirmed_rate_ml_h == 50.0
    assert facts(decision.audit)[0] == (
        "confirmed",
        "A1",
        {"command_id": step.id, "while_stopped": True},
    )


def test_A3_the_run_confirmed_at_its_rate_is_running_and_audited_with_its_read_back() -> None:
    scenario = starting()
    for command_id in (1, 2, 3):
        scenario.send(confirmed(command_id, vtbi=1000.0 if command_id == 2 else None))
    assert scenario.phase() is InfusionPhase.STARTING
    decision = decide(scenario.state, confirmed(4, running=True, rate=50.0), scenario.now)
    assert decision.state.phase is InfusionPhase.RUNNING
    assert decision.state.confirmed_rate_ml_h == 50.0
    assert decision.state.highest_rate_ml_h == 50.0
    assert decision.commands == ()
    assert facts(decision.audit) == [
        (
            "confirmed_running",
            "A3",
            {"command_id": 4, "rate_ml_h": 50.0, "volume_infused_ml": 0.0},
        )
    ]


def test_A3_A2_a_run_read_back_at_another_rate_is_no_confirmation_and_is_set_back_down() -> None:
    scenario = starting()
    for command_id in (1, 2, 3):
        scenario.send(confirmed(command_id, vtbi=1000.0 if command_id == 2 else None))
    decision = decide(scenario.state, confirmed(4, running=True, rate=50.2), scenario.now)
    assert decision.state.phase is InfusionPhase.STARTING
    assert decision.state.confirmed_rate_ml_h == 0.0
    assert [type(c) for c in decision.commands] == [SetRate, RaiseAlarm]
    assert alarm(decision).message == "pump at 50.2 ml/h, faster than 50 ml/h: set back down"


# --- A3: commands refused or never confirmed --------------------------------------------------


def test_A3_a_fate_for_a_command_not_awaiting_one_is_refused_with_its_id() -> None:
    scenario = running()
    decision = decide(scenario.state, CommandUnconfirmed(command_id=42), scenario.now)
    refused(decision, "A3", "command 42 is not awaiting its fate")


@pytest.mark.parametrize("denied", [True, False])
def test_A3_a_stop_refused_or_unconfirmed_is_the_loudest_alarm(denied: bool) -> None:
    scenario = running()
    (stop,) = scenario.send(Stop(reason="done", actor="nurse")).pump_commands
    event = (
        CommandDenied(command_id=stop.id, reason="busy")
        if denied
        else CommandUnconfirmed(command_id=stop.id)
    )
    decision = decide(scenario.state, event, scenario.now)
    why = "busy" if denied else "no confirmation in time"
    words = f"pump did not stop ({why}): clamp the line"
    assert decision.commands == (RaiseAlarm(MachineAlarm.PUMP_NOT_STOPPED, words, Rule.A3),)
    assert decision.state.stop_unconfirmed
    kind = "command_denied" if denied else "command_unconfirmed"
    assert facts(decision.audit) == [
        (kind, "A3", {"command_id": stop.id, "op": "stop", "reason": why}),
        alarm_fact(MachineAlarm.PUMP_NOT_STOPPED, "A3", words),
    ]


def step_out() -> tuple[Scenario, int]:
    """60 min at 50 ml/h: the step to 100 ml/h is sent, its fate not yet known."""
    scenario = running(59.0)
    scenario.advance(minutes(1))
    (step,) = [c for c in scenario.since(0) if isinstance(c, SetRate) and c.rate_ml_h == 100.0]
    return scenario, step.id


@pytest.mark.parametrize("denied", [True, False])
def test_A3_a_step_refused_or_unconfirmed_while_running_goes_back_to_the_rate_run(
    denied: bool,
) -> None:
    scenario, step = step_out()
    event = (
        CommandDenied(command_id=step, reason="keypad locked")
        if denied
        else CommandUnconfirmed(command_id=step)
    )
    decision = decide(scenario.state, event, scenario.now)
    assert decision.state.rate_ml_h == 50.0
    why = "keypad locked" if denied else "no confirmation in time"
    kind = MachineAlarm.COMMAND_DENIED if denied else MachineAlarm.COMMAND_UNCONFIRMED
    words = f"the pump did not carry out set_rate ({why})"
    assert decision.commands == (RaiseAlarm(kind, words, Rule.A3),)
    assert facts(decision.audit) == [
        (kind.value, "A3", {"command_id": step, "op": "set_rate", "reason": why}),
        alarm_fact(kind, "A3", words),
    ]


def test_A1_A3_a_step_refused_while_the_pump_reports_an_alarm_raises_nothing_more() -> None:
    scenario, step = step_out()
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    decision = decide(scenario.state, CommandDenied(command_id=step, reason="x"), scenario.now)
    assert decision.commands == ()
    assert decision.state.rate_ml_h == 50.0


def test_A3_a_step_dropped_before_it_was_sent_raises_nothing() -> None:
    scenario, step = step_out()
    event = CommandDenied(command_id=step, reason="queue full", dropped=True)
    decision = decide(scenario.state, event, scenario.now)
    assert decision.commands == ()
    assert decision.state.rate_ml_h == 50.0


def stopped_for_a_resume() -> tuple[Scenario, int]:
    """An occlusion cleared, a nurse resumes: rate and run sent, the pump still stopped."""
    scenario = running()
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    scenario.send(PumpAlarmCleared(alarm="occlusion"))

    resume = scenario.send(ResumeRequested(actor="nurse"))
    (run,) = [c for c in resume.pump_commands if c.op == "start"]
    scenario.pump.running = False
    return scenario, run.id


def test_A1_a_run_the_pump_refuses_says_to_clear_the_alarm_at_the_pump() -> None:
    scenario, run = stopped_for_a_resume()
    decision = decide(scenario.state, CommandDenied(command_id=run, reason="alarm"), scenario.now)
    words = f"{REFUSED_RUN_WORDS} (alarm)"
    assert REFUSED_RUN_WORDS == "the pump refused to run: clear the alarm at the pump, then resume"
    assert decision.commands == (RaiseAlarm(MachineAlarm.COMMAND_DENIED, words, Rule.A1),)
    assert facts(decision.audit)[-1] == alarm_fact(MachineAlarm.COMMAND_DENIED, "A1", words)


def test_A3_a_run_never_sent_says_so_under_A3() -> None:
    scenario, run = stopped_for_a_resume()
    event = CommandDenied(command_id=run, reason="never sent", unsent=True)
    decision = decide(scenario.state, event, scenario.now)
    words = "start was never sent"
    assert decision.commands == (RaiseAlarm(MachineAlarm.COMMAND_DENIED, words, Rule.A3),)


def test_A3_a_run_unconfirmed_while_stopped_is_an_unconfirmed_alarm() -> None:
    scenario, run = stopped_for_a_resume()
    decision = decide(scenario.state, CommandUnconfirmed(command_id=run), scenario.now)
    words = "the pump did not carry out start (no confirmation in time)"
    assert decision.commands == (RaiseAlarm(MachineAlarm.COMMAND_UNCONFIRMED, words, Rule.A3),)


@pytest.mark.parametrize("denied", [True, False])
def test_L3_a_vtbi_not_taken_while_the_pump_may_run_stops_it_first(denied: bool) -> None:
    scenario = starting()
    event = CommandDenied(command_id=2, reason="x") if denied else CommandUnconfirmed(command_id=2)
    decision = decide(scenario.state, event, scenario.now)
    assert decision.pump_commands == (StopPump(5),)
    assert decision.commands[0] == StopPump(5)


# --- A1: the pump's own alarms ----------------------------------------------------------------


def test_A1_a_pump_alarm_is_audited_once_with_the_running_time_and_its_clear_once() -> None:
    scenario = running(40.0)
    raised = decide(scenario.state, PumpAlarmRaised(alarm="occlusion"), scenario.now)
    assert raised.state.alarms == {"occlusion"}
    assert "occlusion" in raised.state.latched
    assert facts(raised.audit) == [
        ("pump_alarm", "A1", {"alarm": "occlusion", "running_min": pytest.approx(40.0)})
    ]
    assert [(m.kind, m.rule, m.raised_at) for m in raised.state.alarm_marks] == [
        ("occlusion", Rule.A1, scenario.now)
    ]
    again = decide(raised.state, PumpAlarmRaised(alarm="occlusion"), scenario.now)
    assert again.audit == ()
    cleared = decide(raised.state, PumpAlarmCleared(alarm="occlusion"), scenario.now)
    assert cleared.state.alarms == frozenset()
    assert "occlusion" in cleared.state.latched  # A1: latched until a nurse clears it
    assert facts(cleared.audit) == [("pump_alarm_cleared", "A1", {"alarm": "occlusion"})]
    unknown = decide(raised.state, PumpAlarmCleared(alarm="air_in_line"), scenario.now)
    assert unknown.audit == ()
    assert unknown.state.alarms == {"occlusion"}


# --- A2, A4: the link and restarts ------------------------------------------------------------


def test_A2_the_link_lost_is_one_alarm_in_words() -> None:
    scenario = running()
    lost = decide(scenario.state, LinkLost(), scenario.now)
    words = "no valid status from the pump"
    assert lost.commands == (RaiseAlarm(MachineAlarm.COMM_LOSS, words, Rule.A2),)
    assert lost.state.link_lost
    assert decide(lost.state, LinkLost(), scenario.now).commands == ()


@pytest.mark.parametrize("restart", [False, True])
def test_A2_A4_the_link_back_is_audited_with_the_pump_read(restart: bool) -> None:
    scenario = running()
    volume = scenario.pump.volume
    lost = scenario.send(LinkLost()).state
    kind = Restarted if restart else LinkRestored
    event = kind(running=True, rate_ml_h=50.0, volume_infused_ml=volume)
    decision = decide(lost, event, scenario.now)
    assert not decision.state.link_lost
    assert facts(decision.audit)[0] == (
        "restarted" if restart else "link_restored",
        "A4" if restart else "A2",
        {"running": True, "rate_ml_h": 50.0, "volume_infused_ml": volume},
    )


@pytest.mark.parametrize(
    ("make", "rule", "unexplained"),
    [(LinkRestored, "A2", False), (Restarted, "A4", True)],
)
def test_A2_A4_a_pump_found_stopped_when_the_link_is_back_is_left_stopped_in_words(
    make: type[LinkRestored] | type[Restarted], rule: str, unexplained: bool
) -> None:
    scenario = running()
    volume = scenario.pump.volume
    lost = scenario.send(LinkLost()).state.updated({"pump_running": False})
    decision = decide(
        lost, make(running=False, rate_ml_h=0.0, volume_infused_ml=volume), scenario.now
    )
    words = f"the pump is stopped ({rule}): left stopped until a nurse resumes"
    assert decision.commands == (RaiseAlarm(MachineAlarm.PUMP_STOPPED, words, Rule(rule)),)
    assert decision.state.unexplained_stop is unexplained


def test_A1_a_pump_found_stopped_on_a_plain_read_is_left_stopped_under_A3() -> None:
    scenario = running()
    decision = decide(
        scenario.state, PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume), scenario.now
    )
    words = "the pump is stopped (A3): left stopped until a nurse resumes"
    assert decision.commands == (RaiseAlarm(MachineAlarm.PUMP_STOPPED, words, Rule.A3),)
    assert not decision.state.unexplained_stop
    assert not decision.state.pump_running
    assert decision.state.pump_rate_ml_h == 0.0


def test_A4_a_pump_found_stopped_after_a_restart_with_commands_out_is_an_alarm() -> None:
    """After a restart the fate of what was sent is unknown: a stopped pump is not 'a run on
    its way' (A4), while with the link back (A2) it is."""
    scenario, _ = step_out()
    volume = scenario.pump.volume
    lost = scenario.send(LinkLost()).state.updated({"pump_running": False})
    assert lost.outstanding
    restarted = decide(
        lost, Restarted(running=False, rate_ml_h=0.0, volume_infused_ml=volume), scenario.now
    )
    assert alarm(restarted).kind is MachineAlarm.PUMP_STOPPED
    back = decide(
        lost, LinkRestored(running=False, rate_ml_h=0.0, volume_infused_ml=volume), scenario.now
    )
    assert back.commands == ()


@pytest.mark.parametrize(
    ("make", "rule"), [(PumpConfirmedRunning, "A2"), (LinkRestored, "A2"), (Restarted, "A4")]
)
def test_A2_a_pump_found_slower_is_left_as_it_is_with_one_alarm(
    make: type[PumpConfirmedRunning] | type[LinkRestored] | type[Restarted], rule: str
) -> None:
    scenario = running()
    volume = scenario.pump.volume
    state = scenario.state
    if make is not PumpConfirmedRunning:
        state = scenario.send(LinkLost()).state
    event = (
        PumpConfirmedRunning(rate_ml_h=30.0, volume_infused_ml=volume)
        if make is PumpConfirmedRunning
        else make(running=True, rate_ml_h=30.0, volume_infused_ml=volume)  # type: ignore[call-arg]
    )
    decision = decide(state, event, scenario.now)
    words = "pump at 30 ml/h, 50 ml/h expected: left as is until a nurse acts"
    assert decision.commands == (RaiseAlarm(MachineAlarm.RATE_LOWER, words, Rule(rule)),)
    assert decision.state.pump_rate_ml_h == 30.0
    assert decision.state.rate_ml_h == 50.0
    again = decide(decision.state, event, scenario.now)
    assert again.commands == ()  # said once while latched


def test_A2_a_pump_found_faster_is_set_back_down_first_in_words() -> None:
    scenario = running()
    first = scenario.state.next_command_id
    event = PumpConfirmedRunning(rate_ml_h=80.0, volume_infused_ml=scenario.pump.volume)
    decision = decide(scenario.state, event, scenario.now)
    words = "pump at 80 ml/h, faster than 50 ml/h: set back down"
    setback, raised = decision.commands
    assert isinstance(setback, SetRate)
    assert (setback.id, setback.rate_ml_h) == (first, 50.0)
    assert setback.decision.bound_by.rule == "A2"
    assert raised == RaiseAlarm(MachineAlarm.RATE_TOO_HIGH, words, Rule.A2)
    assert [(c.id, c.rate_ml_h) for c in decision.state.outstanding] == [(first, 50.0)]


def test_A2_A3_a_read_within_half_the_resolution_of_the_step_is_the_step() -> None:
    scenario = running()
    for rate in (49.96, 50.04):
        event = PumpConfirmedRunning(rate_ml_h=rate, volume_infused_ml=scenario.pump.volume)
        assert decide(scenario.state, event, scenario.now).commands == ()


def test_A3_before_a_steps_fate_any_rate_up_to_the_step_is_expected() -> None:
    scenario, _ = step_out()
    volume = scenario.pump.volume
    for rate in (0.1, 50.0, 100.0):
        event = PumpConfirmedRunning(rate_ml_h=rate, volume_infused_ml=volume)
        assert decide(scenario.state, event, scenario.now).commands == ()
    event = PumpConfirmedRunning(rate_ml_h=100.2, volume_infused_ml=volume)
    assert alarm(decide(scenario.state, event, scenario.now)).kind is MachineAlarm.RATE_TOO_HIGH


# --- L3, A1: power reset and completion -------------------------------------------------------


def test_L3_A1_a_power_reset_counts_the_most_given_and_leaves_the_pump_stopped() -> None:
    scenario = running(60.0)  # 50 ml given, the step to 100 confirmed just now
    scenario.send(PumpConfirmedRunning(rate_ml_h=100.0, volume_infused_ml=scenario.pump.volume))
    before = scenario.state
    decision = decide(before, PumpPowerReset(volume_infused_ml=0.0), scenario.now)
    s = decision.state
    given = pytest.approx(50.0, abs=0.01)
    assert s.delivered_before_bag_ml == given
    assert s.bag_volume_ml == pytest.approx(950.0, abs=0.01)
    assert (s.vtbi_programmed_ml, s.pump_running, s.pump_rate_ml_h) == (None, False, 0.0)
    assert s.volume_read_ml == 0.0
    words = "the pump lost power: left stopped until a nurse resumes"
    assert decision.commands == (RaiseAlarm(MachineAlarm.PUMP_STOPPED, words, Rule.A1),)
    assert facts(decision.audit) == [
        ("power_reset", "A1", {"given_ml": given}),
        ("volume_baseline", "L3", {"volume_ml": 0.0, "why": "power reset"}),
        alarm_fact(MachineAlarm.PUMP_STOPPED, "A1", words),
    ]


def test_A1_a_power_reset_during_a_pump_alarm_or_after_the_stop_raises_no_more() -> None:
    scenario = running()
    alarmed = scenario.send(PumpAlarmRaised(alarm="occlusion")).state
    decision = decide(alarmed, PumpPowerReset(volume_infused_ml=0.0), scenario.now)
    assert decision.commands == ()
    stopped = running()
    stopped.auto_confirm = True
    stopped.send(Stop(reason="done", actor="nurse"))
    after = decide(stopped.state, PumpPowerReset(volume_infused_ml=0.0), stopped.now)
    assert after.commands == ()


def test_L3_a_completion_while_paused_is_inconsistent_in_words() -> None:
    scenario = running()
    scenario.pump.running = False
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))

    paused = scenario.send(ReactionReported(grade=1, signs=OTHER, actor="n")).state
    assert paused.phase is InfusionPhase.PAUSED
    decision = decide(paused, PumpCompleted(volume_infused_ml=1000.0), scenario.now)
    words = "the pump reported the VTBI delivered while the infusion is paused"
    assert decision.commands == (RaiseAlarm(MachineAlarm.PUMP_INCONSISTENT, words, Rule.L3),)
    assert decision.state.phase is InfusionPhase.PAUSED


def test_L3_an_early_completion_says_what_was_given_of_what() -> None:
    scenario = running()
    volume = scenario.pump.volume
    decision = decide(scenario.state, PumpCompleted(volume_infused_ml=volume), scenario.now)
    words = (
        f"the pump reported completion at {volume:g} of 1000 ml: the infusion stays open "
        "for a nurse"
    )
    assert decision.commands == (RaiseAlarm(MachineAlarm.UNDER_INFUSION, words, Rule.L3),)
    assert decision.state.phase is InfusionPhase.RUNNING
    assert (decision.state.pump_running, decision.state.pump_rate_ml_h) == (False, 0.0)
    unconfirmed = scenario.state.updated({"vtbi_programmed_ml": None})
    other = decide(unconfirmed, PumpCompleted(volume_infused_ml=volume), scenario.now)
    assert alarm(other).message == (
        f"the pump reported completion at {volume:g} of an unconfirmed ml: the infusion stays "
        "open for a nurse"
    )


def test_L3_a_completion_of_the_whole_bag_is_audited_with_the_infusion_s_figures() -> None:
    scenario = started(RowKind.FIRST)
    scenario.run_to_end()
    assert scenario.phase() is InfusionPhase.COMPLETED
    (done,) = [d for d in scenario.decisions if any(a.type == "completed" for a in d.audit)]
    s = done.state
    assert (s.outstanding, s.pump_running, s.confirmed_rate_ml_h) == ((), False, 0.0)
    assert s.rate_history[-1].rate_ml_h == 0.0
    assert facts(done.audit)[-1] == (
        "completed",
        "L3",
        {
            "running_min": pytest.approx(390.0),
            "delivered_ml": pytest.approx(1000.0),
            "highest_rate_ml_h": 200.0,
        },
    )


# --- A1, A8: staff on alarms ------------------------------------------------------------------


def with_alarms() -> InfusionState:
    """Running with the link lost and an occlusion reported, the step at 50 ml/h."""
    scenario = running()
    scenario.send(LinkLost())
    return scenario.send(PumpAlarmRaised(alarm="occlusion")).state


@pytest.mark.parametrize(
    ("alarm_name", "role", "rule", "reason"),
    [
        ("air_in_line", "nurse", "A1", "no alarm 'air_in_line' is raised"),
        ("occlusion", "nurse", "A1", "the pump still reports occlusion"),
        ("comm_loss", "nurse", "A2", "the link to the pump is still lost"),
    ],
)
def test_A1_A2_a_clear_the_cause_still_stands_for_is_refused_in_words(
    alarm_name: str, role: str, rule: str, reason: str
) -> None:
    state = with_alarms()
    event = ClearAlarm(alarm=alarm_name, actor="nurse", role=role)  # type: ignore[arg-type]
    decision = decide(state, event, state.last_event_at)  # type: ignore[arg-type]
    refused(decision, rule, reason)
    assert decision.state.latched == state.latched


def test_A1_only_a_clinician_clears_a_safety_envelope_alarm() -> None:
    scenario = running()
    tripped = decide(
        scenario.state, SafetyEnvelopeTripped(reason="rate above 200", rule=Rule.L2), scenario.now
    )
    words = "safety envelope: rate above 200: pump stopped; a clinician must check and clear"
    assert tripped.commands == (
        StopPump(scenario.state.next_command_id),
        RaiseAlarm(MachineAlarm.SAFETY_ENVELOPE, words, Rule.L2),
    )
    event = ClearAlarm(alarm="safety_envelope", actor="nurse", role="nurse")
    refused(
        decide(tripped.state, event, scenario.now), "A1", "only a clinician clears safety_envelope"
    )


def test_A3_clears_wait_for_the_stop_and_for_every_fate() -> None:
    scenario = running()
    (stop,) = scenario.send(Stop(reason="done", actor="nurse")).pump_commands
    state = scenario.send(CommandUnconfirmed(command_id=stop.id)).state
    event = ClearAlarm(alarm="pump_not_stopped", actor="nurse", role="nurse")
    refused(decide(state, event, scenario.now), "A3", "the pump is not yet confirmed stopped")
    scenario2, step = step_out()
    scenario2.send(CommandUnconfirmed(command_id=step))
    scenario2.send(Stop(reason="done", actor="nurse"))  # a stop awaiting its fate
    event = ClearAlarm(alarm="command_unconfirmed", actor="nurse", role="nurse")
    refused(
        decide(scenario2.state, event, scenario2.now), "A3", "a command's fate is not yet known"
    )


def test_A2_a_clear_of_comm_loss_is_audited_under_A2_and_restarts_the_interval() -> None:
    scenario = running(40.0)
    scenario.send(LinkLost())
    volume = scenario.pump.volume
    scenario.send(LinkRestored(running=True, rate_ml_h=50.0, volume_infused_ml=volume))
    assert scenario.state.at_rate_min == pytest.approx(40.0)
    event = ClearAlarm(alarm="comm_loss", actor="ann", role="nurse")
    decision = decide(scenario.state, event, scenario.now)
    assert decision.state.at_rate_min == 0.0
    assert "comm_loss" not in decision.state.latched
    assert facts(decision.audit) == [
        ("alarm_cleared", "A2", {"alarm": "comm_loss", "actor": "ann", "role": "nurse"})
    ]


def test_A1_a_clear_of_the_pump_s_own_alarm_is_audited_under_A1_and_keeps_the_interval() -> None:
    scenario = running(40.0)
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    event = ClearAlarm(alarm="occlusion", actor="ann", role="clinician")
    decision = decide(scenario.state, event, scenario.now)
    assert decision.state.at_rate_min == pytest.approx(40.0)
    assert facts(decision.audit) == [
        ("alarm_cleared", "A1", {"alarm": "occlusion", "actor": "ann", "role": "clinician"})
    ]


def test_A8_an_acknowledgement_is_audited_under_the_alarm_s_rule_once() -> None:
    state = with_alarms()
    now = state.last_event_at
    assert now is not None
    unknown = decide(state, AcknowledgeAlarm(alarm="air_in_line", actor="ann"), now)
    refused(unknown, "A8", "no alarm 'air_in_line' is raised")
    decision = decide(state, AcknowledgeAlarm(alarm="comm_loss", actor="ann"), now)
    assert facts(decision.audit) == [
        (
            "alarm_acknowledged",
            "A2",
            {"alarm": "comm_loss", "priority": "high", "actor": "ann"},
        )
    ]
    (mark,) = [m for m in decision.state.alarm_marks if m.kind == "comm_loss"]
    assert (mark.acknowledged_by, mark.acknowledged_at) == ("ann", now)
    twice = decide(decision.state, AcknowledgeAlarm(alarm="comm_loss", actor="bob"), now)
    refused(twice, "A8", "comm_loss was already acknowledged by ann")


# --- boundaries and orders the examples above do not reach ------------------------------------


def at_the_bag_warning() -> Scenario:
    """Held at 50 ml/h (L7) up to one instant before the bag warning (14 h after preparing)."""
    scenario = started(RowKind.FIRST)
    scenario.send(Hold(actor="dr"))
    scenario.advance(timedelta(hours=14) - minutes(1))
    assert not scenario.alarms()
    scenario.now += minutes(1)
    scenario.pump.infuse(minutes(1))
    scenario.auto_confirm = False
    return scenario


def test_A2_I1_the_set_back_goes_before_anything_else_of_its_decision() -> None:
    """A fast read at the instant the bag warning falls due: the set-back is the decision's
    first command, ahead of the warning."""
    scenario = at_the_bag_warning()
    event = PumpConfirmedRunning(rate_ml_h=80.0, volume_infused_ml=scenario.pump.volume)
    decision = decide(scenario.state, event, scenario.now)
    assert [type(c) for c in decision.commands] == [SetRate, RaiseAlarm, RaiseAlarm]
    setback = decision.commands[0]
    assert isinstance(setback, SetRate)
    assert setback.decision.bound_by.reason == "the current step 50 ml/h"
    kinds = [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)]
    assert kinds == [MachineAlarm.BAG_EXPIRING, MachineAlarm.RATE_TOO_HIGH]


def test_L2_I1_the_envelope_s_stop_goes_first_under_the_rule_it_saw_broken() -> None:
    scenario = at_the_bag_warning()
    event = SafetyEnvelopeTripped(reason="rise too soon", rule=Rule.L1)
    decision = decide(scenario.state, event, scenario.now)
    words = "safety envelope: rise too soon: pump stopped; a clinician must check and clear"
    assert decision.commands[0] == StopPump(scenario.state.next_command_id)
    assert decision.commands[-1] == RaiseAlarm(MachineAlarm.SAFETY_ENVELOPE, words, Rule.L1)
    assert facts(decision.audit)[-1] == alarm_fact(MachineAlarm.SAFETY_ENVELOPE, "L1", words)


def test_A3_a_step_refused_before_the_pump_ever_ran_keeps_the_step() -> None:
    """Nothing was confirmed running yet: there is no rate to go back to (the step stays)."""
    scenario = starting()
    decision = decide(scenario.state, CommandDenied(command_id=3, reason="x"), scenario.now)
    assert decision.state.rate_ml_h == 50.0


def test_A3_a_step_refused_goes_back_to_a_rate_run_below_1_ml_h() -> None:
    scenario, step = step_out()
    state = scenario.state.updated({"confirmed_rate_ml_h": 0.7})
    decision = decide(state, CommandDenied(command_id=step, reason="x"), scenario.now)
    assert decision.state.rate_ml_h == 0.7


def test_A2_A4_a_state_taken_as_link_lost_with_no_alarm_raises_comm_loss() -> None:
    """A state rebuilt after a restart is taken as a lost link until the pump is read (A4):
    when the link is then found lost, the alarm is raised."""
    scenario = running()
    state = scenario.state.updated({"link_lost": True})
    decision = decide(state, LinkLost(), scenario.now)
    assert [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)] == [
        MachineAlarm.COMM_LOSS
    ]


def test_L3_A1_a_power_reset_with_less_than_1_ml_left_leaves_what_is_left() -> None:
    scenario = running()
    state = scenario.state.updated(
        {"bag_infused_ml": 999.6, "volume_read_ml": 999.6, "volume_most_ml": 999.6}
    )
    decision = decide(state, PumpPowerReset(volume_infused_ml=0.0), scenario.now)
    assert decision.state.bag_volume_ml == pytest.approx(0.4)
    assert decision.state.delivered_before_bag_ml == pytest.approx(999.6)


def test_L3_a_completion_within_1_ml_of_the_vtbi_and_of_the_whole_completes() -> None:
    scenario = running()
    full = {"bag_volume_ml": 999.0, "vtbi_programmed_ml": 999.0, "volume_bound_ml": 999.0}
    state = scenario.state.updated({**full, "volume_expected_ml": 999.0})
    decision = decide(state, PumpCompleted(volume_infused_ml=998.0), scenario.now)
    assert decision.state.phase is InfusionPhase.COMPLETED
    assert decision.commands == ()
    short = decide(state, PumpCompleted(volume_infused_ml=997.9), scenario.now)
    assert short.state.phase is InfusionPhase.RUNNING


def test_L9_A1_the_bag_expired_alarm_is_cleared_only_once_a_new_bag_is_in() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(Hold(actor="dr"))
    scenario.advance(timedelta(hours=15))
    assert scenario.state.bag_expired
    clear = ClearAlarm(alarm="bag_expired", actor="ann", role="nurse")
    refused(
        decide(scenario.state, clear, scenario.now),
        "L9",
        "the bag is still past its stability: replace it first",
    )
    # the warning is cleared while the bag is out of date all the same
    warning = ClearAlarm(alarm="bag_expiring", actor="ann", role="nurse")
    assert decide(scenario.state, warning, scenario.now).refusal is None
    scenario.send(BagReplaced(prepared_at=scenario.now, actor="ann"))
    decision = decide(scenario.state, clear, scenario.now)
    assert decision.refusal is None
    assert facts(decision.audit) == [
        ("alarm_cleared", "L9", {"alarm": "bag_expired", "actor": "ann", "role": "nurse"})
    ]


def test_L3_A1_lost_program_needs_the_vtbi_more_than_half_a_ml_off() -> None:
    scenario = running()
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=scenario.pump.volume))
    state = scenario.state
    assert state.vtbi_programmed_ml == 1000.0
    assert state.volume_read_ml == pytest.approx(100 / 3)
    assert not lost_program(state, 0.0, 1000.5)
    assert lost_program(state, 0.0, 1000.6)


@pytest.mark.parametrize("stop_confirmed", [True, False])
def test_L3_A4_a_pump_that_ran_on_while_it_had_to_be_stopped_is_judged_for_over_infusion(
    stop_confirmed: bool,
) -> None:
    """Paused by a reaction at 90 min (100 ml/h, its stop confirmed or still on its way), yet
    the pump ran on for 10 min the restarted controller's clock never saw: its counter is not
    taken as given (A4), it is judged against the bound: over-infusion, and the pump stopped."""
    scenario = running(90.0)
    scenario.auto_confirm = stop_confirmed
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    assert scenario.state.stop_outstanding is not stop_confirmed
    scenario.pump.running = True
    scenario.pump.infuse(minutes(10))
    stored = InfusionState.from_json(scenario.state.to_json()).updated({"link_lost": True})
    event = Restarted(running=True, rate_ml_h=100.0, volume_infused_ml=scenario.pump.volume)
    decision = decide(stored, event, scenario.now)
    kinds = [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)]
    assert MachineAlarm.OVER_INFUSION in kinds
    assert decision.state.volume_bound_ml == stored.volume_bound_ml


# --- I1: a stop is the first command of its decision -----------------------------------------
# The bag was prepared 13 h 59 min before the start: its warning (L9) falls due one minute in,
# and the warning's alarm is then in the same decision as the fact that arrives at that instant.

EARLY_BAG = T0 - timedelta(hours=14) + minutes(1)


def starting_with_an_old_bag() -> Scenario:
    scenario = Scenario(planned(RowKind.FIRST, prepared_at=EARLY_BAG), auto_confirm=False)
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.now += minutes(1)
    return scenario


def first_is_the_stop(decision: Decision, *, alarms: list[MachineAlarm]) -> None:
    assert isinstance(decision.commands[0], StopPump)
    kinds = [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)]
    assert kinds == alarms


@pytest.mark.parametrize("fate", ["wrong", "denied"])
def test_L3_I1_a_vtbi_not_taken_stops_the_pump_ahead_of_an_alarm_due_at_that_instant(
    fate: str,
) -> None:
    scenario = starting_with_an_old_bag()
    event = confirmed(2, vtbi=900.0) if fate == "wrong" else CommandDenied(command_id=2, reason="x")
    decision = decide(scenario.state, event, scenario.now)
    second = MachineAlarm.PUMP_INCONSISTENT if fate == "wrong" else MachineAlarm.COMMAND_DENIED
    first_is_the_stop(decision, alarms=[MachineAlarm.BAG_EXPIRING, second])


def paused_with_an_old_bag() -> Scenario:
    """Started on the old bag, run 30 s at 50 ml/h, paused by a grade 1 reaction (its stop
    confirmed), 30 s before the bag warning."""
    scenario = Scenario(planned(RowKind.FIRST, prepared_at=EARLY_BAG))
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.advance(timedelta(seconds=30))
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=scenario.pump.volume))
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
    assert not scenario.state.stop_outstanding
    scenario.now += timedelta(seconds=30)
    scenario.auto_confirm = False
    return scenario


def test_A3_I1_a_paused_pump_read_running_is_stopped_ahead_of_an_alarm_due_then() -> None:
    scenario = paused_with_an_old_bag()
    volume = scenario.pump.volume
    decision = decide(
        scenario.state, PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=volume), scenario.now
    )
    first_is_the_stop(decision, alarms=[MachineAlarm.BAG_EXPIRING, MachineAlarm.PUMP_NOT_STOPPED])


def test_A2_A3_I1_a_bad_read_of_a_paused_pump_running_still_stops_it_first_once() -> None:
    """A volume gone backwards is not taken (A2), but a pump read running while it must be
    stopped is stopped at once, first; while that stop is on its way, not again."""
    scenario = paused_with_an_old_bag()
    assert scenario.state.volume_read_ml == pytest.approx(50 / 120)
    bad = PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=0.0)
    decision = decide(scenario.state, bad, scenario.now)
    first_is_the_stop(decision, alarms=[MachineAlarm.BAG_EXPIRING])
    assert [type(c) for c in decision.pump_commands] == [StopPump]
    assert ("bad_read", "A2") in [(k, r) for k, r, _ in facts(decision.audit)]
    again = decide(decision.state, bad, scenario.now)
    assert again.pump_commands == ()
    # a bad read of a pump free to run stops nothing
    running_ = running()
    running_.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=running_.pump.volume))
    free = decide(running_.state, bad, running_.now)
    assert free.commands == ()


# --- boundaries of the A1-A4 reconcile --------------------------------------------------------


def test_A1_a_pump_read_stopped_again_raises_no_second_alarm() -> None:
    scenario = running()
    volume = scenario.pump.volume
    scenario.send(PumpConfirmedStopped(volume_infused_ml=volume))
    assert len(scenario.alarms()) == 1
    assert scenario.state.confirmed_rate_ml_h == 50.0
    again = decide(scenario.state, PumpConfirmedStopped(volume_infused_ml=volume), scenario.now)
    assert again.commands == ()


def test_A4_a_restart_finding_the_pump_stopped_before_it_ever_ran_raises_no_stop_alarm() -> None:
    scenario = starting()
    restarted = scenario.state.updated({"link_lost": True})
    event = Restarted(running=False, rate_ml_h=0.0, volume_infused_ml=0.0)
    decision = decide(restarted, event, scenario.now)
    assert [c for c in decision.commands if isinstance(c, RaiseAlarm)] == []


def test_A2_a_pump_confirmed_below_1_ml_h_and_found_stopped_when_the_link_is_back_is_an_alarm() -> (
    None
):
    scenario = running()
    state = scenario.send(LinkLost()).state.updated(
        {"pump_running": False, "confirmed_rate_ml_h": 0.7, "rate_ml_h": 0.7}
    )
    event = LinkRestored(running=False, rate_ml_h=0.0, volume_infused_ml=scenario.pump.volume)
    decision = decide(state, event, scenario.now)
    assert alarm(decision).kind is MachineAlarm.PUMP_STOPPED


def test_A1_a_step_confirmed_while_stopped_in_an_alarm_goes_back_to_a_rate_below_1() -> None:
    scenario, step = step_out()
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    state = scenario.state.updated({"confirmed_rate_ml_h": 0.7})
    decision = decide(state, confirmed(step, volume=scenario.pump.volume), scenario.now)
    assert decision.state.rate_ml_h == 0.7


def test_A1_the_same_rate_confirmed_while_stopped_before_the_run_is_no_step_taken() -> None:
    """A resume after an occlusion: its rate (the step, unchanged) is confirmed with the pump
    still stopped, then the run: nothing is put back, nothing audited under A1."""
    scenario, run = stopped_for_a_resume()
    (setrate,) = [c for c in scenario.state.outstanding if c.op == "set_rate"]
    decision = decide(
        scenario.state, confirmed(setrate.id, volume=scenario.pump.volume), scenario.now
    )
    assert ("confirmed", "A1") not in [(k, r) for k, r, _ in facts(decision.audit)]
    assert decision.state.rate_ml_h == 50.0
    assert run == setrate.id + 1


def test_A3_a_rate_read_back_within_half_the_resolution_of_the_one_sent_confirms_it() -> None:
    """0.1 ml/h (the smallest after eight halvings, I2) read back at 0.05: the same rate."""
    scenario = started(RowKind.FIRST)
    for n in range(8):
        scenario.advance(minutes(1))
        scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        scenario.auto_confirm = n < 7
        scenario.send(ResumeRequested(actor="nurse"))
    assert scenario.state.rate_ml_h == 0.1
    for command in scenario.state.outstanding:
        if command.op == "set_rate":
            scenario.send(confirmed(command.id, volume=scenario.pump.volume))
    (run,) = scenario.state.outstanding
    decision = decide(
        scenario.state,
        confirmed(run.id, running=True, rate=0.05, volume=scenario.pump.volume),
        scenario.now,
    )
    assert decision.state.confirmed_rate_ml_h == 0.05
    assert facts(decision.audit)[0][0] == "confirmed_running"


def test_L3_a_completion_with_a_command_still_out_ends_with_nothing_outstanding() -> None:
    scenario, _ = step_out()
    full = {"bag_volume_ml": 999.0, "vtbi_programmed_ml": 999.0, "volume_bound_ml": 999.0}
    state = scenario.state.updated({**full, "volume_expected_ml": 999.0})
    assert state.outstanding
    decision = decide(state, PumpCompleted(volume_infused_ml=999.0), scenario.now)
    assert decision.state.phase is InfusionPhase.COMPLETED
    assert decision.state.outstanding == ()


def test_A2_L3_a_completion_read_with_the_volume_gone_back_is_a_bad_read_not_acted_on() -> None:
    scenario = running()
    scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=scenario.pump.volume))
    decision = decide(scenario.state, PumpCompleted(volume_infused_ml=1.0), scenario.now)
    assert decision.state.phase is InfusionPhase.RUNNING
    assert decision.commands == ()
    assert [(k, r) for k, r, _ in facts(decision.audit)] == [("bad_read", "A2")]


def test_A4_a_restart_keeps_what_the_pump_gave_while_down_audited_under_A4() -> None:
    scenario = running(95.0)  # the bound: 50 ml + 35 min at 100 ml/h = 108.333 ml
    scenario.pump.infuse(minutes(10))  # 16.7 ml more the saved state never saw
    stored = InfusionState.from_json(scenario.state.to_json()).updated({"link_lost": True})
    event = Restarted(running=True, rate_ml_h=100.0, volume_infused_ml=scenario.pump.volume)
    decision = decide(stored, event, scenario.now)
    trail = facts(decision.audit)
    assert trail[0][:2] == ("restarted", "A4")
    assert trail[1] == (
        "volume_baseline",
        "A4",
        {
            "volume_ml": scenario.pump.volume,
            "bound_ml": 108.333,
            "why": "restart: given while the controller was down",
        },
    )


def test_A3_before_a_lower_rate_s_fate_the_rate_last_confirmed_is_still_expected() -> None:
    """A lower rate sent, its fate not yet known: the pump read at the rate it was last
    confirmed at is not faster than expected; above that it is."""
    scenario = running()
    first = scenario.state.next_command_id
    lower = SentCommand(id=first, op=CommandOp.SET_RATE, rate_ml_h=25.0)
    state = scenario.state.updated(
        {"rate_ml_h": 25.0, "outstanding": (lower,), "next_command_id": first + 1}
    )
    volume = scenario.pump.volume
    at_confirmed = PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=volume)
    assert decide(state, at_confirmed, scenario.now).commands == ()
    faster = PumpConfirmedRunning(rate_ml_h=50.2, volume_infused_ml=volume)
    assert alarm(decide(state, faster, scenario.now)).kind is MachineAlarm.RATE_TOO_HIGH


def test_A2_a_read_exactly_half_the_resolution_below_the_step_is_the_step() -> None:
    """At 0.1 ml/h (eight halvings, I2) a pump read at 0.05 is within half the pump's
    resolution of the step: no lower-rate alarm; below that it is one."""
    scenario = running()
    state = scenario.state.updated(
        {"rate_ml_h": 0.1, "confirmed_rate_ml_h": 0.1, "pump_rate_ml_h": 0.1}
    )
    volume = scenario.pump.volume
    at_half = PumpConfirmedRunning(rate_ml_h=0.05, volume_infused_ml=volume)
    assert decide(state, at_half, scenario.now).commands == ()
    below = PumpConfirmedRunning(rate_ml_h=0.04, volume_infused_ml=volume)
    assert alarm(decide(state, below, scenario.now)).kind is MachineAlarm.RATE_LOWER


def test_A2_A3_a_rate_sent_before_a_confirmed_stop_is_no_longer_expected() -> None:
    """A pump read running at the rate of a step sent before a stop it confirmed is running
    too fast: the stop came after the step on the same line and was read back as carried out,
    so the step's fate, whenever it comes, cannot be what the pump shows. A first infusion at
    50 ml/h, the step to 100 sent (no fate yet), a reaction's stop confirmed, a resume at half
    (25 ml/h) confirmed: a read of 100 ml/h is set back down at once (A2)."""
    step = SentCommand(id=5, op=CommandOp.SET_RATE, rate_ml_h=100.0)
    stop = SentCommand(id=6, op=CommandOp.STOP)
    at = T0 + minutes(60)
    state = running_first(T0, outstanding=(step, stop), stop_unconfirmed=False)
    stopped = decide(
        state,
        CommandConfirmed(command_id=6, running=False, rate_ml_h=0.0, volume_infused_ml=50.0),
        at,
    ).state
    assert stopped.stopped_after_id == 6
    assert [c.id for c in stopped.outstanding] == [5]  # the step's fate is still owed (A3)
    resumed = stopped.updated(
        {
            "rate_ml_h": 25.0,
            "confirmed_rate_ml_h": 25.0,
            "pump_running": True,
            "pump_rate_ml_h": 25.0,
        }
    )
    first = resumed.next_command_id
    read = PumpConfirmedRunning(rate_ml_h=100.0, volume_infused_ml=50.0)
    decision = decide(resumed, read, at + minutes(5))
    setback, raised = decision.commands
    assert isinstance(setback, SetRate)
    assert (setback.id, setback.rate_ml_h) == (first, 25.0)
    words = "pump at 100 ml/h, faster than 25 ml/h: set back down"
    assert raised == RaiseAlarm(MachineAlarm.RATE_TOO_HIGH, words, Rule.A2)
    # with no stop confirmed after it, a step still owed its fate is a rate the pump may show
    before = decide(resumed.updated({"stopped_after_id": 0}), read, at + minutes(5))
    assert before.commands == ()
