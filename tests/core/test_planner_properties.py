"""Property tests of the planner over random protocols and random histories (L1-L6)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from planning_helpers import DEFAULT, course, infusion, reaction

from pumpctl.core.history import CourseState, InfusionRecord
from pumpctl.core.planner import Plan, plan
from pumpctl.core.protocol import Protocol, RowKind

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def protocols(draw: st.DrawFn) -> Protocol:
    """Random consistent protocols (ladder and the three rows; L6 on the subsequent row)."""
    top = draw(st.integers(40, 400)) * 1.0
    increment = draw(st.integers(5, 100)) * 1.0
    interval = draw(st.integers(10, 120))

    def row(with_l6: bool) -> dict[str, Any]:
        bag = draw(st.integers(50, 1500)) * 1.0
        values: dict[str, Any] = {
            "bag_ml": bag,
            "initial_rate_ml_h": draw(st.integers(1, int(top) * 10)) / 10,
        }
        if with_l6:
            shortest = math.ceil(bag / top * 60)
            values["min_duration_min"] = draw(st.integers(shortest, shortest + 600))
        return values

    data = {
        "schema": 1,
        "name": "random",
        "title": "random",
        "source": "hypothesis",
        "ladder": {"increment_ml_h": increment, "interval_min": interval, "max_rate_ml_h": top},
        "rows": {"first": row(False), "second": row(False), "subsequent": row(True)},
        "history": {"subsequent_min_rate_ml_h": min(100.0, top)},
        "schedule": {"phases": [{"every_weeks": 1}]},
    }
    return Protocol.model_validate(data)


def clean(protocol: Protocol, count: int) -> CourseState:
    top = protocol.ladder.max_rate_ml_h
    return course(*(infusion(n, highest=top) for n in range(1, count + 1)))


def check_plan(protocol: Protocol, result: Plan) -> None:
    top = protocol.ladder.max_rate_ml_h
    steps = result.steps
    assert steps[0].start_min == 0
    assert steps[0].rate_ml_h <= result.row.initial_rate_ml_h
    for step in steps:
        assert 0 < step.rate_ml_h <= top  # L2
        assert step.decision.rate_ml_h == step.rate_ml_h
    for before, after in itertools.pairwise(steps):
        rise = after.rate_ml_h - before.rate_ml_h
        assert 0 < rise <= protocol.ladder.increment_ml_h + 1e-9  # L1: at most one increment
        assert after.start_min - before.start_min == protocol.ladder.interval_min  # a full interval
    ends = [s.start_min for s in steps[1:]] + [result.duration_min]
    assert all(end >= s.start_min for s, end in zip(steps, ends, strict=True))
    given_ml = sum(s.rate_ml_h * (e - s.start_min) / 60 for s, e in zip(steps, ends, strict=True))
    assert given_ml == pytest.approx(result.bag_ml, abs=0.01)  # L3: exactly the bag


@SETTINGS
@given(protocols())
def test_L1_L2_L3_every_row_of_random_protocols(protocol: Protocol) -> None:
    for number, history in ((1, CourseState()), (2, clean(protocol, 1)), (3, clean(protocol, 2))):
        check_plan(protocol, plan(protocol, number, history))


@SETTINGS
@given(protocols())
def test_L6_subsequent_row_never_shorter_than_minimum(protocol: Protocol) -> None:
    result = plan(protocol, 3, clean(protocol, 2))
    assert result.row.kind is RowKind.SUBSEQUENT
    minimum = protocol.rows.subsequent.min_duration_min
    assert minimum is not None
    assert result.duration_min >= minimum - 1e-6


reactions_of = st.builds(
    lambda running, grade, after: (running, grade, after),
    st.floats(0, 500, allow_nan=False),
    st.integers(1, 4),
    st.booleans(),
)


@st.composite
def records(draw: st.DrawFn, number: int) -> InfusionRecord:
    """A random earlier infusion `number`: rate reached, completion, reactions."""
    highest = draw(st.sampled_from([50.0, 99.9, 100.0, 150.0, 166.6, 200.0]))
    found = draw(st.lists(reactions_of, max_size=3))
    return infusion(
        number,
        *(
            reaction(
                number, running, grade=grade, rate_ml_h=min(highest, 50), after_completion=after
            )
            for running, grade, after in found
        ),
        highest=highest,
        completed=draw(st.booleans()),
    )


@st.composite
def histories(draw: st.DrawFn) -> CourseState:
    """A random course history of infusions 1..5, a clean one more often than not."""
    return course(*(draw(st.one_of(st.just(infusion(n)), records(n))) for n in range(1, 6)))


def oracle_second(record: InfusionRecord) -> RowKind:
    """L4 as written in clinical-rules.md, independently of the planner's code."""
    in_window = [r for r in record.reactions if r.running_min <= 180 or r.after_completion]
    return RowKind.SECOND if record.completed and not in_window else RowKind.FIRST


def oracle_subsequent(first: InfusionRecord, second: InfusionRecord) -> RowKind:
    """L5 as written in clinical-rules.md."""
    ok = all(
        r.completed and not r.reactions and r.highest_rate_ml_h >= 100 for r in (first, second)
    )
    return RowKind.SUBSEQUENT if ok else RowKind.SECOND


@SETTINGS
@given(histories(), st.integers(2, 6))
def test_L4_L5_row_never_shorter_than_history_allows(history: CourseState, number: int) -> None:
    result = plan(DEFAULT, number, history)
    first, second = history.infusion(1)[0], history.infusion(2)[0]
    expected = oracle_second(first) if number == 2 else oracle_subsequent(first, second)
    assert result.row.kind is expected
    # the allowed row's duration is a floor: the chosen one is never shorter
    allowed = {RowKind.FIRST: 390, RowKind.SECOND: 240, RowKind.SUBSEQUENT: 210}[expected]
    assert result.duration_min >= allowed - 1e-6
    check_plan(DEFAULT, result)
