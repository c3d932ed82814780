"""The planner: L1-L6 on Table 3's rows, L4/L5 row selection, the protocol variants."""

from __future__ import annotations

import itertools

import pytest
from planning_helpers import (
    DEFAULT,
    LABEL,
    SPLIT,
    clean_course,
    course,
    infusion,
    protocol_variant,
    reaction,
)

from pumpctl.core.history import CourseState
from pumpctl.core.planner import (
    MissingHistoryError,
    Plan,
    PlanningError,
    next_step,
    plan,
    select_row,
)
from pumpctl.core.protocol import RowKind


def profile(result: Plan) -> list[tuple[float, float]]:
    """(start_min, rate_ml_h) of each step."""
    return [(s.start_min, s.rate_ml_h) for s in result.steps]


def delivered_ml(result: Plan) -> float:
    """Volume the steps deliver over the planned running time."""
    ends = [s.start_min for s in result.steps[1:]] + [result.duration_min]
    return sum(
        s.rate_ml_h * (end - s.start_min) / 60 for s, end in zip(result.steps, ends, strict=True)
    )


# ------------------------------------------------------------------ reference profiles


def test_reference_first_infusion_390_min() -> None:
    result = plan(DEFAULT, 1, CourseState())
    assert result.row.kind is RowKind.FIRST
    assert result.bag_ml == 1000
    assert result.initial_rate_ml_h == 50
    assert profile(result) == [(0, 50), (60, 100), (120, 150), (180, 200)]
    assert result.duration_min == pytest.approx(390, abs=1e-9)  # 3 h + 700 ml at 200 ml/h


def test_reference_second_infusion_240_min() -> None:
    result = plan(DEFAULT, 2, clean_course(1))
    assert result.row.kind is RowKind.SECOND
    assert result.bag_ml == 500
    assert profile(result) == [(0, 50), (60, 100), (120, 150), (180, 200)]
    assert result.duration_min == pytest.approx(240, abs=1e-9)


def test_reference_subsequent_infusion_210_min() -> None:
    result = plan(DEFAULT, 3, clean_course(2))
    assert result.row.kind is RowKind.SUBSEQUENT
    assert result.bag_ml == 500
    assert profile(result) == [(0, 100), (60, 150), (120, 166.6)]
    assert result.steps[-1].decision.bound_by.rule == "L6"
    assert result.duration_min == pytest.approx(120 + 250 / 166.6 * 60)  # 210.04 min
    assert abs(result.duration_min - 210) < 1


# ----------------------------------------------------------------------------- L1-L3


def test_L1_rate_rises_one_increment_per_full_interval() -> None:
    result = plan(DEFAULT, 1, CourseState())
    starts = [s.start_min for s in result.steps]
    rates = [s.rate_ml_h for s in result.steps]
    assert starts == [0, 60, 120, 180]
    assert [b - a for a, b in itertools.pairwise(rates)] == [50, 50, 50]
    assert all(s.decision.bound_by.rule == "L1" for s in result.steps)


def test_L1_longer_interval_in_protocol_spaces_the_steps() -> None:
    slow = protocol_variant({"interval_min = 60": "interval_min = 90"})
    result = plan(slow, 1, CourseState())
    assert [s.start_min for s in result.steps] == [0, 90, 180, 270]


def test_L2_no_step_above_protocol_maximum() -> None:
    capped = protocol_variant({"max_rate_ml_h = 200.0": "max_rate_ml_h = 170.0"})
    result = plan(capped, 1, CourseState())
    assert profile(result) == [(0, 50), (60, 100), (120, 150), (180, 170)]
    assert result.steps[-1].decision.bound_by.rule == "L2"
    # 300 ml in 3 h, then 700 ml at 170 ml/h
    assert result.duration_min == pytest.approx(180 + 700 / 170 * 60)


def test_L3_bag_volume_is_the_vtbi_and_steps_deliver_it() -> None:
    for number, history, bag in (
        (1, CourseState(), 1000),
        (2, clean_course(1), 500),
        (3, clean_course(2), 500),
    ):
        result = plan(DEFAULT, number, history)
        assert result.bag_ml == bag
        assert "L3" in result.rules
        assert delivered_ml(result) == pytest.approx(bag, abs=0.01)


# -------------------------------------------------------------------------------- L4


def test_L4_reaction_in_first_3h_repeats_first_row() -> None:
    history = course(infusion(1, reaction(1, 150, rate_ml_h=150)))
    row = select_row(DEFAULT, 2, history)
    assert row.kind is RowKind.FIRST
    assert row.bag_ml == 1000
    assert row.initial_rate_ml_h == 50
    assert row.rule_ids == ("L4",)
    assert plan(DEFAULT, 2, history).duration_min == pytest.approx(390)


def test_L4_reaction_reported_while_paused_in_window_counts() -> None:
    history = course(infusion(1, reaction(1, 179.5, rate_ml_h=0)))
    assert select_row(DEFAULT, 2, history).kind is RowKind.FIRST


def test_L4_reaction_at_exactly_3h_counts() -> None:
    history = course(infusion(1, reaction(1, 180, rate_ml_h=150)))
    assert select_row(DEFAULT, 2, history).kind is RowKind.FIRST


def test_L4_reaction_after_first_3h_keeps_second_row() -> None:
    history = course(infusion(1, reaction(1, 200, grade=2, rate_ml_h=200)))
    row = select_row(DEFAULT, 2, history)
    assert row.kind is RowKind.SECOND
    assert row.bag_ml == 500


def test_L4_delayed_reaction_after_completion_repeats_first_row() -> None:
    history = course(infusion(1, reaction(1, 390, rate_ml_h=0, after_completion=True)))
    assert select_row(DEFAULT, 2, history).kind is RowKind.FIRST


def test_L4_incomplete_first_infusion_repeats_first_row() -> None:
    history = course(infusion(1, highest=100, completed=False))
    assert select_row(DEFAULT, 2, history).kind is RowKind.FIRST


def test_L4_missing_history_is_refused() -> None:
    with pytest.raises(MissingHistoryError, match="L4: no record of infusion 1"):
        select_row(DEFAULT, 2, CourseState())


# -------------------------------------------------------------------------------- L5


def test_L5_clean_first_two_at_100_start_subsequent_row() -> None:
    row = select_row(DEFAULT, 3, course(infusion(1, highest=100), infusion(2, highest=100)))
    assert row.kind is RowKind.SUBSEQUENT
    assert row.initial_rate_ml_h == 100
    assert row.rule_ids == ("L5", "L6")


def test_L5_any_reaction_in_infusion_2_uses_second_row() -> None:
    # A grade 1 at 230 min (after L4's window, at 200 ml/h) still denies the shorter row.
    history = course(infusion(1), infusion(2, reaction(2, 230, rate_ml_h=200)))
    row = select_row(DEFAULT, 3, history)
    assert row.kind is RowKind.SECOND
    assert row.bag_ml == 500
    assert row.initial_rate_ml_h == 50
    assert plan(DEFAULT, 3, history).duration_min == pytest.approx(240)


def test_L5_first_infusion_below_100_uses_second_row() -> None:
    history = course(infusion(1, highest=50), infusion(2))
    assert select_row(DEFAULT, 3, history).kind is RowKind.SECOND


def test_L5_reaction_in_infusion_1_stays_on_second_row_later() -> None:
    history = course(
        infusion(1, reaction(1, 300, rate_ml_h=200)), infusion(2), infusion(3), infusion(4)
    )
    assert select_row(DEFAULT, 5, history).kind is RowKind.SECOND


def test_L5_missing_infusion_2_is_refused() -> None:
    with pytest.raises(MissingHistoryError, match="L5: no record of infusion 2"):
        select_row(DEFAULT, 3, clean_course(1))


# -------------------------------------------------------------------------------- L6


def test_L6_subsequent_row_never_under_210_min() -> None:
    result = plan(DEFAULT, 4, clean_course(3))
    assert result.duration_min >= 210
    assert "L6" in result.rules


def test_L6_without_minimum_plain_ladder_finishes_in_3h15() -> None:
    """The ladder alone (100, 150, 200) would give 500 ml in 195 min: L6 is what slows it."""
    no_l6 = protocol_variant({'min_duration_min = 210       # L6: 3.5 h, "but not less"\n': ""})
    result = plan(no_l6, 3, clean_course(2))
    assert profile(result) == [(0, 100), (60, 150), (120, 200)]
    assert result.duration_min == pytest.approx(195)
    assert "L6" not in result.rules


def test_L6_bound_step_is_held() -> None:
    result = plan(DEFAULT, 3, clean_course(2))
    held = result.steps[2]
    assert (held.start_min, held.rate_ml_h, held.decision.bound_by.rule) == (120, 166.6, "L6")
    # one interval later, the ladder stays at 166.6 (no creep to 166.8 from rounding)
    assert (
        next_step(DEFAULT, result.row, held.decision, running_min=180, delivered_ml=416.6) is None
    )


# ---------------------------------------------------------------------------- variants


def test_label_previous_clean_allows_subsequent_after_reaction_in_infusion_1() -> None:
    history = course(infusion(1, reaction(1, 60, rate_ml_h=100)), infusion(2, highest=200))
    assert select_row(LABEL, 3, history).kind is RowKind.SUBSEQUENT
    assert select_row(DEFAULT, 3, history).kind is RowKind.SECOND


def test_label_previous_clean_reaction_in_previous_infusion_uses_second_row() -> None:
    history = course(infusion(1), infusion(2), infusion(3, reaction(3, 200, rate_ml_h=166.6)))
    row = select_row(LABEL, 4, history)
    assert row.kind is RowKind.SECOND
    assert "previous_clean" in row.rules[0].reason
    # and the next one, after a clean infusion 4, goes back to the subsequent row
    assert select_row(LABEL, 5, history.record(infusion(4))).kind is RowKind.SUBSEQUENT


def test_split_first_dose_each_day_on_second_row() -> None:
    for day in (1, 2):
        result = plan(SPLIT, 1, CourseState(), split_day=day, weight_kg=70.5)
        assert result.split_day == day
        assert result.row.kind is RowKind.SECOND
        assert result.bag_ml == 500
        assert profile(result) == [(0, 50), (60, 100), (120, 150), (180, 200)]
        assert result.duration_min == pytest.approx(240)
        assert result.dose_mg == 568  # 71 kg x 8 mg/kg


def test_split_first_dose_L4_looks_at_each_day() -> None:
    day1 = infusion(1, day=1)
    day2_reaction = infusion(1, reaction(1, 100, rate_ml_h=100), day=2)
    assert select_row(SPLIT, 2, course(day1, infusion(1, day=2))).kind is RowKind.SECOND
    assert select_row(SPLIT, 2, course(day1, day2_reaction)).kind is RowKind.FIRST


def test_split_first_dose_needs_both_days() -> None:
    with pytest.raises(MissingHistoryError, match="both days"):
        select_row(SPLIT, 2, course(infusion(1, day=1)))


def test_day_refused_outside_split_first_dose() -> None:
    with pytest.raises(PlanningError, match="day"):
        select_row(DEFAULT, 1, CourseState(), split_day=1)
    with pytest.raises(PlanningError, match="day"):
        select_row(SPLIT, 2, course(infusion(1, day=1), infusion(1, day=2)), split_day=2)
    with pytest.raises(PlanningError, match="day: must be 1 or 2"):
        select_row(SPLIT, 1, CourseState(), split_day=3)


def test_I8_withdrawn_course_is_not_planned() -> None:
    withdrawn = CourseState(infusions=(infusion(1),), withdrawn=True, withdrawn_reason="I3")
    with pytest.raises(PlanningError, match="I8"):
        plan(DEFAULT, 2, withdrawn)


def test_infusion_number_must_be_positive() -> None:
    with pytest.raises(PlanningError, match="infusion_number"):
        plan(DEFAULT, 0, CourseState())


def test_plan_rules_name_row_and_rate_rules() -> None:
    assert plan(DEFAULT, 1, CourseState()).rules == ("L3", "L1", "L2")
    assert plan(DEFAULT, 3, clean_course(2), weight_kg=80).rules == (
        "L5",
        "L6",
        "L3",
        "L1",
        "L2",
        "D1",
    )


def test_course_records_one_per_split_day() -> None:
    history = course(infusion(1, day=1)).record(infusion(1, day=2))
    assert [i.day for i in history.infusion(1)] == [1, 2]
    with pytest.raises(ValueError, match="recorded twice"):
        course(infusion(1, day=1), infusion(1))
