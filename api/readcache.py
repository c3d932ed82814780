"""Reads the web side answers without the kernel (issue 18: a flood of authorised reads must
never reach the loop every stop passes through).

Two parts, both on the web side:

- `SharedReads`: an answer the kernel marks shareable (`SHARED_HEADER`, giving the seconds it
  may be kept: today `GET /infusions`, the read every station repeats) is kept in memory and
  served to every caller of the same role asking the same path and query, until the kernel's
  keep has passed or something may have changed: a request other than a GET answered through
  this web side (unless refused 4xx), or anything new on the kernel's live events (an audit
  row, a resync, the store's state: the web side's one subscription, `api.web.KernelFeed`),
  which is dropped before the event goes to any client, so a page that reads the list when an
  event comes reads it afresh. Callers that miss at once share one request to the kernel. While
  the feed is not connected nothing is kept (a change could not be seen). So however many
  clients ask, the kernel builds a list at most once per change and per keep.
- `ReadBudget`: every other read that reaches the kernel is counted per caller (the account's
  name and the client's address): `read_budget_per_s` a second (default `READS_PER_S`) with a
  burst of `BURST_S` seconds' worth; past
  it the web side answers 429 with `Retry-After` itself. The nurse's stops and `/health` (the
  urgent lane) and every method but GET are never counted: a budget never refuses an action.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = [
    "BURST_S",
    "READS_PER_S",
    "SHARED_HEADER",
    "Answer",
    "OverBudget",
    "ReadBudget",
    "SharedReads",
]

#: The kernel's mark on an answer that depends only on the caller's role, the path and the
#: query: its value is the seconds the web side may serve it unchanged (nothing new meanwhile).
SHARED_HEADER = "x-pumpctl-shared"
#: Shared answers kept at once (distinct role, path and query); the oldest forgotten first.
SHARED_KEPT = 256
#: Kernel reads a second per caller (account and address) by default (the settings'
#: `read_budget_per_s`), and the burst allowed above it, in seconds' worth.
READS_PER_S = 100.0
BURST_S = 2.0
#: Callers whose budget is tracked at once; the one idle longest is forgotten first (a
#: forgotten caller starts again with a full burst).
BUDGETS_KEPT = 10_000

Key = tuple[str, str, str]  # (role, path, query)


class OverBudget(Exception):  # noqa: N818 - a limit reached, answered 429
    """The caller has read the kernel its budget's worth already."""

    def __init__(self, retry_after_s: int, per_s: float) -> None:
        super().__init__(f"more than {per_s:g} reads a second from this caller")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Answer:
    """A kernel answer as the web side passes it on."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Kept:
    generation: int
    until: float  # monotonic seconds
    answer: Answer


class SharedReads:
    """Shareable kernel answers kept until something changes (see the module's words)."""

    def __init__(self, *, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now  # monotonic seconds
        self.generation = 0  # moved by every change seen
        self.live = False  # the feed of changes is connected: only then is anything kept
        self._kept: OrderedDict[Key, _Kept] = OrderedDict()
        self._asking: dict[tuple[Key, int], asyncio.Task[tuple[Answer, float]]] = {}
        self._shareable: OrderedDict[str, None] = OrderedDict()  # paths the kernel marked
        self.hits = 0  # answers served from memory

    def changed(self) -> None:
        """Something may have changed: nothing kept is served again, and no request to the
        kernel begun before now is shared with a caller after now."""
        self.generation += 1
        self._kept.clear()

    def feed(self, *, live: bool) -> None:
        """The feed of changes connected (`live`) or lost: a change while it was lost could
        not be seen, so whatever was kept goes either way."""
        self.live = live
        self.changed()

    async def get(
        self,
        key: Key,
        ask: Callable[[], Awaitable[tuple[Answer, float]]],
        take: Callable[[], None],
    ) -> Answer:
        """The answer for `key`: kept, or joined to the request under way for it, or asked
        (`ask` returns the answer and the seconds it may be kept, 0 when not shareable).
        A request is asked of the kernel only when `take` (the caller's budget,
        `ReadBudget.spend`) allows it: it raises `OverBudget` otherwise. What `ask` raises
        reaches every caller that waited for it.
        Requests for a path the kernel never marked shareable are neither kept nor joined
        (their answer may depend on who asks, not only on the role)."""
        now = self._now()
        kept = self._kept.get(key)
        if kept is not None and kept.generation == self.generation and now < kept.until:
            self.hits += 1
            return kept.answer
        generation = self.generation
        asking = self._asking.get((key, generation)) if key[1] in self._shareable else None
        if asking is None:
            take()  # `OverBudget` when the caller may not ask the kernel now
            asking = asyncio.create_task(self._ask(key, generation, now, ask))
            if key[1] in self._shareable:
                self._asking[key, generation] = asking
        # shielded: a caller that leaves never cancels the request others wait for
        answer, _keep_s = await asyncio.shield(asking)
        return answer

    async def _ask(
        self,
        key: Key,
        generation: int,
        began: float,
        ask: Callable[[], Awaitable[tuple[Answer, float]]],
    ) -> tuple[Answer, float]:
        try:
            answer, keep_s = await ask()
        finally:
            if self._asking.get((key, generation)) is asyncio.current_task():
                del self._asking[key, generation]
        if keep_s > 0:
            self._shareable[key[1]] = None
            while len(self._shareable) > SHARED_KEPT:
                self._shareable.popitem(last=False)
            if self.live and generation == self.generation:
                self._kept[key] = _Kept(generation, began + keep_s, answer)
                self._kept.move_to_end(key)
                while len(self._kept) > SHARED_KEPT:
                    self._kept.popitem(last=False)
        return answer, keep_s


@dataclass
class _Bucket:
    tokens: float
    at: float


class ReadBudget:
    """Kernel reads per caller: a token bucket of `burst` (default `BURST_S` seconds' worth)
    refilled at `per_s` a second."""

    def __init__(
        self,
        *,
        per_s: float = READS_PER_S,
        burst: float | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._now = now  # monotonic seconds
        self.per_s = per_s
        self.burst = max(1.0, per_s * BURST_S) if burst is None else burst
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self.refused = 0  # reads answered 429 (on /metrics' side of the web: the tests count)

    def take(self, name: str, peer: str) -> int | None:
        """None when the caller may read now (one read counted), else the whole seconds to
        wait before the next read will be allowed (its `Retry-After`)."""
        now = self._now()
        caller = (name, peer)
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[caller] = bucket
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_s)
            bucket.at = now
        self._buckets.move_to_end(caller)
        while len(self._buckets) > BUDGETS_KEPT:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        self.refused += 1
        return max(1, math.ceil((1.0 - bucket.tokens) / self.per_s))

    def spend(self, name: str, peer: str) -> None:
        """One read of the kernel by the caller; `OverBudget` when its budget is spent."""
        wait_s = self.take(name, peer)
        if wait_s is not None:
            raise OverBudget(wait_s, self.per_s)
