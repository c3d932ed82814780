"""The store's writer thread (pumpctl/store/writer.py) on a real SQLite file held by another
connection: records wait in order while it is held and are written once it is let go (I1: a
stop never waits for them); a time-only record is replaced by a newer one of its key; the
backlog is bounded; an action is refused while the store is degraded; a steadily slow database
stays degraded until the records are written; a fault said to clients never says where the
database is."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pumpctl.store import Store, migrate
from pumpctl.store.writer import StoreUnavailable, StoreWriter, public

BOUND_S = 20.0


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[StoreWriter, sqlite3.Connection, list[str]]]:
    """A started writer on a migrated SQLite file whose write lock another connection holds;
    the list the writer's jobs append to, in the order they ran."""
    url = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrate.upgrade(url)
    store = Store.open(url)
    writer = StoreWriter(store, write_bound_s=0.2, retry_s=0.05)
    writer.start()
    holder = sqlite3.connect(tmp_path / "pumpctl.db", isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    ran: list[str] = []
    try:
        yield writer, holder, ran
    finally:
        if holder.in_transaction:
            holder.rollback()
        holder.close()
        writer.close()
        store.close()


def _write(writer: StoreWriter, ran: list[str], name: str):  # type: ignore[no-untyped-def]
    def run() -> None:
        with writer.store.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
        ran.append(name)

    return run


async def _degraded(writer: StoreWriter) -> None:
    async with asyncio.timeout(BOUND_S):
        while not writer.health().degraded:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling a condition with a deadline


async def test_records_wait_in_order_and_a_newer_time_only_record_replaces_the_older(
    held: tuple[StoreWriter, sqlite3.Connection, list[str]],
) -> None:
    writer, holder, ran = held
    first = writer.record(_write(writer, ran, "audited"), what="a decision")
    await _degraded(writer)
    older = writer.record(_write(writer, ran, "time 1"), what="time", key="infusion 1")
    newer = writer.record(_write(writer, ran, "time 2"), what="time", key="infusion 1")
    assert writer.health().waiting == 2  # the audited one and the newer time-only one
    holder.rollback()
    async with asyncio.timeout(BOUND_S):
        assert await first is True
        assert await newer is True
        assert await older is True  # written as the newer one: it held all of it
    assert ran == ["audited", "time 2"]
    assert writer.health().waiting == 0
    assert not writer.health().degraded


async def test_the_backlog_is_bounded_and_a_record_past_it_is_counted_lost(
    held: tuple[StoreWriter, sqlite3.Connection, list[str]],
) -> None:
    writer, holder, ran = held
    writer.backlog = 2
    kept = [writer.record(_write(writer, ran, f"r{i}"), what="a decision") for i in range(2)]
    lost = writer.record(_write(writer, ran, "r2"), what="a decision")
    assert lost.done()
    assert lost.result() is False
    assert writer.health().dropped == 1
    holder.rollback()
    async with asyncio.timeout(BOUND_S):
        assert [await k for k in kept] == [True, True]
    assert ran == ["r0", "r1"]


async def test_an_action_is_refused_while_the_store_is_degraded(
    held: tuple[StoreWriter, sqlite3.Connection, list[str]],
) -> None:
    writer, holder, ran = held
    writer.record(_write(writer, ran, "waiting"), what="a decision")
    await _degraded(writer)
    with pytest.raises(StoreUnavailable, match="degraded"):
        await writer.call(_write(writer, ran, "action"), what="an action")
    holder.rollback()
    async with asyncio.timeout(BOUND_S):
        while writer.health().waiting:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling a condition with a deadline
    assert ran == ["waiting"]  # the refused action never ran


@pytest.fixture
async def free(tmp_path: Path) -> AsyncIterator[StoreWriter]:
    """A started writer on a migrated SQLite file nobody else holds (write bound 0.2 s)."""
    url = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrate.upgrade(url)
    store = Store.open(url)
    writer = StoreWriter(store, write_bound_s=0.2, retry_s=0.05)
    writer.start()
    try:
        yield writer
    finally:
        writer.close()
        store.close()


def _slow(writer: StoreWriter, ran: list[str], name: str, seconds: float):  # type: ignore[no-untyped-def]
    """A record whose database call answers after `seconds` (a slow database, as the writer
    sees one: the call returns, late)."""
    write = _write(writer, ran, name)

    def run() -> None:
        time.sleep(seconds)
        write()

    return run


async def test_a_steadily_slow_database_stays_degraded_until_every_record_is_written(
    free: StoreWriter,
) -> None:
    """A write past its bound makes the store degraded, and it stays so, without flapping,
    until the records waiting are written by writes within the bound; an action meanwhile is
    refused (503), never answered by the timing of the write it meets."""
    writer, ran = free, []
    seen: list[bool] = []

    async def watch() -> None:
        while True:
            seen.append(writer.health().degraded)
            await asyncio.sleep(0.01)  # sampling the state, not a synchronisation

    watching = asyncio.create_task(watch())
    try:
        first = writer.record(_slow(writer, ran, "slow 1", 0.3), what="a decision")
        second = writer.record(_slow(writer, ran, "slow 2", 0.3), what="a decision")
        third = writer.record(_write(writer, ran, "quick"), what="a decision")
        async with asyncio.timeout(BOUND_S):
            assert await first is True
            assert writer.health().degraded  # answered, but past its bound
            assert "took" in (writer.health().reason or "")
            with pytest.raises(StoreUnavailable, match="degraded"):
                await writer.call(_write(writer, ran, "action"), what="an action")
            assert await second is True
            assert await third is True
            while writer.health().degraded:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # polling a condition with a deadline
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert ran == ["slow 1", "slow 2", "quick"]
    began = seen.index(True)
    ended = len(seen) - seen[::-1].index(True)
    assert all(seen[began:ended]), "the store flapped while records still waited"
    assert writer.health().waiting == 0


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        (
            'connection to server at "10.1.2.3", port 5432 failed: Connection refused',
            "connection to the database server failed: Connection refused",
        ),
        (
            'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: No such file',
            "connection to the database server failed: No such file",
        ),
        (
            "the database file /var/lib/pumpctl/pumpctl.db was deleted under the service",
            "the database file (path) was deleted under the service",
        ),
        ("database or disk is full", "database or disk is full"),
        ("no such table: alembic_version", "no such table: alembic_version"),
    ],
)
def test_a_fault_said_to_clients_names_the_fault_never_where_the_database_is(
    said: str, shown: str
) -> None:
    assert public(said) == shown


async def test_a_probe_not_answered_makes_the_store_degraded_for_everything(
    tmp_path: Path,
) -> None:
    """/health's probe unanswered within its bound is a degraded store for the whole service
    at once (actions refused, the log), not only a 503 on /health while a write's longer bound
    runs: the two never disagree."""
    url = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrate.upgrade(url)
    store = Store.open(url)
    writer = StoreWriter(store, write_bound_s=30.0, retry_s=0.05)  # far past the probe's bound
    writer.start()
    holder = sqlite3.connect(tmp_path / "pumpctl.db", isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")
    ran: list[str] = []
    try:
        async with asyncio.timeout(BOUND_S):
            said = await writer.probe()
        assert said.degraded
        assert writer.health().degraded, "the probe's 503 and the store's state disagree"
        with pytest.raises(StoreUnavailable, match="degraded"):
            await writer.call(_write(writer, ran, "action"), what="an action")
        holder.rollback()
        async with asyncio.timeout(BOUND_S):
            while writer.health().degraded:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling a condition with a deadline
    finally:
        if holder.in_transaction:
            holder.rollback()
        holder.close()
        writer.close()
        store.close()
    assert ran == []
