"""A7: the gateway's wall clock watched against clinical time.

Clinical time runs on the monotonic clock (`RealClock`), so a wall clock stepped by NTP or by
hand moves no clinical interval. A step is still an event the staff and the engineers must
know of: each one (more than `WALL_STEP_S` at once) is logged, audited through `on_step`, and
kept on the watch for `/health` and `/clock`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pumpctl.clock import WallStepWatch

__all__ = ["RECORD_BOUND_S", "WATCH_INTERVAL_S", "watch_wall_clock"]

_log = logging.getLogger("pumpctl.controller")

#: Wire seconds between two looks at the wall clock.
WATCH_INTERVAL_S = 1.0
#: Wire seconds the watch waits for a step's record before it logs it as not recorded.
RECORD_BOUND_S = 5.0


async def watch_wall_clock(
    watch: WallStepWatch,
    on_step: Callable[[float], Awaitable[None]],
    interval_s: float = WATCH_INTERVAL_S,
) -> None:
    """Look at the wall clock every `interval_s` (wire time) until cancelled; await `on_step`
    with each step seen, in seconds (+ forward, - backward), for at most `RECORD_BOUND_S`
    (`on_step` records off the event loop: a store that does not answer delays no stop)."""
    while True:
        await asyncio.sleep(interval_s)
        step = watch.check()
        if step is None:
            continue
        _log.warning(
            "clock rule=A7: the wall clock was stepped by %+.1f s; clinical time runs on the "
            "monotonic clock and takes no step",
            step,
        )
        try:
            async with asyncio.timeout(RECORD_BOUND_S):
                await on_step(step)
        except Exception:  # noqa: BLE001 - the audit failing must not end the watch
            _log.exception("clock rule=A7: the step could not be recorded")
