"""Clinical time: one injectable clock (real, virtual, scaled). Standard library only.

Clinical time (escalation intervals, observation windows, bag expiry, the simulated pump's
volume) is read from a `Clock`. Wire time (command timeouts, serial gaps, keepalives) is not
this module's business: it stays on the event loop (`asyncio.timeout`), see architecture.md.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = [
    "WALL_STEP_S",
    "Clock",
    "RealClock",
    "ScaledClock",
    "VirtualClock",
    "WallStepWatch",
    "independent_time",
    "parse_clock",
]

#: Default start of a virtual clock: a fixed instant, so runs are reproducible.
VIRTUAL_EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@runtime_checkable
class Clock(Protocol):
    """Source of clinical time: an aware UTC `now()` and a sleep until an instant."""

    def now(self) -> datetime:
        """Return the current clinical time (timezone-aware, UTC)."""
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once clinical time has reached `deadline` (at once if it already has)."""
        ...


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None:
        raise ValueError(f"clinical time must be timezone-aware, got naive {instant!r}")


#: A7: a wall clock that moved this much against the monotonic clock has been stepped.
WALL_STEP_S = 5.0


class RealClock:
    """Clinical time for production (A7): the wall clock's reading when the clock is made,
    moved on by the monotonic clock. Every clinical interval (L1, I4, I5, L9, A2, the volume
    bounds) is therefore measured on the monotonic clock: a wall clock stepped by NTP (or by
    hand) is never taken as elapsed time. Instants stay close to wall time; `wall_offset_s`
    says how far the wall clock has moved from them since.

    `not_before` (the last clinical instant the store recorded) keeps clinical time from running
    backwards across a restart when the wall clock is now behind it (A4: time while down stays
    unknown). `wall` and `monotonic` are injectable for tests.
    """

    def __init__(
        self,
        *,
        not_before: datetime | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        start = wall()
        if not_before is not None:
            _require_aware(not_before)
            start = max(start, not_before.timestamp())
        self._anchor = start
        self._t0 = monotonic()

    def _seconds(self) -> float:
        return self._anchor + (self._monotonic() - self._t0)

    def now(self) -> datetime:
        """Return the clinical instant: the anchor plus the monotonic time since (UTC)."""
        return datetime.fromtimestamp(self._seconds(), UTC)

    def wall_offset_s(self) -> float:
        """How far the wall clock is ahead (+) or behind (-) clinical time now, in seconds."""
        return self._wall() - self._seconds()

    async def sleep_until(self, deadline: datetime) -> None:
        """Sleep on the event loop (its clock is monotonic too) until `deadline`."""
        _require_aware(deadline)
        while True:
            remaining = (deadline - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)


class WallStepWatch:
    """A7: notices the wall clock being stepped against a `RealClock` (more than `WALL_STEP_S`
    since the offset last accepted). `check()` returns the step in seconds once per step."""

    def __init__(self, clock: RealClock, threshold_s: float = WALL_STEP_S) -> None:
        self.clock = clock
        self.threshold_s = threshold_s
        self.accepted_offset_s = clock.wall_offset_s()
        self.steps = 0
        self.last_step_s: float | None = None
        self.last_step_at: datetime | None = None

    def check(self) -> float | None:
        """The step seen since the last check, or None."""
        offset = self.clock.wall_offset_s()
        step = offset - self.accepted_offset_s
        if abs(step) <= self.threshold_s:
            return None
        self.accepted_offset_s = offset
        self.steps += 1
        self.last_step_s, self.last_step_at = step, self.clock.now()
        return step


def independent_time(clock: Clock) -> Callable[[], datetime]:
    """A reader of clinical time with a time base of its own, for the safety envelope: for a
    `RealClock`, the wall clock at this call moved on by the monotonic clock, read by code
    that shares nothing with `RealClock` (a fault of one cannot move the other); for a virtual
    or scaled clock (simulated pumps only), the clock itself."""
    if not isinstance(clock, RealClock):
        return clock.now
    anchor = clock.now().timestamp()
    t0 = time.monotonic()

    def now() -> datetime:
        return datetime.fromtimestamp(anchor + (time.monotonic() - t0), UTC)

    return now


class ScaledClock:
    """Clinical time running `factor` times faster than real time, for demos.

    By default elapsed time is measured on this process's monotonic clock from its creation.
    With `wall_epoch` (Unix seconds) it is measured on the wall clock from that instant instead:
    clinical now = start + (time.time() - wall_epoch) x factor, with `start` defaulting to the
    wall epoch itself. Separate processes given the same factor and epoch then agree on clinical
    time (a simulator and a controller in tests; `parse_clock("scaled:F@EPOCH")`). The wall
    clock may be stepped; that is accepted only for simulated pumps, as scaled time is.
    """

    def __init__(
        self, factor: float, start: datetime | None = None, *, wall_epoch: float | None = None
    ) -> None:
        if not factor > 0:
            raise ValueError(f"scaled clock: factor must be > 0, got {factor}")
        self.factor = factor
        self.wall_epoch = wall_epoch
        if start is None:
            start = (
                datetime.fromtimestamp(wall_epoch, UTC)
                if wall_epoch is not None
                else datetime.now(UTC)
            )
        self._start = start
        _require_aware(self._start)
        self._t0 = time.monotonic()

    def _elapsed_s(self) -> float:
        if self.wall_epoch is not None:
            return time.time() - self.wall_epoch
        return time.monotonic() - self._t0

    def now(self) -> datetime:
        """Return start + elapsed real time x factor."""
        return self._start + timedelta(seconds=self._elapsed_s() * self.factor)

    async def sleep_until(self, deadline: datetime) -> None:
        """Sleep the real time that corresponds to the clinical time left."""
        _require_aware(deadline)
        while True:
            remaining = (deadline - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining / self.factor)


class VirtualClock:
    """Deterministic clinical time that moves only when `advance` is called.

    `advance(seconds)` moves time deadline by deadline: at each sleeper's deadline it sets the
    time, wakes every sleeper due then, and awaits `settle()` so that what those sleepers caused
    is done before time moves on. The default `settle` lets woken tasks run until the event loop
    has nothing ready; a controller can install a stricter one (e.g. "every command confirmed").
    """

    def __init__(
        self,
        start: datetime = VIRTUAL_EPOCH,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        _require_aware(start)
        self._now = start
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._settle = settle if settle is not None else _yield_until_quiet

    def now(self) -> datetime:
        """Return the current virtual time."""
        return self._now

    @property
    def next_deadline(self) -> datetime | None:
        """The earliest instant some task is sleeping until, or None."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    def set_settle(self, settle: Callable[[], Awaitable[None]]) -> None:
        """Install what `advance` awaits after each deadline."""
        self._settle = settle

    async def sleep_until(self, deadline: datetime) -> None:
        """Suspend until `advance` reaches `deadline`."""
        _require_aware(deadline)
        if deadline <= self._now:
            await asyncio.sleep(0)  # still a suspension point, as a real sleep would be
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers deadline by deadline."""
        if seconds < 0:
            raise ValueError(f"virtual clock: cannot go back in time ({seconds} s)")
        await self.advance_to(self._now + timedelta(seconds=seconds))

    async def advance_to(self, target: datetime) -> None:
        """Move time forward to `target`, waking sleepers deadline by deadline."""
        _require_aware(target)
        if target < self._now:
            raise ValueError(f"virtual clock: cannot go back from {self._now} to {target}")
        await self._settle()
        while (due := self.next_deadline) is not None and due <= target:
            self._now = max(self._now, due)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self._settle()
        self._now = target
        await self._settle()

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def _yield_until_quiet(rounds: int = 50) -> None:
    """Let ready tasks run: a bounded number of passes through the event loop."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def parse_clock(spec: str) -> Clock:
    """Build a clock from `real`, `virtual`, `scaled:FACTOR` or `scaled:FACTOR@EPOCH` (the CLI's
    --clock). With `@EPOCH` (Unix seconds, wall clock) the scaled clock starts at that instant
    and runs on the wall clock, so every process given the same spec agrees on clinical time."""
    kind, _, arg = spec.partition(":")
    if kind == "real" and not arg:
        return RealClock()
    if kind == "virtual" and not arg:
        return VirtualClock()
    if kind == "scaled":
        number, at, epoch_text = arg.partition("@")
        try:
            factor = float(number)
        except ValueError:
            raise ValueError(f"--clock scaled:FACTOR needs a number, got {number!r}") from None
        if not at:
            return ScaledClock(factor)
        try:
            epoch = float(epoch_text)
        except ValueError:
            raise ValueError(
                f"--clock scaled:FACTOR@EPOCH needs Unix seconds after @, got {epoch_text!r}"
            ) from None
        if not math.isfinite(epoch) or epoch < 0:
            raise ValueError(f"--clock scaled:FACTOR@EPOCH: bad epoch {epoch_text!r}")
        return ScaledClock(factor, wall_epoch=epoch)
    raise ValueError(
        f"--clock must be real, virtual, scaled:FACTOR or scaled:FACTOR@EPOCH, got {spec!r}"
    )
