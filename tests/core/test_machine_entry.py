"""`decide`'s entry, its refusals, its deadlines and its last line of defence, pinned fact by
fact (docs/clinical-rules.md, Clarifications "All", L9, I4, I5, A6, A3; issue 22).

Every refusal names the rule of the action refused and is audited with the event's kind and the
reason; a time that cannot be taken names the field `now`; a state the core cannot continue
from stops the pump first and raises the core-fault alarm, audited with the error.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import pytest
from machine_scenario import OTHER, Scenario, facts, minutes, planned, started

from pumpctl.core.history import Sign
from pumpctl.core.machine import (
    ClearAlarm,
    CommandUnconfirmed,
    Decision,
    Hold,
    InfusionPhase,
    MachineAlarm,
    PumpAlarmCleared,
    PumpAlarmRaised,
    RaiseAlarm,
    ReactionReported,
    Reassessed,
    Refusal,
    Release,
    Resolved,
    ResumeRequested,
    SetRate,
    Start,
    Stop,
    StopPump,
    TimePassed,
    decide,
)
from pumpctl.core.machine.state import EARLIEST, LATEST
from pumpctl.core.protocol import RowKind
from pumpctl.core.rules import Rule


def ten_minutes_in() -> Scenario:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    return scenario


# --- refusals: invalid input and rules --------------------------------------------------------

#: The rule of each action, named by a refusal of it for invalid input ("All").
ACTION_RULES = {
    "start": "L3",
    "reaction": "I1",
    "reassessed": "I5",
    "resolved": "I4",
    "resume": "I9",
    "hold": "L7",
    "release": "L7",
    "bag_replaced": "L9",
    "stop": "A6",
    "clear_alarm": "A1",
    "acknowledge_alarm": "A8",
    "pump_running": "A3",
    "pump_stopped": "A3",
    "pump_completed": "L3",
    "power_reset": "L3",
    "alarm_raised": "A1",
    "alarm_cleared": "A1",
    "link_lost": "A2",
    "link_restored": "A2",
    "restarted": "A4",
    "command_confirmed": "A3",
    "command_denied": "A3",
    "command_unconfirmed": "A3",
    "safety_envelope": "L3",
    "time_passed": "L1",
}


@pytest.mark.parametrize(("kind", "rule"), sorted(ACTION_RULES.items()))
def test_All_invalid_input_is_audited_under_the_rule_of_the_action_refused(
    kind: str, rule: str
) -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, {"kind": kind, "unknown_field": 1}, scenario.now)
    refusal = decision.refusal
    assert refusal is not None
    assert (refusal.kind, refusal.rule) == ("invalid", None)
    assert refusal.field is not None
    assert facts(decision.audit) == [
        ("invalid", rule, {"event": kind, "reason": refusal.reason, "field": refusal.field})
    ]
    assert decision.audit[0].at == scenario.now
    assert decision.commands == ()


@pytest.mark.parametrize(
    ("raw", "kind", "field"), [(42, None, "event"), ({"kind": "bolus"}, "bolus", "kind")]
)
def test_A3_what_is_no_known_event_is_invalid_under_A3(
    raw: object, kind: str | None, field: str
) -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, raw, scenario.now)  # type: ignore[arg-type]
    assert decision.refusal is not None
    assert decision.refusal.field == field
    assert facts(decision.audit) == [
        ("invalid", "A3", {"event": kind, "reason": decision.refusal.reason, "field": field})
    ]


def test_I9_a_refusal_by_a_rule_is_audited_with_the_event_and_reason_and_no_field() -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, ResumeRequested(actor="nurse"), scenario.now)
    reason = "the pump is already running at the current step"
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.rule, decision.refusal.field) == (
        "rule",
        "I9",
        None,
    )
    assert facts(decision.audit) == [("refused", "I9", {"event": "resume", "reason": reason})]


def test_I10_an_invalid_onset_is_audited_under_I10_naming_the_field() -> None:
    scenario = ten_minutes_in()
    onset = scenario.now + minutes(1)
    event = ReactionReported(grade=1, signs=OTHER, onset_at=onset, actor="n")
    decision = decide(scenario.state, event, scenario.now)
    reason = "the onset is after the report"
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.rule, decision.refusal.field) == (
        "invalid",
        "I10",
        "onset_at",
    )
    assert facts(decision.audit) == [
        ("invalid", "I10", {"event": "reaction", "reason": reason, "field": "onset_at"})
    ]


NAIVE = datetime(2026, 1, 5, 9)  # noqa: DTZ001 - a time with no zone, refused


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        ("soon", "must be a timezone-aware datetime, got 'soon'"),
        (NAIVE, "must be a timezone-aware datetime, got datetime.datetime(2026, 1, 5, 9, 0)"),
        (
            datetime(1990, 1, 1, tzinfo=UTC),
            "1990-01-01T00:00:00+00:00 is not a plausible clinical time",
        ),
        (
            datetime(2026, 1, 5, 8, 9, tzinfo=UTC),
            "2026-01-05T08:09:00+00:00 is before the last event 2026-01-05T08:10:00+00:00",
        ),
    ],
)
def test_All_a_time_that_cannot_be_taken_is_invalid_naming_now(now: object, reason: str) -> None:
    scenario = ten_minutes_in()
    assert scenario.now == datetime(2026, 1, 5, 8, 10, tzinfo=UTC)
    decision = decide(scenario.state, TimePassed(), now)  # type: ignore[arg-type]
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.field, decision.refusal.reason) == (
        "invalid",
        "now",
        reason,
    )
    assert decision.state == scenario.state
    assert decision.commands == ()
    assert facts(decision.audit) == [("invalid", "L1", {"field": "now"})]
    assert decision.audit[0].at == scenario.now  # the last event's time: `now` is not one


# --- A3: the core's last line of defence ------------------------------------------------------


def fault_words(error: str) -> str:
    return f"the rules core cannot continue ({error}): pump stopped"


def test_A3_a_core_fault_stops_the_pump_first_latches_the_alarm_and_audits_the_error() -> None:
    scenario = ten_minutes_in()
    broken = scenario.state.model_copy(update={"protocol": None})
    at = scenario.now + minutes(1)
    decision = decide(broken, TimePassed(), at)
    words = fault_words("AttributeError")
    first = scenario.state.next_command_id
    assert decision.commands == (
        StopPump(first),
        RaiseAlarm(MachineAlarm.CORE_FAULT, words, Rule.A3),
    )
    assert "core_fault" in decision.state.latched
    assert [c.id for c in decision.state.outstanding] == [first]
    trail = facts(decision.audit)
    assert trail[0] == ("alarm", "A3", {"kind": "core_fault", "message": words})
    (kind, rule, data) = trail[1]
    assert (kind, rule, list(data)) == ("core_fault", "A3", ["error"])
    assert str(data["error"]).startswith("AttributeError(")
    assert {a.at for a in decision.audit} == {at}


def test_A3_a_core_fault_on_a_state_that_cannot_change_still_stops_and_raises() -> None:
    """A state the fault handler cannot change either: the stop and the alarm still go out."""
    scenario = ten_minutes_in()
    broken = scenario.state.model_copy(update={"latched": None})
    decision = decide(broken, TimePassed(), scenario.now)
    words = fault_words("TypeError")
    assert decision.commands == (
        StopPump(scenario.state.next_command_id),
        RaiseAlarm(MachineAlarm.CORE_FAULT, words, Rule.A3),
    )
    assert decision.state is broken
    assert decision.refusal is None
    ((kind, rule, data),) = facts(decision.audit)
    assert (kind, rule) == ("core_fault", "A3")
    assert str(data["error"]).startswith("TypeError(")
    assert decision.audit[0].at == scenario.now
    # on a fate (the answer to a stop already sent) the stop is not sent once more
    fate = decide(broken, CommandUnconfirmed(command_id=1), scenario.now)
    assert fate.commands == (RaiseAlarm(MachineAlarm.CORE_FAULT, words, Rule.A3),)
    as_mapping = decide(broken, {"kind": "command_unconfirmed", "command_id": 1}, scenario.now)
    assert as_mapping.commands == fate.commands


def test_A3_the_error_audited_is_cut_at_500_characters() -> None:
    scenario = ten_minutes_in()

    class Unreadable:
        def __getattr__(self, name: str) -> object:
            raise RuntimeError("x" * 600)

    broken = scenario.state.model_copy(update={"protocol": Unreadable()})
    decision = decide(broken, TimePassed(), scenario.now + minutes(1))
    error = str(facts(decision.audit)[-1][2]["error"])
    assert error == repr(RuntimeError("x" * 600))[:500]
    assert len(error) == 500


# --- deadlines fired by time alone ------------------------------------------------------------


def test_L9_the_bag_warning_and_expiry_say_what_to_do() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(Hold(actor="dr"))  # L7: 50 ml/h, so the bag outlives nothing
    scenario.advance(timedelta(hours=14))
    warning = scenario.alarms()[-1]
    assert warning == RaiseAlarm(
        MachineAlarm.BAG_EXPIRING, "the bag expires in 60 min: prepare a new bag", Rule.L9
    )
    assert scenario.state.bag_warned
    assert not scenario.state.bag_expired
    scenario.advance(timedelta(hours=1))
    expired = scenario.alarms()[-1]
    assert expired == RaiseAlarm(
        MachineAlarm.BAG_EXPIRED,
        "the bag is past its 15 h stability: pump stopped, a new bag is needed",
        Rule.L9,
    )
    assert scenario.state.bag_expired
    assert scenario.state.bag_warned


def test_I5_the_window_ends_at_grade_2_audited_and_paused() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="n"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="n"))
    mark = scenario.mark()
    scenario.advance(timedelta(hours=2))
    ended = [a for d in scenario.decisions[mark:] for a in d.audit]
    assert facts(ended) == [("observation_ended", "I5", {"grade": 2, "resume_allowed": True})]
    assert scenario.phase() is InfusionPhase.PAUSED
    assert scenario.state.reaction is not None
    assert scenario.state.reaction.observation_closed


def test_I5_I8_the_window_ending_at_grade_3_withdraws_in_words() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="n"))
    scenario.advance(timedelta(hours=2))
    assert scenario.phase() is InfusionPhase.WITHDRAWN
    reason = "grade 3 at the end of the 2 h window"
    assert ("withdrawn", "I5", {"reason": reason}) in facts(scenario.audit)
    assert scenario.state.course.withdrawn_reason == f"I5: {reason}"


def test_I4_I8_a_bronchospasm_not_resolved_in_6_h_withdraws_in_words() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    signs = frozenset({Sign.BRONCHOSPASM})
    scenario.send(ReactionReported(grade=2, signs=signs, actor="n"))
    scenario.advance(timedelta(hours=6))
    reason = "bronchospasm not resolved within 6 h of onset"
    assert ("withdrawn", "I4", {"reason": reason}) in facts(scenario.audit)
    assert scenario.phase() is InfusionPhase.WITHDRAWN


def test_I5_a_stopped_infusion_s_window_ending_at_grade_2_closes_the_reaction() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(30))
    scenario.send(ReactionReported(grade=3, signs=OTHER, actor="n"))
    scenario.send(Stop(reason="end", actor="dr"))
    scenario.send(Reassessed(grade=2, signs=OTHER, actor="n"))
    mark = scenario.mark()
    scenario.advance(timedelta(hours=2))
    ended = [a for d in scenario.decisions[mark:] for a in d.audit]
    assert facts(ended) == [("observation_ended", "I5", {"grade": 2, "resume_allowed": False})]
    assert scenario.phase() is InfusionPhase.STOPPED
    assert scenario.state.reaction is None
    assert [r.max_grade for r in scenario.state.reactions] == [3]


# --- A6: a stop for good ----------------------------------------------------------------------


def stop_trail(decision: Decision) -> list[tuple[str, str, dict[str, object]]]:
    return [f for f in facts(decision.audit) if f[0] == "stopped"]


def test_A6_a_stop_for_good_is_audited_with_the_person_and_the_reason() -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, Stop(reason="line pulled", actor="ann"), scenario.now)
    assert decision.commands == (StopPump(scenario.state.next_command_id),)
    assert decision.state.phase is InfusionPhase.STOPPED
    assert decision.state.stop_reason == "line pulled"
    assert stop_trail(decision) == [("stopped", "A6", {"actor": "ann", "reason": "line pulled"})]


@pytest.mark.parametrize(("grade", "signs", "rule"), [(3, OTHER, "I5"), (2, None, "I4")])
def test_I4_I5_a_stop_inside_an_open_window_or_hold_is_audited_under_it(
    grade: int, signs: frozenset[Sign] | None, rule: str
) -> None:
    scenario = ten_minutes_in()
    scenario.send(
        ReactionReported(grade=grade, signs=signs or frozenset({Sign.BRONCHOSPASM}), actor="n")
    )
    decision = decide(scenario.state, Stop(reason="end", actor="ann"), scenario.now)
    assert stop_trail(decision) == [("stopped", rule, {"actor": "ann", "reason": "end"})]
    assert decision.state.reaction is not None  # kept open until the window or hold ends


def test_I2_a_stop_while_paused_by_a_grade_1_closes_the_reaction() -> None:
    scenario = ten_minutes_in()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="n"))
    decision = decide(scenario.state, Stop(reason="end", actor="ann"), scenario.now)
    assert decision.state.reaction is None
    assert [r.grade for r in decision.state.reactions] == [1]
    assert stop_trail(decision) == [("stopped", "A6", {"actor": "ann", "reason": "end"})]


def test_A6_a_stop_before_the_start_sends_nothing_to_the_pump() -> None:
    state = planned()
    decision = decide(state, Stop(reason="not needed", actor="ann"), state.bag_prepared_at)
    assert decision.commands == ()
    assert decision.state.phase is InfusionPhase.STOPPED
    assert stop_trail(decision) == [("stopped", "A6", {"actor": "ann", "reason": "not needed"})]


@pytest.mark.parametrize(
    ("end", "rule", "reason"),
    [("stop", "I9", "the infusion is stopped"), ("complete", "L3", "the infusion is completed")],
)
def test_I9_L3_an_ended_infusion_refuses_a_resume_naming_why(
    end: str, rule: str, reason: str
) -> None:
    scenario = ten_minutes_in()
    if end == "stop":
        scenario.send(Stop(reason="end", actor="ann"))
    else:
        scenario.run_to_end()
    decision = decide(scenario.state, ResumeRequested(actor="ann"), scenario.now)
    assert decision.refusal is not None
    assert (decision.refusal.rule, decision.refusal.reason) == (rule, reason)
    assert decision.commands == ()


def test_A3_a_kind_that_is_no_text_is_invalid_under_A3() -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, {"kind": ["start"]}, scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.kind == "invalid"
    assert [(k, r) for k, r, _ in facts(decision.audit)] == [("invalid", "A3")]


def test_A6_a_stop_while_paused_sends_the_stop_again() -> None:
    scenario = ten_minutes_in()
    scenario.send(ReactionReported(grade=1, signs=OTHER, actor="n"))
    assert not scenario.state.stop_outstanding
    decision = decide(scenario.state, Stop(reason="end", actor="ann"), scenario.now)
    assert decision.commands == (StopPump(scenario.state.next_command_id),)


def test_A6_I1_a_stop_goes_ahead_of_an_alarm_due_at_that_instant() -> None:
    prepared = datetime(2026, 1, 4, 18, 1, tzinfo=UTC)  # the bag warning at 08:01
    scenario = Scenario(planned(RowKind.FIRST, prepared_at=prepared))
    scenario.send(Start(actor="nurse", course=scenario.state.course))
    scenario.now += minutes(1)
    decision = decide(scenario.state, Stop(reason="end", actor="ann"), scenario.now)
    assert isinstance(decision.commands[0], StopPump)
    assert [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)] == [
        MachineAlarm.BAG_EXPIRING
    ]


def test_A1_I4_an_ended_infusion_s_alarms_and_hold_are_still_answered_and_audited() -> None:
    scenario = ten_minutes_in()
    scenario.send(ReactionReported(grade=2, signs=frozenset({Sign.BRONCHOSPASM}), actor="n"))
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpAlarmCleared(alarm="occlusion"))
    scenario.send(Stop(reason="end", actor="ann"))
    assert scenario.state.terminal
    cleared = decide(
        scenario.state, ClearAlarm(alarm="occlusion", actor="ann", role="nurse"), scenario.now
    )
    assert facts(cleared.audit) == [
        ("alarm_cleared", "A1", {"alarm": "occlusion", "actor": "ann", "role": "nurse"})
    ]
    resolved = decide(scenario.state, Resolved(actor="ann"), scenario.now)
    assert facts(resolved.audit) == [("resolved", "I4", {"actor": "ann"})]


# --- the time given, and what time alone changes under a refusal -----------------------------


class _NoOffset(tzinfo):
    """A zone that cannot say its offset: not an aware time."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


def test_All_a_time_whose_zone_gives_no_offset_is_invalid() -> None:
    scenario = ten_minutes_in()
    now = datetime(2026, 1, 5, 9, tzinfo=_NoOffset())
    decision = decide(scenario.state, TimePassed(), now)
    assert decision.refusal is not None
    assert (decision.refusal.field, decision.refusal.kind) == ("now", "invalid")
    assert decision.refusal.reason.startswith("must be a timezone-aware datetime, got ")


def test_All_the_plausible_clinical_times_include_the_first_and_exclude_the_last() -> None:
    state = planned()
    assert decide(state, TimePassed(), EARLIEST).refusal is None
    last = decide(state, TimePassed(), LATEST)
    assert last.refusal is not None
    assert last.refusal.reason == "2200-01-01T00:00:00+00:00 is not a plausible clinical time"


@pytest.mark.parametrize(
    "event",
    [Release(actor="nurse"), {"kind": "release"}],
    ids=["refused by a rule", "invalid input"],
)
def test_L1_a_refused_event_at_a_step_s_instant_still_takes_the_step(event: object) -> None:
    """Time alone changes what it changes: the step due at 60 min is taken, the event is not."""
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(59))
    decision = decide(scenario.state, event, scenario.now + minutes(1))  # type: ignore[arg-type]
    assert decision.refusal is not None
    assert [c.rate_ml_h for c in decision.commands if isinstance(c, SetRate)] == [100.0]
    assert decision.state.rate_ml_h == 100.0


def test_All_invalid_input_says_what_is_wrong() -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, {"kind": "resume", "unknown_field": 1}, scenario.now)
    assert decision.refusal is not None
    assert isinstance(decision.refusal.reason, str)
    assert decision.refusal.reason
    assert decide(scenario.state, 42, scenario.now).refusal == Refusal(  # type: ignore[arg-type]
        "invalid", "not an event: int", field="event"
    )


def test_L9_I1_a_late_driver_past_the_expiry_stops_first_then_warns_then_says_expired() -> None:
    scenario = started(RowKind.FIRST)
    scenario.send(Hold(actor="dr"))
    scenario.advance(timedelta(hours=13, minutes=59))
    decision = decide(scenario.state, TimePassed(), scenario.now + minutes(61))
    assert isinstance(decision.commands[0], StopPump)
    assert [c.kind for c in decision.commands if isinstance(c, RaiseAlarm)] == [
        MachineAlarm.BAG_EXPIRING,
        MachineAlarm.BAG_EXPIRED,
    ]


def test_I4_I5_the_window_ending_after_a_stop_keeps_an_open_hold_s_reaction() -> None:
    """Grade 3 bronchospasm (window and hold), stopped for good, reassessed at 2: the window
    ends at 2 h, the I4 hold runs on, so the reaction stays open (its end withdraws, I4)."""
    scenario = ten_minutes_in()
    signs = frozenset({Sign.BRONCHOSPASM})
    scenario.send(ReactionReported(grade=3, signs=signs, actor="n"))
    scenario.send(Stop(reason="end", actor="dr"))
    scenario.send(Reassessed(grade=2, signs=signs, actor="n"))
    scenario.advance(timedelta(hours=2, minutes=1))
    reaction = scenario.state.reaction
    assert reaction is not None
    assert reaction.observation_closed
    assert reaction.hold_open


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (
            {"kind": "reaction", "grade": 7, "signs": ["other"], "actor": "a"},
            "grade",
            "Input should be less than or equal to 4",
        ),
        (
            {"kind": "stop", "reason": "", "actor": "a"},
            "reason",
            "String should have at least 1 character",
        ),
        ({}, "kind", "Unable to extract tag using discriminator 'kind'"),
    ],
)
def test_All_invalid_input_names_the_field_and_says_why(
    raw: dict[str, object], field: str, reason: str
) -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, raw, scenario.now)
    assert decision.refusal == Refusal("invalid", reason, field=field)


def test_A3_an_unknown_kind_is_refused_listing_the_kinds_known() -> None:
    scenario = ten_minutes_in()
    decision = decide(scenario.state, {"kind": "bolus"}, scenario.now)
    assert decision.refusal is not None
    assert decision.refusal.reason.startswith(
        "Input tag 'bolus' found using 'kind' does not match any of the expected tags: 'start', "
    )
