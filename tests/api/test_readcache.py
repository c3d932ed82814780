"""The web side's reads without the kernel (api/readcache.py, issue 18): one request to the
kernel for many callers of a shareable answer, nothing kept past a change or the kernel's keep
or while the feed of changes is lost, and a budget per caller for every other read. Time is an
injected clock; the kernel is a function that counts its calls and answers when told."""

from __future__ import annotations

import asyncio

import pytest

from api.readcache import (
    BURST_S,
    READS_PER_S,
    Answer,
    OverBudget,
    ReadBudget,
    SharedReads,
)

LIST = ("clinician", "/api/v1/infusions", "")


class Kernel:
    """A kernel's answers, each held until `answer()` lets it go; `keep_s` its mark."""

    def __init__(self, keep_s: float = 1.0) -> None:
        self.keep_s = keep_s
        self.asked = 0
        self.release = asyncio.Event()

    async def ask(self) -> tuple[Answer, float]:
        self.asked += 1
        body = f"list {self.asked}".encode()
        await self.release.wait()
        return Answer(200, {"content-type": "application/json"}, body), self.keep_s


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def free() -> None:
    """A caller with budget to spare."""


async def _read(shared: SharedReads, kernel: Kernel, key: tuple[str, str, str] = LIST) -> bytes:
    return (await shared.get(key, kernel.ask, free)).body


async def test_callers_at_once_share_one_kernel_request_and_later_ones_are_served_from_memory() -> (
    None
):
    shared, kernel = SharedReads(), Kernel()
    shared.feed(live=True)
    kernel.release.set()
    await _read(shared, kernel)  # the kernel marked the path shareable
    kernel.release.clear()
    shared.changed()
    readers = [asyncio.create_task(_read(shared, kernel)) for _ in range(50)]
    await asyncio.sleep(0)  # every reader has asked (one event-loop turn, no timing)
    kernel.release.set()
    bodies = await asyncio.gather(*readers)
    assert kernel.asked == 2
    assert set(bodies) == {b"list 2"}
    assert await _read(shared, kernel) == b"list 2"
    assert kernel.asked == 2
    assert shared.hits == 1


async def test_a_change_is_seen_by_the_next_read_and_never_joins_a_request_begun_before_it() -> (
    None
):
    shared, kernel = SharedReads(), Kernel()
    shared.feed(live=True)
    kernel.release.set()
    assert await _read(shared, kernel) == b"list 1"
    assert await _read(shared, kernel) == b"list 1"
    kernel.release.clear()
    shared.changed()
    before = asyncio.create_task(_read(shared, kernel))
    await asyncio.sleep(0)
    shared.changed()  # e.g. a reaction answered while the list was being built
    after = asyncio.create_task(_read(shared, kernel))
    await asyncio.sleep(0)
    kernel.release.set()
    assert await before == b"list 2"
    assert await after == b"list 3"
    assert await _read(shared, kernel) == b"list 3"  # the newer one is what is kept
    assert kernel.asked == 3


async def test_nothing_is_served_past_the_kernels_keep() -> None:
    clock = Clock()
    shared, kernel = SharedReads(now=clock), Kernel(keep_s=0.5)
    shared.feed(live=True)
    kernel.release.set()
    assert await _read(shared, kernel) == b"list 1"
    clock.t += 0.49
    assert await _read(shared, kernel) == b"list 1"
    clock.t += 0.02
    assert await _read(shared, kernel) == b"list 2"


async def test_nothing_is_kept_while_the_feed_of_changes_is_lost() -> None:
    shared, kernel = SharedReads(), Kernel()
    kernel.release.set()
    await _read(shared, kernel)
    await _read(shared, kernel)
    assert kernel.asked == 2  # never connected: every read asks
    shared.feed(live=True)
    await _read(shared, kernel)
    await _read(shared, kernel)
    assert kernel.asked == 3
    shared.feed(live=False)  # lost: what was kept goes, and nothing new is kept
    await _read(shared, kernel)
    await _read(shared, kernel)
    assert kernel.asked == 5


async def test_an_answer_not_marked_shareable_is_neither_kept_nor_shared() -> None:
    """`/me` depends on who asks, not on the role: two callers at once ask twice."""
    shared, kernel = SharedReads(), Kernel(keep_s=0.0)
    shared.feed(live=True)
    me = ("nurse", "/api/v1/me", "")
    first = asyncio.create_task(_read(shared, kernel, me))
    second = asyncio.create_task(_read(shared, kernel, me))
    await asyncio.sleep(0)
    kernel.release.set()
    assert {await first, await second} == {b"list 1", b"list 2"}
    assert await _read(shared, kernel, me) == b"list 3"


async def test_roles_and_queries_are_kept_apart() -> None:
    shared, kernel = SharedReads(), Kernel()
    shared.feed(live=True)
    kernel.release.set()
    await _read(shared, kernel)
    assert await _read(shared, kernel, ("viewer", "/api/v1/infusions", "")) == b"list 2"
    assert await _read(shared, kernel, ("clinician", "/api/v1/infusions", "state=paused")) == (
        b"list 3"
    )
    assert await _read(shared, kernel) == b"list 1"


async def test_what_the_kernel_raises_reaches_every_caller_and_nothing_is_kept() -> None:
    shared = SharedReads()
    shared.feed(live=True)
    calls = 0

    async def down() -> tuple[Answer, float]:
        nonlocal calls
        calls += 1
        raise ConnectionError("the kernel does not answer")

    with pytest.raises(ConnectionError):
        await shared.get(LIST, down, free)
    kernel = Kernel()
    kernel.release.set()
    assert await _read(shared, kernel) == b"list 1"
    assert calls == 1


async def test_a_caller_that_leaves_never_cancels_the_request_others_wait_for() -> None:
    shared, kernel = SharedReads(), Kernel()
    shared.feed(live=True)
    kernel.release.set()
    await _read(shared, kernel)
    shared.changed()
    kernel.release.clear()
    leaving = asyncio.create_task(_read(shared, kernel))
    staying = asyncio.create_task(_read(shared, kernel))
    await asyncio.sleep(0)
    leaving.cancel()
    kernel.release.set()
    assert await staying == b"list 2"
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_read_over_the_budget_is_refused_and_a_shared_one_is_not_counted() -> None:
    clock = Clock()
    budget = ReadBudget(per_s=10.0, burst=3, now=clock)
    assert [budget.take("nurse", "10.0.0.1") for _ in range(3)] == [None, None, None]
    assert budget.take("nurse", "10.0.0.1") == 1
    assert budget.take("nurse", "10.0.0.2") is None  # another address: a budget of its own
    assert budget.take("clinician", "10.0.0.1") is None  # another account too
    clock.t += 0.1  # one read's worth refilled
    assert budget.take("nurse", "10.0.0.1") is None
    assert budget.take("nurse", "10.0.0.1") == 1
    assert budget.refused == 2

    shared, kernel = SharedReads(), Kernel()
    shared.feed(live=True)
    kernel.release.set()
    taken = 0

    def take() -> None:
        nonlocal taken
        taken += 1

    for _ in range(5):
        await shared.get(LIST, kernel.ask, take)
    assert taken == 1  # only the read that asked the kernel counted

    spent = ReadBudget(per_s=0.5, burst=1, now=clock)
    spent.spend("nurse", "10.0.0.1")
    shared.changed()
    with pytest.raises(OverBudget) as refused:
        await shared.get(LIST, kernel.ask, lambda: spent.spend("nurse", "10.0.0.1"))
    assert refused.value.retry_after_s == 2
    assert "more than 0.5 reads a second" in str(refused.value)
    assert kernel.asked == 1  # refused before the kernel was asked


def test_the_default_budget_allows_a_burst_then_refills() -> None:
    clock = Clock()
    budget = ReadBudget(now=clock)
    burst = int(READS_PER_S * BURST_S)
    assert all(budget.take("station", "10.0.0.9") is None for _ in range(burst))
    assert budget.take("station", "10.0.0.9") == 1
    clock.t += 1.0
    assert budget.take("station", "10.0.0.9") is None
