"""Failed sign-ins and invalid bearer tokens slow down, then lock out (issue 20).

One `Throttle` per kind of key (the kernel's sign-ins: the name given, the client's address;
the web side's bearer tokens: the client's address, `BadTokens`). The failures of the
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

__all__ = [
    "FREE_FAILURES",
    "GOOD_REMEMBERED_S",
    "LOCK_AFTER",
    "MAX_KEYS",
    "WINDOW_S",
    "BadTokens",
    "Throttle",
    "retry_after",
]

#: Failures that cost nothing more than the check itself.
FREE_FAILURES = 3
#: Failures within the window that lock the key until the window after the last one ends.
LOCK_AFTER = 10
#: Seconds a failure is remembered (and a lock lasts from the last failure).
WINDOW_S = 15 * 60.0
#: Keys remembered at most, per throttle (and tokens remembered good, `BadTokens`).
MAX_KEYS = 10_000
#: Seconds a token the kernel said good is remembered as one at the web side (a shift): such a
#: token is never held back by its address's count of invalid tokens.
GOOD_REMEMBERED_S = 12 * 3600.0


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


class BadTokens:
    """The web side's invalid bearer tokens, counted per client address with `Throttle`'s
    policy, and the tokens the kernel said good (by their SHA-256, for `GOOD_REMEMBERED_S`, at
    most `MAX_KEYS`, the one seen good longest ago forgotten first). A token seen good is not a
    guess: its address's count never holds it back, and its refusal later (revoked, signed out,
    its account disabled) is not counted; only tokens never seen good are."""

    def __init__(
        self, *, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.addresses = Throttle(max_keys=max_keys, clock=clock)
        self._good: OrderedDict[str, float] = OrderedDict()  # digest -> when last seen good
        self._max_keys = max_keys
        self._clock = clock

    def seen_good(self, digest: str) -> bool:
        """Whether the token of `digest` was said good within `GOOD_REMEMBERED_S`."""
        seen = self._good.get(digest)
        if seen is None:
            return False
        if self._clock() - seen >= GOOD_REMEMBERED_S:
            del self._good[digest]
            return False
        return True

    def good(self, digest: str) -> None:
        """The kernel said the token of `digest` good (now)."""
        self._good[digest] = self._clock()
        self._good.move_to_end(digest)
        while len(self._good) > self._max_keys:
            self._good.popitem(last=False)

    def forget(self, digest: str) -> None:
        """The token of `digest` is no longer good (signed out through the web side)."""
        self._good.pop(digest, None)

    def wait_s(self, address: str) -> float:
        """Seconds before `address` may have a token never seen good asked again (0: now)."""
        return self.addresses.wait_s(address)

    def refused(self, digest: str, address: str) -> bool:
        """The kernel refused the token of `digest` from `address`: counted against the address
        (True) unless it had been seen good (forgotten then, not counted: False)."""
        if self._good.pop(digest, None) is not None:
            return False
        self.addresses.failed(address)
        return True

    def locked(self, address: str) -> bool:
        """Whether `address` sent `LOCK_AFTER` invalid tokens within the window."""
        return self.addresses.locked(address)


def retry_after(wait_s: float) -> str:
    """A `Retry-After` header's value for a wait: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
