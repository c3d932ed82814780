"""A4, A7: the service's clock never starts behind the store's last event, whichever clock it
is: the core refuses every event before the last one, a reaction's stop too (I1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.gateway import _after_the_record
from pumpctl.clock import Clock, RealClock, ScaledClock, VirtualClock


@pytest.mark.parametrize(
    "clock",
    [VirtualClock(), ScaledClock(60), RealClock()],
    ids=["virtual", "scaled", "real"],
)
def test_a4_a7_a_clock_behind_the_record_goes_on_from_it(clock: Clock) -> None:
    last = datetime.now(UTC) + timedelta(days=400)
    restarted = _after_the_record(clock, last)
    assert restarted.now() >= last
    assert restarted.now() - last < timedelta(hours=1)


def test_a4_a_clock_ahead_of_the_record_is_kept() -> None:
    clock = ScaledClock(60)
    assert _after_the_record(clock, datetime(2020, 1, 1, tzinfo=UTC)) is clock
    assert _after_the_record(clock, None) is clock
