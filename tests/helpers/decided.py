"""Waiting, bounded and without sleeping, on what a pump's supervisor decides.

`fate_of` awaits a command's fate through the future the supervisor registered for it
(`PumpSupervisor.fates`). `until` waits for a condition that follows a decision: it is looked at
again after each of the supervisor's decisions, through its decide function wrapped (a test-owned
event: the supervisor's own `_changed` is its deadline task's, which clears it). What changes
without a decision (a command's end: `wait_idle`) has its own way to be awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from pumpctl.controller import PumpSupervisor
from pumpctl.controller.carry import Fate
from pumpctl.core.machine import Decision, Event, InfusionState


def _decisions(supervisor: PumpSupervisor) -> asyncio.Event:
    """An event set at each of `supervisor`'s decisions (its decide function, wrapped once)."""
    decide_fn = supervisor.decide_fn
    decided: asyncio.Event | None = getattr(decide_fn, "decided", None)
    if decided is not None:
        return decided
    event = asyncio.Event()

    def deciding(state: InfusionState, what: Event, now: datetime) -> Decision:
        try:
            return decide_fn(state, what, now)
        finally:
            event.set()  # its waiter runs once `submit` has taken the decision

    deciding.decided = event  # type: ignore[attr-defined]
    supervisor.decide_fn = deciding
    return event


async def until(
    supervisor: PumpSupervisor, holds: Callable[[PumpSupervisor], bool], bound_s: float
) -> None:
    """Return once `holds(supervisor)`, looked at now and after each decision; TimeoutError
    past `bound_s` wire seconds."""
    decided = _decisions(supervisor)
    async with asyncio.timeout(bound_s):
        while not holds(supervisor):
            decided.clear()
            await decided.wait()


async def fate_of(supervisor: PumpSupervisor, command_id: int, bound_s: float) -> Fate | None:
    """The fate of command `command_id`, awaited through its future (None when the supervisor
    let it go without one); AssertionError when its future is not there (fate already known)
    or not done within `bound_s` wire seconds."""
    future = supervisor.fates([command_id]).get(command_id)
    assert future is not None, f"command {command_id} awaits no fate"
    done, _ = await asyncio.wait([future], timeout=bound_s)
    assert done, f"command {command_id}: no fate within {bound_s} s"
    return None if future.cancelled() else future.result()


async def link_lost_at(supervisor: PumpSupervisor, bound_s: float) -> float:
    """The loop time at which the supervisor's infusion was first seen with its link lost (A2),
    looked at now and after each decision; TimeoutError past `bound_s` wire seconds."""
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    def lost(s: PumpSupervisor) -> bool:
        if s.state is not None and s.state.link_lost and not seen:
            seen.append(loop.time())
        return bool(seen)

    await until(supervisor, lost, bound_s)
    return seen[0]
