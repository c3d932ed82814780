"""Pure decisions of the course's edges: the withdrawal a history demands (I3, I6, I7), the
schedule's spacing at a start (D2) and the state the staff are shown (A1, L9, A2, A3, A4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from machine_scenario import running_first

from pumpctl.core.course import Withdrawal, entry_withdrawal
from pumpctl.core.dose import SCHEDULE_MARGIN, earliest_start, schedule_gate
from pumpctl.core.history import CourseState, InfusionRecord, ReactionRecord, Sign
from pumpctl.core.machine import InfusionPhase
from pumpctl.core.machine.public import public_state
from pumpctl.core.protocol import Grade4Policy, Reactions
from pumpctl.core.rules import Rule
from pumpctl.protocols import load_protocol

PROTOCOL = load_protocol("daratumumab")
LABEL = load_protocol("daratumumab-label")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _reaction(
    number: int, grade: int, *signs: Sign, max_grade: int | None = None
) -> ReactionRecord:
    return ReactionRecord(
        grade=grade,
        max_grade=max_grade or grade,
        signs=frozenset(signs or {Sign.OTHER}),
        rate_ml_h=100,
        running_min=60,
        infusion_number=number,
    )


def _course(*grades: int) -> CourseState:
    return CourseState(
        infusions=tuple(
            InfusionRecord(
                infusion_number=n,
                highest_rate_ml_h=200,
                reactions=(_reaction(n, g),) if g else (),
            )
            for n, g in enumerate(grades, start=1)
        )
    )


# -- I3, I6, I7 --------------------------------------------------------------------------------


def history_withdrawal(course: CourseState, rules: Reactions) -> Withdrawal | None:
    """The withdrawal the course's last infusion brings, entered as history after the others."""
    *before, entry = course.infusions
    return entry_withdrawal(CourseState(infusions=tuple(before)), entry, rules)


def test_i6_i8_after_a_reinstatement_only_an_entry_that_brings_a_grade_3_withdraws_again() -> None:
    """I6, I8: a course reinstated after its third grade >= 3 is not withdrawn again by an
    entry with no such reaction; an entry with a fourth is a new occurrence and withdraws."""
    rules = PROTOCOL.reactions
    assert history_withdrawal(_course(3, 3, 3, 0), rules) is None
    assert history_withdrawal(_course(3, 3, 3, 2), rules) is None
    fourth = history_withdrawal(_course(3, 3, 3, 3), rules)
    assert fourth is not None
    assert fourth.reason == "occurrence 4 of grade >= 3"


def test_i6_the_third_grade_3_occurrence_in_history_withdraws_and_two_do_not() -> None:
    rules = PROTOCOL.reactions
    assert history_withdrawal(_course(3, 4), rules) is None
    assert history_withdrawal(_course(3, 2, 1, 3), rules) is None
    assert history_withdrawal(_course(3, 3, 2), rules) is None  # the entry brings none
    third = history_withdrawal(_course(3, 2, 4, 3), rules)
    assert third is not None
    assert third.rule is Rule.I6
    assert third.course_reason.startswith("I6: occurrence 3")


def test_i6_a_reaction_that_reached_grade_3_counts_even_when_its_last_grade_is_lower() -> None:
    course = CourseState(
        infusions=tuple(
            InfusionRecord(
                infusion_number=n,
                highest_rate_ml_h=200,
                reactions=(_reaction(n, 2, max_grade=3),),
            )
            for n in (1, 2, 3)
        )
    )
    found = history_withdrawal(course, PROTOCOL.reactions)
    assert found is not None
    assert found.rule is Rule.I6


def test_i3_grade_2_laryngeal_edema_withdraws_grade_1_does_not_and_i3_wins_over_i6() -> None:
    rules = PROTOCOL.reactions

    def one(grade: int, *signs: Sign) -> CourseState:
        return CourseState(
            infusions=(
                InfusionRecord(
                    infusion_number=1,
                    highest_rate_ml_h=100,
                    reactions=(_reaction(1, grade, *signs),),
                ),
            )
        )

    assert history_withdrawal(one(1, Sign.LARYNGEAL_EDEMA), rules) is None
    assert history_withdrawal(one(2, Sign.BRONCHOSPASM), rules) is None
    found = history_withdrawal(one(2, Sign.LARYNGEAL_EDEMA), rules)
    assert found is not None
    assert found.rule is Rule.I3
    edema = InfusionRecord(
        infusion_number=4,
        highest_rate_ml_h=100,
        reactions=(_reaction(4, 3, Sign.LARYNGEAL_EDEMA),),
    )
    both = _course(3, 3).record(edema)  # the entry is a third grade >= 3 and an edema
    found = history_withdrawal(both, rules)
    assert found is not None
    assert found.rule is Rule.I3  # the stricter outcome first: I3, I6, I7


def test_i7_grade_4_in_history_withdraws_only_under_the_label_policy() -> None:
    assert LABEL.reactions.grade4_policy is Grade4Policy.DISCONTINUE
    assert history_withdrawal(_course(4), PROTOCOL.reactions) is None
    found = history_withdrawal(_course(4), LABEL.reactions)
    assert found is not None
    assert found.rule is Rule.I7


@given(st.lists(st.integers(min_value=0, max_value=4), max_size=12))
def test_i6_history_withdraws_exactly_when_three_reactions_reached_grade_3(
    grades: list[int],
) -> None:
    """I6: an entered grade 3 withdraws exactly when it is the third (or a later) occurrence."""
    found = history_withdrawal(_course(*grades, 3), PROTOCOL.reactions)
    severe = sum(1 for g in grades if g >= 3) + 1  # the entry is a grade 3
    assert (found is not None) == (severe >= 3)
    if found is not None:
        assert found.rule is Rule.I6


# -- D2 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "day", "weeks"),
    [
        (2, None, 1),
        (8, None, 1),
        (9, None, 1),
        (10, None, 2),
        (16, None, 2),
        (17, None, 2),
        (18, None, 4),
    ],
)
def test_d2_the_earliest_start_follows_the_schedule(
    number: int, day: int | None, weeks: int
) -> None:
    """D2: weekly in weeks 1-8 (infusions 1-8; 9 in week 9), every 2 weeks to week 24 (10-16 in
    weeks 11-23, 17 in week 25), every 4 weeks from week 25 (18 in week 29)."""
    expected = T0 + timedelta(weeks=weeks) - SCHEDULE_MARGIN
    assert earliest_start(PROTOCOL.schedule, number, day, T0) == expected


def test_d2_day_2_of_a_split_first_dose_is_the_day_after() -> None:
    assert earliest_start(PROTOCOL.schedule, 1, 2, T0) == T0 + timedelta(days=1) - SCHEDULE_MARGIN


def test_d2_sooner_is_refused_on_time_is_allowed_and_an_override_needs_a_reason() -> None:
    schedule = PROTOCOL.schedule
    soon = T0 + timedelta(days=6)
    refused = schedule_gate(schedule, 2, None, previous_start=T0, start_at=soon)
    assert (refused.allowed, refused.rule) == (False, Rule.D2)
    blank = schedule_gate(schedule, 2, None, previous_start=T0, start_at=soon, override_reason=" ")
    assert not blank.allowed
    assert "non-empty reason" in blank.reason
    overridden = schedule_gate(
        schedule, 2, None, previous_start=T0, start_at=soon, override_reason="holiday"
    )
    assert (overridden.allowed, overridden.overridden) == (True, True)
    assert overridden.audit()["override_reason"] == "holiday"
    # the same day a week later, two hours earlier in the day: on time
    on_time = schedule_gate(
        schedule, 2, None, previous_start=T0, start_at=T0 + timedelta(days=7, hours=-2)
    )
    assert on_time.allowed
    assert not on_time.overridden


def test_d2_with_no_dated_earlier_infusion_the_spacing_is_not_checked_and_says_so() -> None:
    gate = schedule_gate(PROTOCOL.schedule, 3, None, previous_start=None, start_at=T0)
    assert gate.allowed
    assert "not checked" in gate.reason


# -- the state shown -------------------------------------------------------------------------


def _running(**changes: object) -> object:
    return running_first(T0, **changes)


@pytest.mark.parametrize(
    ("changes", "shown", "rule"),
    [
        ({}, "running", None),
        ({"alarms": frozenset({"occlusion"}), "pump_running": False}, "paused", Rule.A1),
        ({"bag_expired": True, "pump_running": False}, "paused", Rule.L9),
        ({"link_lost": True}, "running", Rule.A2),
        ({"unexplained_stop": True, "pump_running": False}, "paused", Rule.A4),
        ({"stop_unconfirmed": True}, "running", Rule.A3),
        ({"latched": frozenset({"over_infusion"}), "pump_running": False}, "paused", Rule.L3),
        ({"latched": frozenset({"command_denied"}), "pump_running": False}, "paused", Rule.A1),
        ({"held": True}, "running", Rule.L7),
        ({"alarms": frozenset({"low_battery"})}, "running", Rule.A1),
        ({"latched": frozenset({"comm_loss"})}, "running", Rule.A2),
        ({"phase": InfusionPhase.PAUSED, "stop_unconfirmed": True}, "paused", Rule.A3),
        ({"phase": InfusionPhase.STOPPED, "stop_unconfirmed": True}, "stopped", Rule.A3),
        ({"phase": InfusionPhase.WITHDRAWN, "stop_unconfirmed": True}, "withdrawn", Rule.A3),
        ({"phase": InfusionPhase.STOPPED, "stop_reason": "x"}, "stopped", Rule.A6),
        ({"phase": InfusionPhase.COMPLETED}, "completed", Rule.L3),
    ],
)
def test_a1_l9_a2_a4_the_state_shown_says_what_the_pump_does_and_why(
    changes: dict[str, object], shown: str, rule: Rule | None
) -> None:
    """A1, L9, A2, A3, A4, L7: `paused` while the pump stands stopped for a cause, with the
    cause's rule; the phase and a reason where the pump may run; a stop not yet confirmed is
    the reason in every phase (A3)."""
    public = public_state(_running(**changes))  # type: ignore[arg-type]
    assert (public.state, public.rule) == (shown, rule)
    assert (public.message is None) == (rule is None)
