"""Capped exponential backoff with jitter, shared by every driver that reconnects a lost link.

Delays are wire time (event-loop seconds, docs/architecture.md, "Time"): they pace attempts
on real links, never clinical time. The jitter keeps the pumps of a ward that lost one broker
or one serial hub from reconnecting on one beat.
"""

from __future__ import annotations

import random

__all__ = ["RECONNECT_MAX_S", "RECONNECT_MIN_S", "backoff_delay"]

#: Default first delay and cap of reconnection backoff (wire seconds).
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0


def backoff_delay(attempt: int, minimum: float, maximum: float) -> float:
    """Capped exponential backoff with jitter: in [d/2, d], d = min(maximum, minimum x 2^n)."""
    ceiling = min(maximum, minimum * (2 ** min(attempt, 30)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
