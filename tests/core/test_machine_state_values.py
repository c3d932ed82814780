"""The infusion state as a value: its times, its stored form, the rate at an instant (I10),
and the planned infusion it starts from (L4-L8, D1; issue 22)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, tzinfo

import pytest
from machine_scenario import REVIEW, T0, clean_course, planned
from pydantic import ValidationError

from pumpctl.core.history import CourseState, InfusionRecord
from pumpctl.core.machine import initial_state
from pumpctl.core.machine.state import EARLIEST, LATEST, RatePoint
from pumpctl.core.protocol import RowKind
from pumpctl.protocols import load_protocol


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (datetime(2026, 1, 5, 8), "must be timezone-aware (clinical time is UTC)"),  # noqa: DTZ001
        (
            datetime(2026, 1, 5, 8, tzinfo=_NoOffset()),
            "must be timezone-aware (clinical time is UTC)",
        ),
        (LATEST, "2200-01-01T00:00:00+00:00 is not a plausible clinical time"),
        (
            EARLIEST - timedelta(microseconds=1),
            "1999-12-31T23:59:59.999999+00:00 is not a plausible clinical time",
        ),
    ],
)
def test_A4_a_stored_time_is_aware_and_plausible(value: datetime, words: str) -> None:
    with pytest.raises(ValidationError, match=rf"Value error, {re.escape(words)} \[type"):
        planned().updated({"last_event_at": value})


def test_A4_the_first_plausible_time_is_taken() -> None:
    assert planned().updated({"last_event_at": EARLIEST}).last_event_at == EARLIEST


def test_A4_the_stored_form_uses_the_protocol_file_s_names() -> None:
    stored = json.loads(planned().to_json())
    assert stored["protocol"]["schema"] == 1
    assert "schema_" not in stored["protocol"]


def test_I10_the_rate_at_an_instant_is_the_last_non_zero_rate_confirmed_by_then() -> None:
    points = (
        RatePoint(at=T0, rate_ml_h=0.7),
        RatePoint(at=T0 + timedelta(minutes=10), rate_ml_h=0.0),
        RatePoint(at=T0 + timedelta(minutes=20), rate_ml_h=1.4),
    )
    state = planned().updated({"rate_history": points})
    assert state.rate_at(T0 - timedelta(minutes=1)) == 0.0
    assert state.rate_at(T0) == 0.7
    assert state.rate_at(T0 + timedelta(minutes=15)) == 0.7  # a stop is no rate
    assert state.rate_at(T0 + timedelta(minutes=20)) == 1.4


def test_L8_an_infusion_the_course_already_holds_is_refused_naming_it() -> None:
    course = clean_course(2)
    with pytest.raises(ValueError, match=r"^infusion_number: the course already holds infusion 1$"):
        initial_state(REVIEW, infusion_number=1, course=course, bag_prepared_at=T0)
    split = load_protocol("daratumumab-split")
    day_1 = CourseState(
        infusions=(InfusionRecord(infusion_number=1, day=1, highest_rate_ml_h=100.0),)
    )
    with pytest.raises(ValueError, match=r"already holds infusion 1 day 1$"):
        initial_state(split, infusion_number=1, course=day_1, bag_prepared_at=T0, day=1)
    second_day = initial_state(split, infusion_number=1, course=day_1, bag_prepared_at=T0, day=2)
    assert second_day.day == 2


def test_D1_only_a_split_first_dose_is_given_on_a_day() -> None:
    with pytest.raises(ValueError, match="day: only infusion 1 of a split-first-dose protocol"):
        initial_state(REVIEW, infusion_number=2, course=clean_course(2), bag_prepared_at=T0, day=2)
    assert planned(RowKind.SECOND).day is None
