"""Wait, bounded, on a condition that a listener-list callback (model or simulator) signals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Bound on a condition the simulator must reach (it acts in well under a millisecond).
UNTIL_BOUND_S = 5.0


async def until(
    predicate: Callable[[], bool],
    listeners: list[Callable[..., None]],
    bound_s: float = UNTIL_BOUND_S,
) -> None:
    """Wait (bounded) until `predicate()` holds, woken by `listeners` callbacks."""
    event = asyncio.Event()

    def check(*_: object) -> None:
        if predicate():
            event.set()

    listeners.append(check)
    try:
        check()
        async with asyncio.timeout(bound_s):
            await event.wait()
    finally:
        listeners.remove(check)
