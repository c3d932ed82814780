"""Failed sign-ins slow down, then lock out, per name and per address (issue 20).

One `Throttle` per kind of key (the name given, the client's address). The failures of the
last `WINDOW_S` are kept per key (at most `LOCK_AFTER`); after `FREE_FAILURES` of them the next
attempt waits `2 ** (n - FREE_FAILURES)` s after the last failure (1, 2, 4, ... 64 s), and
after `LOCK_AFTER` the key is locked until `WINDOW_S` after its last failure. An attempt too
early is told how long to wait (`wait_s`: the route answers 429 with `Retry-After`) and
checks nothing. Keys are bounded (`MAX_KEYS`; the one touched longest ago is forgotten first).

Time is the monotonic clock's (wire time: about real attempts, never clinical time).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["FREE_FAILURES", "LOCK_AFTER", "MAX_KEYS", "WINDOW_S", "Throttle", "retry_after"]

#: Failures that cost nothing more than the check itself.
FREE_FAILURES = 3
#: Failures within the window that lock the key until the window after the last one ends.
LOCK_AFTER = 10
#: Seconds a failure is remembered (and a lock lasts from the last failure).
WINDOW_S = 15 * 60.0
#: Keys remembered at most, per throttle.
MAX_KEYS = 10_000


class Throttle:
    """Failed attempts per key, and how long the next attempt must wait."""

    def __init__(
        self, *, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, ()) if now - t < WINDOW_S]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def wait_s(self, key: str) -> float:
        """Seconds before `key` may be tried again (0: now)."""
        now = self._clock()
        recent = self._recent(key, now)
        if len(recent) >= LOCK_AFTER:
            return max(0.0, recent[-1] + WINDOW_S - now)
        if len(recent) >= FREE_FAILURES:
            return max(0.0, recent[-1] + 2.0 ** (len(recent) - FREE_FAILURES) - now)
        return 0.0

    def locked(self, key: str) -> bool:
        """Whether `key` has failed `LOCK_AFTER` times within the window."""
        return len(self._recent(key, self._clock())) >= LOCK_AFTER

    def failed(self, key: str) -> None:
        """One more failure of `key`."""
        now = self._clock()
        recent = self._recent(key, now)
        recent.append(now)
        self._failures[key] = recent[-LOCK_AFTER:]
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """`key` signed in: its failures are forgotten."""
        self._failures.pop(key, None)


def retry_after(wait_s: float) -> str:
    """A `Retry-After` header's value for a wait: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
