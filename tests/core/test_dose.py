"""D1-D6: dose and preparation, schedule, pre-/post-medication, blood profile, eligibility."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from planning_helpers import DEFAULT, SPLIT, clean_course, course, infusion, reaction

import pumpctl.core.dose as dose_module
from pumpctl.core.dose import (
    AsthmaSeverity,
    BloodProfile,
    DoseError,
    LungHistory,
    blood_profile_reminder,
    compute_dose,
    eligibility,
    infusion_weeks,
    postmedication,
    premedication,
    premedication_gate,
    round_weight_kg,
    schedule_dates,
    week_of_infusion,
)
from pumpctl.core.history import CourseState
from pumpctl.core.planner import plan

START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

# ---------------------------------------------------------------------------------- D1


def test_D1_half_kilogram_rounds_up() -> None:
    assert round_weight_kg(70.5) == 71
    assert round_weight_kg(72.5) == 73  # banker's rounding would give 72
    assert round_weight_kg(70.49) == 70
    calc = compute_dose(DEFAULT, 70.5, bag_ml=1000)
    assert calc.rounded_weight_kg == 71
    assert calc.dose_mg == 1136


def test_D1_concentrate_replaces_equal_saline_volume() -> None:
    calc = compute_dose(DEFAULT, 70.5, bag_ml=1000)
    assert calc.concentrate_ml == 56.8  # 1136 mg / 20 mg/ml
    assert calc.saline_ml == 943.2
    assert calc.bag_ml == 1000  # the bag stays 1000 ml: the VTBI (L3)
    sheet = "\n".join(calc.sheet())
    assert "0.2 µm in-line filter" in sheet
    assert "flow regulator" in sheet
    assert "day of the infusion" in sheet
    assert "never reduced" in sheet


def test_D1_split_first_dose_is_8_mg_per_kg_each_day() -> None:
    day = plan(SPLIT, 1, CourseState(), split_day=2, weight_kg=70.5)
    assert day.dose_mg == 568
    assert day.bag_ml == 500


def test_D1_plan_dose_follows_weight() -> None:
    assert plan(DEFAULT, 1, CourseState(), weight_kg=70.5).dose_mg == 1136
    assert plan(DEFAULT, 1, CourseState()).dose_mg is None


@pytest.mark.parametrize("weight", [0.0, -70.0, float("nan"), float("inf"), 0.4, 501.0])
def test_D1_bad_weight_refused_naming_field(weight: float) -> None:
    with pytest.raises(DoseError, match="weight_kg"):
        compute_dose(DEFAULT, weight, bag_ml=1000)


def test_D1_no_dose_reduction_api() -> None:
    names = [n for n in dir(dose_module) if "reduc" in n.lower() or "modif" in n.lower()]
    assert names == []


# ---------------------------------------------------------------------------------- D2


def test_D2_weekly_then_every_two_then_every_four_weeks() -> None:
    weeks = infusion_weeks(DEFAULT.schedule, 19)
    assert weeks[:8] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert weeks[8:16] == [9, 11, 13, 15, 17, 19, 21, 23]
    assert weeks[16:] == [25, 29, 33]
    assert week_of_infusion(DEFAULT.schedule, 17) == 25


def test_D2_schedule_dates_from_start() -> None:
    start = date(2025, 1, 6)
    dates = schedule_dates(start, 18, DEFAULT.schedule)
    assert dates[0] == start
    assert dates[1] == date(2025, 1, 13)
    assert dates[8] == start + timedelta(weeks=8)  # week 9
    assert dates[9] == start + timedelta(weeks=10)  # week 11
    assert dates[16] == start + timedelta(weeks=24)  # week 25
    assert dates[17] == start + timedelta(weeks=28)  # week 29


# ---------------------------------------------------------------------------------- D3


def steroid(infusion_number: int, history: CourseState) -> str:
    return premedication(infusion_number, history)[0].dose


def test_D3_premedication_list() -> None:
    meds = premedication(1, CourseState())
    assert [(m.drug.split()[0], m.dose, m.optional) for m in meds] == [
        ("methylprednisolone", "100 mg", False),
        ("paracetamol", "650-1000 mg", False),
        ("diphenhydramine", "25-50 mg", False),
        ("montelukast", "10 mg", True),
    ]
    assert all(m.rule == "D3" for m in meds)


def test_D3_corticosteroid_100_then_60_mg() -> None:
    assert steroid(1, CourseState()) == "100 mg"
    assert steroid(2, clean_course(1)) == "100 mg"
    assert steroid(3, clean_course(2)) == "60 mg"
    assert steroid(3, course(infusion(1), infusion(2, reaction(2, 30)))) == "100 mg"
    # after any reaction later in the course, back to 100 mg
    later = course(infusion(1), infusion(2), infusion(3, reaction(3, 200, rate_ml_h=166.6)))
    assert steroid(4, later) == "100 mg"
    # infusions 1-2 not on record: the safer 100 mg
    assert steroid(3, CourseState()) == "100 mg"


def test_D3_gate_inside_window_allows() -> None:
    decision = premedication_gate(DEFAULT, START - timedelta(minutes=60), START)
    assert decision.allowed
    assert not decision.overridden
    assert premedication_gate(DEFAULT, START - timedelta(minutes=15), START).allowed
    assert premedication_gate(DEFAULT, START - timedelta(minutes=120), START).allowed


@pytest.mark.parametrize("before_min", [14, 121, -5])
def test_D3_gate_outside_window_refused(before_min: int) -> None:
    decision = premedication_gate(DEFAULT, START - timedelta(minutes=before_min), START)
    assert not decision.allowed
    assert decision.rule == "D3"
    assert "15-120 min window" in decision.reason


def test_D3_gate_without_premedication_refused_unless_override() -> None:
    refused = premedication_gate(DEFAULT, None, START)
    assert not refused.allowed
    assert "no premedication" in refused.reason
    blank = premedication_gate(DEFAULT, None, START, override_reason="   ")
    assert not blank.allowed
    assert "non-empty reason" in blank.reason
    allowed = premedication_gate(DEFAULT, None, START, override_reason="given on the ward at 7:00")
    assert allowed.allowed
    assert allowed.overridden
    assert allowed.audit()["override_reason"] == "given on the ward at 7:00"


def test_D3_gate_refuses_mixed_naive_and_aware_times() -> None:
    with pytest.raises(ValueError, match="premedication_at"):
        premedication_gate(DEFAULT, datetime(2025, 3, 3, 8, 0), START)  # noqa: DTZ001


# ---------------------------------------------------------------------------------- D4


def test_D4_post_medication_days_1_and_2() -> None:
    (steroid_item,) = postmedication(1, CourseState())
    assert steroid_item.dose == "20 mg"
    assert "day 1 and day 2" in steroid_item.when
    assert not steroid_item.optional


def test_D4_may_stop_after_four_infusions_without_major_reaction() -> None:
    assert postmedication(5, clean_course(4))[0].optional
    assert not postmedication(4, clean_course(3))[0].optional
    major = course(infusion(1), infusion(2, reaction(2, 30, grade=2)), infusion(3), infusion(4))
    assert not postmedication(5, major)[0].optional
    minor = course(infusion(1), infusion(2, reaction(2, 30, grade=1)), infusion(3), infusion(4))
    assert postmedication(5, minor)[0].optional


def test_D4_lung_disease_additions() -> None:
    items = postmedication(1, CourseState(), obstructive_lung_disease=True)
    text = " ".join(f"{m.drug} {m.note}" for m in items)
    assert "bronchodilators" in text
    assert "inhaled corticosteroid" in text
    assert "2 nights" in text


# ---------------------------------------------------------------------------------- D5


def test_D5_missing_blood_profile_before_first_infusion() -> None:
    reminder = blood_profile_reminder(1, BloodProfile(abo=True))
    assert reminder.missing == ("RhD", "IAT")
    assert "before the first infusion" in reminder.lines[0]
    text = " ".join(reminder.lines)
    assert "5 months" in text
    assert "6 months" in text
    assert "ABO/RhD typing is not affected" in text


def test_D5_complete_profile_keeps_the_facts() -> None:
    reminder = blood_profile_reminder(1, BloodProfile(abo=True, rhd=True, iat=True))
    assert reminder.complete
    assert len(reminder.lines) == 2
    assert all(line.startswith("D5") for line in reminder.lines)


# ---------------------------------------------------------------------------------- D6


def test_D6_copd_fev1_below_50_refused() -> None:
    decision = eligibility(LungHistory(copd=True, fev1_pct_predicted=45))
    assert not decision.allowed
    assert decision.rule == "D6"
    assert "FEV1 45 %" in decision.reasons[0]
    assert eligibility(LungHistory(copd=True, fev1_pct_predicted=50)).allowed


def test_D6_moderate_persistent_asthma_refused_unless_override() -> None:
    lung = LungHistory(asthma_past_2_years=AsthmaSeverity.MODERATE_PERSISTENT)
    assert not eligibility(lung).allowed
    assert not eligibility(lung, override_reason="").allowed
    overridden = eligibility(lung, override_reason="pulmonologist agrees; monitored admission")
    assert overridden.allowed
    assert overridden.overridden
    assert overridden.audit()["reasons"] == ["moderate persistent asthma within the past 2 years"]
    assert eligibility(LungHistory(asthma_past_2_years=AsthmaSeverity.MILD_PERSISTENT)).allowed


def test_D6_copd_without_fev1_refused() -> None:
    decision = eligibility(LungHistory(copd=True))
    assert not decision.allowed
    assert "no FEV1" in decision.reasons[0]
