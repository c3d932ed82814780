"""A3 for a command other than a stop (`pumpctl.controller.carry`): one that fails on the link is
decided from a read of the pump, never sent blind. Carried out after all: confirmed by that read;
not carried out: sent again once, unless a stop came since (then dropped, I1); no read either:
unconfirmed, never sent twice.

On the in-process pump (simulator/memory.py): its `drop_connection` fault fails a command at once
with the link, before the model sees it. `LostOnce` plugs the link back in as that command's
failure comes back, so the read that follows reaches the pump, as a line that dropped one
command and recovered. These paths ran only on the wire before the rule-level tests moved in
process (issue 22's branch coverage before and after: carry.py 77.6 % -> 71.2 %).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from memory_env import MemoryEnv, memory_env
from pump_actions import running

from drivers.base import PumpState, PumpStatus
from pumpctl.clock import VirtualClock
from pumpctl.controller.carry import carry
from pumpctl.core.limits import Limit, constrain
from pumpctl.core.machine import CommandConfirmed, CommandDenied, CommandUnconfirmed, SetRate
from pumpctl.core.rules import Rule
from simulator.memory import MemoryPump

#: The command timeout these tests carry with (wire seconds; the in-process pump's own).
TIMEOUT_S = 0.5
RUNNING_AT = 50.0
STEP_TO = 100.0


class LostOnce(MemoryPump):
    """The in-process pump whose link drops for the next `set_rate` only (`lose_next`)."""

    lose_next = False
    sent: int = 0  # set_rate commands that reached the model

    async def set_rate(self, rate_ml_h: float, *, command_id: str | None = None) -> PumpStatus:
        lost, self.lose_next = self.lose_next, False
        if lost:
            self.model.faults.drop_connection = True
        try:
            status = await super().set_rate(rate_ml_h, command_id=command_id)
        finally:
            if lost:
                self.model.faults.drop_connection = False  # back for what follows
        self.sent += 1
        return status


@asynccontextmanager
async def lost_once(clock: VirtualClock) -> AsyncIterator[tuple[MemoryEnv, LostOnce]]:
    """A pump running at `RUNNING_AT` through a `LostOnce` driver on the same model."""
    async with memory_env(clock, command_timeout_s=TIMEOUT_S) as env:
        await running(env, rate=RUNNING_AT)
        assert env.model.status().rate_ml_h == RUNNING_AT
        async with LostOnce(env.model, command_timeout_s=TIMEOUT_S) as driver:
            yield env, driver


def step(command_id: int = 9) -> SetRate:
    """L1's next rung: `RUNNING_AT` + 50 ml/h."""
    return SetRate(command_id, STEP_TO, constrain([Limit(Rule.L1, STEP_TO, "next step")], 0.1))


async def test_A3_a_rate_lost_with_the_link_is_read_then_sent_again_once_and_confirmed(
    clock: VirtualClock,
) -> None:
    """A3: the step fails on the link; the read after it shows the pump still at the old rate,
    so the step is sent again, once, and its read-back confirms it."""
    async with lost_once(clock) as (env, driver):
        driver.lose_next = True
        fate, read = await carry(driver, step(), "inf.9", timeout_s=TIMEOUT_S)
        assert isinstance(fate, CommandConfirmed), fate
        assert read is not None
        assert read.rate_ml_h == STEP_TO
        assert (env.model.status().rate_ml_h, driver.sent) == (STEP_TO, 1)


async def test_I1_A3_a_rate_lost_with_the_link_is_not_sent_again_once_a_stop_came(
    clock: VirtualClock,
) -> None:
    """I1/A3: the same lost step, but a stop was sent meanwhile (`superseded`): it is never sent
    again (a rate after a reaction's stop would run the pump on), and its fate says so."""
    async with lost_once(clock) as (env, driver):
        driver.lose_next = True
        fate, read = await carry(
            driver, step(), "inf.9", timeout_s=TIMEOUT_S, superseded=lambda: True
        )
        assert isinstance(fate, CommandDenied), fate
        assert (fate.dropped, fate.reason) == (True, "not sent again: a stop came since")
        assert read is not None
        assert read.rate_ml_h == RUNNING_AT
        assert (env.model.status().rate_ml_h, driver.sent) == (RUNNING_AT, 0)


async def test_A3_a_rate_whose_read_fails_too_is_unconfirmed_and_never_sent_twice(
    clock: VirtualClock,
) -> None:
    """A3: the link stays down, so the read fails as well: nothing is known of the step, which
    is unconfirmed (the A3 alarm), not sent a second time; the pump runs on as it was."""
    async with lost_once(clock) as (env, driver):
        await env.break_link()
        fate, read = await carry(driver, step(), "inf.9", timeout_s=TIMEOUT_S)
        assert isinstance(fate, CommandUnconfirmed), fate
        assert read is None
        assert driver.sent == 0
        await env.restore_link()
        assert env.model.status().rate_ml_h == RUNNING_AT
        assert env.model.state is PumpState.RUNNING
