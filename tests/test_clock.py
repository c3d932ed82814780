"""The one clinical clock: virtual (deterministic), scaled, real; parse_clock for the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from pumpctl.clock import (
    VIRTUAL_EPOCH,
    WALL_STEP_S,
    RealClock,
    ScaledClock,
    VirtualClock,
    WallStepWatch,
    independent_time,
    parse_clock,
)


async def test_virtual_clock_moves_only_when_advanced(clock: VirtualClock) -> None:
    start = clock.now()
    assert start == VIRTUAL_EPOCH
    await asyncio.sleep(0)
    assert clock.now() == start
    await clock.advance(3600)
    assert clock.now() - start == timedelta(hours=1)


async def test_virtual_clock_wakes_sleepers_in_deadline_order(clock: VirtualClock) -> None:
    woken: list[tuple[str, datetime]] = []

    async def sleeper(name: str, after_s: float) -> None:
        await clock.sleep_until(clock.now() + timedelta(seconds=after_s))
        woken.append((name, clock.now()))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(sleeper("late", 7200))
        tg.create_task(sleeper("early", 60))
        tg.create_task(sleeper("never", 90_000))
        await asyncio.sleep(0)
        assert clock.next_deadline == VIRTUAL_EPOCH + timedelta(seconds=60)
        await clock.advance(3 * 3600)
        # each sleeper saw the clock at its own deadline, not at the end of the advance
        assert woken == [
            ("early", VIRTUAL_EPOCH + timedelta(seconds=60)),
            ("late", VIRTUAL_EPOCH + timedelta(seconds=7200)),
        ]
        assert clock.now() == VIRTUAL_EPOCH + timedelta(hours=3)
        await clock.advance(90_000)
    assert woken[-1][0] == "never"


async def test_virtual_clock_runs_a_chain_of_deadlines_within_one_advance(
    clock: VirtualClock,
) -> None:
    """A sleeper that sleeps again (an hourly ladder) fires at every deadline in the span."""
    ticks: list[datetime] = []

    async def hourly() -> None:
        for _ in range(6):
            await clock.sleep_until(clock.now() + timedelta(hours=1))
            ticks.append(clock.now())

    task = asyncio.create_task(hourly())
    await asyncio.sleep(0)
    await clock.advance(6.5 * 3600)
    await task
    assert ticks == [VIRTUAL_EPOCH + timedelta(hours=h) for h in range(1, 7)]


async def test_virtual_clock_awaits_settle_after_each_deadline() -> None:
    settled_at: list[datetime] = []
    clock = VirtualClock()

    async def settle() -> None:
        settled_at.append(clock.now())

    clock.set_settle(settle)
    task = asyncio.create_task(clock.sleep_until(VIRTUAL_EPOCH + timedelta(minutes=30)))
    await asyncio.sleep(0)
    await clock.advance(3600)
    await task
    assert VIRTUAL_EPOCH + timedelta(minutes=30) in settled_at
    assert settled_at[-1] == VIRTUAL_EPOCH + timedelta(hours=1)


async def test_virtual_clock_refuses_to_go_back(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="back"):
        await clock.advance(-1)
    with pytest.raises(ValueError, match="back"):
        await clock.advance_to(VIRTUAL_EPOCH - timedelta(seconds=1))


async def test_clock_refuses_naive_datetimes(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await clock.sleep_until(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        VirtualClock(start=datetime(2026, 1, 1))  # noqa: DTZ001


async def test_sleep_until_the_past_returns_at_once(clock: VirtualClock) -> None:
    await clock.sleep_until(VIRTUAL_EPOCH - timedelta(hours=1))
    assert clock.next_deadline is None


async def test_scaled_clock_runs_faster_than_real_time() -> None:
    scaled = ScaledClock(3600.0, start=VIRTUAL_EPOCH)
    real = RealClock()
    t0 = real.now()
    # one clinical minute at 3600x is 1/60 s of real time
    await scaled.sleep_until(VIRTUAL_EPOCH + timedelta(minutes=1))
    assert scaled.now() >= VIRTUAL_EPOCH + timedelta(minutes=1)
    assert (real.now() - t0) < timedelta(seconds=5)


def test_scaled_clock_refuses_a_non_positive_factor() -> None:
    with pytest.raises(ValueError, match="factor"):
        ScaledClock(0)


async def test_real_clock_is_aware_utc() -> None:
    now = RealClock().now()
    assert now.tzinfo is UTC
    await RealClock().sleep_until(now)  # already past: returns at once


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("real", RealClock), ("virtual", VirtualClock), ("scaled:60", ScaledClock)],
)
def test_parse_clock(spec: str, kind: type) -> None:
    assert isinstance(parse_clock(spec), kind)


@pytest.mark.parametrize("spec", ["scaled:fast", "wall", "real:2", "scaled:-1"])
def test_parse_clock_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"clock|factor"):
        parse_clock(spec)


def test_scaled_clocks_on_a_shared_wall_epoch_agree_across_processes() -> None:
    """Two processes given `scaled:F@EPOCH` read the same clinical time: start = the epoch,
    elapsed wall time x F (time.time(), not a per-process monotonic origin)."""
    epoch = time.time() - 10.0  # ten wall seconds ago
    here = parse_clock(f"scaled:60@{epoch!r}")
    assert isinstance(here, ScaledClock)
    code = (
        "from pumpctl.clock import parse_clock; import sys; "
        "print(parse_clock(sys.argv[1]).now().isoformat())"
    )
    before = here.now()
    other = subprocess.run(
        [sys.executable, "-c", code, f"scaled:60@{epoch!r}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    after = here.now()
    theirs = datetime.fromisoformat(other.stdout.strip())
    assert before <= theirs <= after
    start = datetime.fromtimestamp(epoch, UTC)
    assert before - start >= timedelta(minutes=10)  # 10 wall s x 60
    explicit = ScaledClock(60, start=VIRTUAL_EPOCH, wall_epoch=epoch)
    assert explicit.now() - VIRTUAL_EPOCH >= timedelta(minutes=10)


@pytest.mark.parametrize("spec", ["scaled:60@", "scaled:60@soon", "scaled:60@-5", "scaled:60@nan"])
def test_parse_clock_rejects_a_bad_wall_epoch(spec: str) -> None:
    with pytest.raises(ValueError, match="EPOCH"):
        parse_clock(spec)


class _Times:
    """A wall clock and a monotonic clock a test moves by hand."""

    def __init__(self, wall: float = 1_767_600_000.0) -> None:
        self.wall_s = wall
        self.mono_s = 100.0

    def wall(self) -> float:
        return self.wall_s

    def monotonic(self) -> float:
        return self.mono_s

    def run(self, seconds: float) -> None:
        self.wall_s += seconds
        self.mono_s += seconds


def test_a7_a_stepped_wall_clock_moves_no_clinical_time() -> None:
    """A7: clinical time is the wall clock at the start moved on by the monotonic clock; a
    step of the wall clock (+1 h, -1 h, +1 day) is never taken as elapsed time, only said."""
    times = _Times()
    clock = RealClock(wall=times.wall, monotonic=times.monotonic)
    start = clock.now()
    assert abs(clock.wall_offset_s()) < 1e-6
    times.run(4)
    for step in (3600.0, -7200.0, 86_400.0):
        times.wall_s += step
        assert clock.now() == start + timedelta(seconds=4)
    assert clock.wall_offset_s() == pytest.approx(3600 - 7200 + 86_400)


def test_a7_the_watch_reports_each_step_once_and_ignores_drift() -> None:
    """A7: more than WALL_STEP_S at once is a step, reported once; a slow drift is not."""
    times = _Times()
    clock = RealClock(wall=times.wall, monotonic=times.monotonic)
    watch = WallStepWatch(clock)
    times.wall_s += WALL_STEP_S / 2  # NTP slewing, or a small correction
    assert watch.check() is None
    times.wall_s += 3600
    assert watch.check() == pytest.approx(3600, abs=WALL_STEP_S)
    assert watch.check() is None  # the same step is said once
    times.wall_s -= 7200
    assert watch.check() == pytest.approx(-7200)
    assert (watch.steps, watch.last_step_s) == (2, pytest.approx(-7200))


def test_a4_a7_a_real_clock_never_starts_before_the_record() -> None:
    """A4, A7: a wall clock behind the store's last event (stepped back while the service was
    down) does not move clinical time backwards: the clock goes on from the record."""
    times = _Times()
    last = datetime.fromtimestamp(times.wall_s + 3600, UTC)
    clock = RealClock(not_before=last, wall=times.wall, monotonic=times.monotonic)
    assert clock.now() == last
    times.run(10)
    assert clock.now() == last + timedelta(seconds=10)
    assert clock.wall_offset_s() == pytest.approx(-3600)


def test_a7_the_envelopes_time_has_a_base_of_its_own() -> None:
    """A7: `independent_time` of a real clock reads the monotonic clock itself, not the
    clock's `now`: a fault of one cannot move the other; other clocks are read as they are."""
    times = _Times()
    clock = RealClock(wall=times.wall, monotonic=times.monotonic)
    envelope_now = independent_time(clock)
    times.run(3600)  # the clock's injected monotonic moves; the process's own does not
    assert clock.now() - envelope_now() > timedelta(minutes=59)
    virtual = VirtualClock()
    assert independent_time(virtual) == virtual.now
