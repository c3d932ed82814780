"""The kernel's composition root: its parts opened in one fixed order and closed in reverse.

`open_kernel(app, settings, stack)` opens the clock, the store and its writer and readers (and
the audit chain's watch, the accounts), the pumps (real drivers, or simulated ones), their
supervisors, the ward, the recovery of every infusion the store still supervises (A4), the
controller, the wall clock's watch (A7), the MQTT publisher and the live events, and puts on
`app.state` what the kernel's routes use; `stack` closes them in reverse order.
`api.app.create_app` calls it in its lifespan; so does every process that runs a kernel
(`pumpctl serve`, `pumpctl kernel`, `pumpctl demo`, the tests and the benches through them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI

from api.accounts import AccountDirectory, AccountTrail
from api.listing import InfusionList
from api.live import LiveHub
from api.metrics import ServiceMetrics
from api.publish import InfusionPublisher
from api.pumps import open_pumps
from drivers.base import Pump, PumpError
from pumpctl.clock import (
    Clock,
    RealClock,
    ScaledClock,
    VirtualClock,
    WallStepWatch,
    parse_clock,
)
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.controller.recording import recover
from pumpctl.controller.wallclock import watch_wall_clock
from pumpctl.controller.ward import Ward
from pumpctl.protocols import load_protocol
from pumpctl.settings import Settings
from pumpctl.store import Store, StoreError, configured_database_url
from pumpctl.store import migrate as migrations
from pumpctl.store.accounts import AccountBook
from pumpctl.store.auditwatch import AuditWatch
from pumpctl.store.writer import StoreReader, StoreWriter

__all__ = ["database_url", "open_kernel"]

_log = logging.getLogger("pumpctl.api")


def database_url(settings: Settings) -> str:
    """The configured database, else the data directory's SQLite file."""
    return configured_database_url(settings.database, settings.data_dir)


@contextmanager
def _explained(app: FastAPI, prefix: str = "") -> Iterator[None]:
    """A store or pump failure while starting becomes the one line `pumpctl serve` says (it
    reads it from `app.state.startup_error`), then goes on failing the startup."""
    try:
        yield
    except (PumpError, StoreError) as exc:
        app.state.startup_error = f"{prefix}{exc}"
        raise


def _after_the_record(clock: Clock, last: datetime | None) -> Clock:
    """Clinical time never runs backwards across a restart (A4): a virtual clock, or a bench's
    scaled one, goes on from the store's last event; a real one too when the wall clock is now
    behind it (A7)."""
    if last is None or last <= clock.now():
        return clock
    if isinstance(clock, VirtualClock):
        return VirtualClock(start=last)
    if isinstance(clock, ScaledClock) and clock.wall_epoch is None:
        # a bench's scaled clock started again would sit behind the record, and the core
        # refuses every event before its last one, a reaction's stop too (I1)
        return ScaledClock(clock.factor, start=last)
    if isinstance(clock, RealClock):
        _log.warning(
            "clock rule=A7: the wall clock is %.1f s behind the store's last event; "
            "clinical time goes on from the record",
            (last - clock.now()).total_seconds(),
        )
        return RealClock(not_before=last)
    return clock


def _watched(clock: Clock, ward: Ward, stack: AsyncExitStack) -> WallStepWatch | None:
    """A7: with the real clock, a task that sees each step of the wall clock and audits it."""
    if not isinstance(clock, RealClock):
        return None
    wall = WallStepWatch(clock)

    async def stepped(step_s: float) -> None:
        await ward.wall_clock_stepped(step_s, wall_offset_s=wall.accepted_offset_s)

    watcher = asyncio.create_task(watch_wall_clock(wall, stepped), name="wall clock watch")
    stack.push_async_callback(_cancelled, watcher)
    return wall


def _background(work: Coroutine[Any, Any, None], name: str, stack: AsyncExitStack) -> None:
    """`work` as a task that ends (cancelled) when the service does."""
    task = asyncio.create_task(work, name=name)
    stack.push_async_callback(_cancelled, task)


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def open_kernel(app: FastAPI, settings: Settings, stack: AsyncExitStack) -> None:
    """The service's parts, opened in order (clock, store and its writer, pumps, supervisors,
    ward, recovery, controller, publisher, live events); `stack` closes them in reverse."""
    clock = parse_clock(settings.clock)
    url = database_url(settings)
    with _explained(app):
        if settings.simulate:
            migrations.upgrade(url)  # a simulation's store is its own; a gateway's is
            # migrated by its engineer (`pumpctl db upgrade`), never behind their back
        store = Store.open(url)
    stack.callback(store.close)
    # every write on the writer's thread, every read on reader threads: no database
    # call on this loop, which every stop passes through (store/writer.py)
    writer, reader = StoreWriter(store), StoreReader()
    audit = AuditWatch(
        store,
        reader,
        verify_every_s=settings.audit_verify_s,
        full_every_s=settings.audit_full_verify_s,
        head_every_s=settings.audit_head_log_s,
    )
    stack.callback(audit.at_stop)  # the chain's head, once the writer wrote what waited
    writer.start()
    stack.callback(reader.close)
    stack.callback(writer.close)  # after the controller: what it recorded is written
    _background(writer.watch(), "store watch", stack)
    # the audit chain verified and its head logged, on reader threads (store/auditwatch.py)
    _background(audit.run(), "audit chain", stack)
    app.state.audit = audit
    # the accounts and sessions, held in memory and read again on reader threads
    accounts = AccountDirectory(
        AccountBook(store.engine), reader, session_max_s=settings.session_max_s
    )
    await accounts.refresh()
    stack.callback(accounts.checks.close)
    _background(accounts.run(), "accounts", stack)
    app.state.accounts = accounts
    clock = _after_the_record(clock, store.latest_clinical_time())
    accounts.trail = AccountTrail(store, writer, clock)  # sign-ins audited, never awaited
    pumps: dict[str, tuple[Pump, str]]
    if settings.simulate:
        from api.sim import open_simulated  # noqa: PLC0415 - the simulator only when simulating

        sim = await open_simulated(settings, clock, stack)
        app.state.sim = sim
        pumps = sim.pumps
    else:
        with _explained(app, "a pump could not be opened: "):
            pumps = await open_pumps(settings, stack)
    supervisors = {
        pid: PumpSupervisor(
            pump,
            clock,
            poll_interval_s=settings.poll_interval_s,
            command_timeout_s=settings.command_timeout_s,
        )
        for pid, (pump, _transport) in pumps.items()
    }
    ward = Ward(
        store,
        clock,
        supervisors,
        load_protocol,
        transports={pid: transport for pid, (_p, transport) in pumps.items()},
        writer=writer,
        reader=reader,
        default_protocol=settings.protocol,
        stop_answer_s=settings.stop_answer_s,
    )
    taken = await recover(store, supervisors)
    if taken:
        _log.warning("recovered infusions %s from the store (A4)", ", ".join(taken))
    await stack.enter_async_context(Controller(clock, supervisors.values()))
    app.state.wall = _watched(clock, ward, stack)
    if settings.broker:  # the infusions' public state, retained (interfaces.md, 2)
        app.state.publisher = await stack.enter_async_context(
            InfusionPublisher.for_settings(ward, settings)
        )
    app.state.ward = ward
    app.state.infusion_list = InfusionList(ward)  # GET /infusions, from memory (api/listing.py)
    app.state.metrics = ServiceMetrics(ward)
    _background(app.state.metrics.watch_loop(), "loop lag", stack)
    app.state.live = LiveHub(ward, replay=settings.events_replay)
    _background(app.state.live.run(), "live events", stack)
    _log.info(
        "serving %d pump(s) on clock %s, store %s",
        len(pumps),
        settings.clock,
        store.engine.url.render_as_string(hide_password=True),
    )
