"""The store's writer thread (pumpctl/store/writer.py) on a real SQLite file held by another
connection: records wait in order while it is held and are written once it is let go (I1: a
stop never waits for them); a time-only record is replaced by a newer one of its key; the
backlog is bounded; an action is refused while the store is degraded."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pumpctl.store import Store, migrate
from pumpctl.store.writer import StoreUnavailable, StoreWriter

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
