"""A8: every alarm kind has one priority (the code and the rules page's table agree, and a kind
with no priority fails here), and a nurse's acknowledgement stops nothing but the sound: the
latch (A1), the pump and the alarm's visual signal stay; an alarm whose cause ended and that is
raised again is a new, unacknowledged alarm."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from machine_scenario import OTHER, Scenario, minutes, started

from drivers.base import Alarm
from pumpctl.core.machine import (
    PRIORITY,
    PUMP_ALARMS,
    AcknowledgeAlarm,
    ClearAlarm,
    CommandUnconfirmed,
    Decision,
    InfusionState,
    MachineAlarm,
    Priority,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    ReactionReported,
    Stop,
    StopPump,
    TimePassed,
    alarm_rule,
    decide,
    priority_of,
)
from pumpctl.core.protocol import RowKind
from pumpctl.core.rules import Rule

RULES_PAGE = Path(__file__).resolve().parents[2] / "docs" / "clinical-rules.md"
ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \| (high|medium|low) \| [^|]+ \|$", re.MULTILINE)


def every_kind() -> set[str]:
    """Every alarm kind the service can raise: the machine's and the pumps' (interfaces.md 2)."""
    return {a.value for a in MachineAlarm} | {a.value for a in Alarm}


def page_table() -> dict[str, tuple[str, str]]:
    """A8's table on the rules page: kind -> (its rule column, its priority)."""
    text = RULES_PAGE.read_text(encoding="utf-8")
    section = text.split("- **A8**", 1)[1].split("## D", 1)[0]
    rows = {kind: (rule.strip(), priority) for kind, rule, priority in ROW.findall(section)}
    assert rows, "A8's priority table is not on the rules page"
    return rows


def test_A8_every_alarm_kind_has_exactly_one_priority_in_the_code() -> None:
    """A new kind (a MachineAlarm member, a pump alarm) with no priority fails here."""
    assert set(PUMP_ALARMS) == {a.value for a in Alarm}
    missing = every_kind() - set(PRIORITY)
    assert missing == set(), f"alarm kinds with no priority (A8): {sorted(missing)}"
    assert set(PRIORITY) == every_kind(), "a priority for a kind nothing raises"
    assert all(isinstance(p, Priority) for p in PRIORITY.values())


def test_A8_the_rules_page_table_is_the_codes_priorities_with_each_alarms_rule() -> None:
    table = page_table()
    assert set(table) == every_kind()
    for kind, (rule, priority) in table.items():
        assert priority_of(kind).value == priority, kind
        assert rule.startswith(str(alarm_rule(kind))), (kind, rule)


def test_A8_the_priorities_the_issue_names() -> None:
    """High: an unconfirmed stop (A3), over-infusion, a lost link; medium: a pump alarm (A1),
    under-infusion, the bag expired (L9), an unexplained stop (A4); low: advisories."""
    high = {"pump_not_stopped", "over_infusion", "comm_loss"}
    medium = {"occlusion", "under_infusion", "bag_expired", "pump_stopped_unexpectedly"}
    low = {"bag_expiring", "low_battery"}
    assert {k: priority_of(k) for k in high} == dict.fromkeys(high, Priority.HIGH)
    assert {k: priority_of(k) for k in medium} == dict.fromkeys(medium, Priority.MEDIUM)
    assert {k: priority_of(k) for k in low} == dict.fromkeys(low, Priority.LOW)
    assert priority_of("gremlins") is Priority.HIGH  # unknown: the safe side
    assert [p.rank for p in (Priority.HIGH, Priority.MEDIUM, Priority.LOW)] == [0, 1, 2]


def mark_of(state: InfusionState, kind: str) -> tuple[object, ...]:
    mark = next(m for m in state.alarm_marks if m.kind == kind)
    return (mark.raised_at, mark.acknowledged_by, mark.ended)


def refused(decision: Decision) -> tuple[str | None, str]:
    assert decision.refusal is not None
    return decision.refusal.rule, decision.refusal.reason


def test_A8_A1_acknowledging_a_pump_alarm_stops_nothing_but_its_sound() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    nobody = decide(scenario.state, AcknowledgeAlarm(alarm="occlusion", actor="nina"), scenario.now)
    assert refused(nobody) == (Rule.A8, "no alarm 'occlusion' is raised")
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    raised_at = scenario.now
    before = scenario.state
    ack = scenario.send(AcknowledgeAlarm(alarm="occlusion", actor="nina"))
    assert ack.refusal is None
    assert ack.commands == ()  # nothing for the pump
    assert (ack.state.latched, ack.state.alarms, ack.state.phase) == (
        before.latched,
        before.alarms,
        before.phase,
    )
    assert mark_of(ack.state, "occlusion") == (raised_at, "nina", False)
    [audit] = ack.audit
    assert (audit.type, audit.rule) == ("alarm_acknowledged", Rule.A1)
    assert audit.data == {"alarm": "occlusion", "priority": "medium", "actor": "nina"}
    again = decide(ack.state, AcknowledgeAlarm(alarm="occlusion", actor="nora"), scenario.now)
    assert refused(again) == (Rule.A8, "occlusion was already acknowledged by nina")
    # A1 stands: no clear while the pump reports it, whoever acknowledged it
    clear = ClearAlarm(alarm="occlusion", actor="nina", role="nurse")
    assert refused(decide(ack.state, clear, scenario.now))[0] == Rule.A1
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    assert mark_of(scenario.state, "occlusion") == (raised_at, "nina", True)  # cause ended
    cleared = scenario.send(clear)
    assert cleared.refusal is None
    assert cleared.state.alarm_marks == ()


def test_A8_a_pump_alarm_reported_again_after_its_cause_ended_is_a_new_alarm() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(PumpAlarmRaised(alarm="door_open"))
    scenario.send(AcknowledgeAlarm(alarm="door_open", actor="nina"))
    scenario.send(PumpAlarmCleared(alarm="door_open"))  # still latched (A1), its cause ended
    scenario.now += minutes(2)
    scenario.send(PumpAlarmRaised(alarm="door_open"))
    assert mark_of(scenario.state, "door_open") == (scenario.now, None, False)


def test_A8_A3_a_stop_unconfirmed_again_and_again_stays_acknowledged_a_new_one_sounds() -> None:
    """The stop sent again on every contact and again unconfirmed is the same A3 alarm (still
    acknowledged); once the pump is confirmed stopped the cause has ended, and a pump found
    running again afterwards is a new A3 alarm, unacknowledged."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(20))
    scenario.auto_confirm = False
    stop = scenario.send(ReactionReported(grade=1, signs=OTHER, actor="nina"))
    [command] = [c for c in stop.commands if isinstance(c, StopPump)]
    scenario.send(CommandUnconfirmed(command_id=command.id))
    first = scenario.now
    assert mark_of(scenario.state, "pump_not_stopped") == (first, None, False)
    acked = scenario.send(AcknowledgeAlarm(alarm="pump_not_stopped", actor="nina"))
    assert [a.rule for a in acked.audit] == [Rule.A3]
    assert [a.data["priority"] for a in acked.audit] == ["high"]
    for _ in range(3):  # read running: the stop is sent again, and again unconfirmed
        scenario.now += minutes(0.1)
        resent = scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=20.0))
        [again] = [c for c in resent.commands if isinstance(c, StopPump)]
        scenario.send(CommandUnconfirmed(command_id=again.id))
        assert MachineAlarm.PUMP_NOT_STOPPED in [a.kind for a in scenario.alarms()[-1:]]
        assert mark_of(scenario.state, "pump_not_stopped") == (first, "nina", False)
    scenario.now += minutes(0.1)
    scenario.send(PumpConfirmedStopped(volume_infused_ml=20.0))
    assert mark_of(scenario.state, "pump_not_stopped") == (first, "nina", True)
    scenario.now += minutes(1)
    running = scenario.send(PumpConfirmedRunning(rate_ml_h=50.0, volume_infused_ml=20.0))
    assert any(isinstance(c, StopPump) for c in running.commands)
    assert mark_of(scenario.state, "pump_not_stopped") == (scenario.now, None, False)


def test_A8_an_acknowledgement_is_kept_across_a_restart_and_on_an_ended_infusion() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(PumpAlarmRaised(alarm="low_battery"))
    scenario.send(Stop(reason="patient left", actor="nina"))
    assert scenario.state.terminal
    ended = scenario.send(AcknowledgeAlarm(alarm="low_battery", actor="nina"))
    assert ended.refusal is None
    rebuilt = InfusionState.from_json(ended.state.to_json())
    assert rebuilt == ended.state
    assert mark_of(rebuilt, "low_battery")[1] == "nina"


def test_A8_a_state_kept_before_its_marks_gets_them_and_can_be_acknowledged() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(PumpAlarmRaised(alarm="empty"))
    old = scenario.state.updated({"alarm_marks": ()})
    later = decide(old, TimePassed(), scenario.now + minutes(1))
    assert [m.kind for m in later.state.alarm_marks] == ["empty"]
    ack = decide(old, AcknowledgeAlarm(alarm="empty", actor="nina"), scenario.now)
    assert ack.refusal is None
    assert mark_of(ack.state, "empty")[1] == "nina"


@pytest.mark.parametrize("actor", ["", "   "])
def test_A8_an_acknowledgement_names_its_person(actor: str) -> None:
    scenario: Scenario = started(RowKind.FIRST)
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    decision = decide(
        scenario.state,
        {"kind": "acknowledge_alarm", "alarm": "occlusion", "actor": actor},
        scenario.now,
    )
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.field) == ("invalid", "actor")
