"""A controller supervising one simulated pump with a planned infusion on it (controller tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from pumpctl.clock import VirtualClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.history import CourseState, Sign
from pumpctl.core.machine import Decision, Event, InfusionState, Start, decide, initial_state
from pumpctl.core.protocol import Protocol
from pumpctl.protocols import load_protocol

REVIEW = load_protocol("daratumumab")
OTHER = frozenset({Sign.OTHER})
HOUR = 3600.0

Decide = Callable[[InfusionState, Event, datetime], Decision]


@asynccontextmanager
async def supervised(
    env: Any,
    clock: VirtualClock,
    *,
    number: int = 1,
    course: CourseState | None = None,
    protocol: Protocol = REVIEW,
    decide_fn: Decide = decide,
    start: bool = False,
) -> AsyncIterator[PumpSupervisor]:
    """Infusion `number` of `course` planned (and, with `start`, started) on `env`'s pump."""
    course = course or CourseState()
    supervisor = PumpSupervisor(
        env.driver,
        clock,
        poll_interval_s=0.2,
        command_timeout_s=1.0,
        decide_fn=decide_fn,
        keep_decisions=True,
    )
    state = initial_state(
        protocol, infusion_number=number, course=course, bag_prepared_at=clock.now()
    )
    supervisor.attach(f"inf-{number}", state)
    async with Controller(clock, [supervisor]):
        if start:
            supervisor.submit(Start(actor="nurse", course=course))
        await clock.advance(0)
        yield supervisor
