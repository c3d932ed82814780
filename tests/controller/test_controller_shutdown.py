"""The controller's shutdown: nothing a supervisor started outlives it.

A cancelled in-flight command used to start the next queued one from its `finally`: a task
sending a command to the pump after the controller had gone (the first test fails without the
fix: the leak fixture, and `command_tasks`, name it). Fates due next loop turn (`_fate_later`)
are kept and cancelled at the end, and those landing while the supervisor ends start nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from supervised_env import OTHER, supervised

from pumpctl.clock import VirtualClock
from pumpctl.core.history import CourseState
from pumpctl.core.machine import ReactionReported, Start


def command_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("command ") and not t.done()]


async def test_a_shutdown_with_commands_queued_starts_none_of_them(
    pump_env: Any, clock: VirtualClock
) -> None:
    """The pump does not answer: the start's first command is in flight, the others queued,
    when the controller shuts down. It is cancelled; no other command is started."""
    async with supervised(pump_env, clock) as supervisor:
        pump_env.model.faults.no_reply = True
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await asyncio.sleep(0)
        assert supervisor._in_flight is not None
        assert supervisor._queue  # the rest of the start waits for the first
    assert command_tasks() == []
    assert supervisor._in_flight is None


async def test_fates_due_as_the_controller_shuts_down_start_nothing(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A stop drops the queued start commands; their fates are due next loop turn, and the
    controller shuts down in this one. They land while the supervisor ends: no command is
    started, and no fate is left pending behind it."""
    async with supervised(pump_env, clock) as supervisor:
        pump_env.model.faults.no_reply = True
        supervisor.submit(Start(actor="nurse", course=CourseState()))
        await asyncio.sleep(0)
        supervisor.submit(ReactionReported(grade=2, signs=OTHER, actor="nurse"))
        assert supervisor._fates  # the dropped commands' fates, due next turn
    for _ in range(20):
        await asyncio.sleep(0)
    assert not supervisor._fates
    assert command_tasks() == []
    assert supervisor._in_flight is None
