"""The audit trail's hash chain (pumpctl/store/chain.py; docs/architecture.md, "The audit trail's
hash chain"), on both databases: every row the store writes is chained to the one before it in
its own transaction; a verification names the first row that does not hold after the forgery
of issue 20 (triggers dropped, the reaction rewritten, rows deleted, triggers re-created), a
deletion, a re-ordering; a chain rewritten whole, hashes recomputed, holds by itself and
disagrees with a head taken before; the migration chains the rows written before it; two
appenders on two connections keep one chain; any single-row mutation is detected (hypothesis).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from audit_forgery import (
    T0,
    WALL,
    Trail,
    audit_ids,
    clinical_trail,
    delete_rows,
    forging,
    rechain,
    rewrite_reaction,
    swap_content,
    verified,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from pumpctl.core.machine import AuditEvent, AuditType
from pumpctl.core.rules import Rule
from pumpctl.store import Store, migrate
from pumpctl.store.auditwatch import AuditWatch
from pumpctl.store.chain import GENESIS, SCHEME, ChainHead, ChainWalk, chain_rows, row_hash
from pumpctl.store.engine import make_engine
from pumpctl.store.writer import StoreReader


@pytest.fixture
def trail(database_url: str) -> Trail:
    return clinical_trail(database_url)


def _rows(url: str) -> list[tuple[int, str, str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [(r.id, r.prev_hash, r.hash) for r in chain_rows(connection)]
    finally:
        engine.dispose()


def test_the_scheme_is_frozen() -> None:
    """A known row gives a known hash: the scheme never changes under stored chains (another
    scheme gets another name)."""
    assert SCHEME == "pumpctl-audit-v1"
    digest = row_hash(
        id=1,
        infusion_id=None,
        at=T0,
        wall_at=WALL,
        type="patient_created",
        actor="carl",
        rule="L8",
        data={"patient_id": 1},
        prev_hash=GENESIS,
    )
    assert digest == "763a2ba0862fbc16a77af1663ff1410ff7515dab24bf5cb3c7bb9d5e71e23c9d"
    # the instant is the same instant in any zone; a naive one is refused, never guessed
    paris = T0.astimezone(datetime.now(UTC).astimezone().tzinfo)
    same = row_hash(
        id=1,
        infusion_id=None,
        at=paris,
        wall_at=WALL,
        type="patient_created",
        actor="carl",
        rule="L8",
        data={"patient_id": 1},
        prev_hash=GENESIS,
    )
    assert same == digest
    with pytest.raises(ValueError, match="timezone-aware"):
        row_hash(
            id=1,
            infusion_id=None,
            at=T0.replace(tzinfo=None),
            wall_at=WALL,
            type="x",
            actor=None,
            rule=None,
            data={},
            prev_hash=GENESIS,
        )


def test_every_row_follows_the_one_before_it(trail: Trail) -> None:
    rows = _rows(trail.url)
    assert rows[0][1] == GENESIS
    for (_, _, before), (_, prev, _) in itertools.pairwise(rows):
        assert prev == before
    last_id, _, last_hash = rows[-1]
    assert ChainHead(last_id, last_hash) == trail.head  # what the store says it wrote
    result = verified(trail.url, trail.head)
    assert (result.ok, result.checked, result.through) == (True, len(rows), trail.head)


def test_the_forgery_of_issue_20_is_named_at_its_first_row(trail: Trail) -> None:
    """One transaction drops the triggers, rewrites the reaction (actor, grade 3 -> 1),
    deletes the alarm and paused rows, re-creates the triggers: the database accepts it and
    the triggers refuse again afterwards; the verification names the first row that does not
    hold (the row after the deleted alarm), and what."""
    with forging(trail.url) as db:
        rewrite_reaction(db, trail.reaction_row, actor="someone-else", grade=1)
        delete_rows(db, trail.alarm_row, trail.paused_row)
        db.execute(text("DELETE FROM alarm"))
    engine = make_engine(trail.url)
    try:
        with pytest.raises(IntegrityError, match="append-only"), engine.begin() as db:
            db.execute(text("DELETE FROM audit"))
    finally:
        engine.dispose()
    result = verified(trail.url)
    assert result.broken is not None
    assert trail.alarm_row + 1 == trail.reaction_row  # the alarm, then the reaction
    assert (result.broken.row, result.broken.problem) == (trail.reaction_row, "content_changed")
    assert str(result.broken) == (
        f"row {trail.reaction_row}: content changed: its hash does not match what it holds "
        "(rewritten after it was written); and rows missing before it: "
        f"row {trail.alarm_row} deleted (it does not follow row {trail.alarm_row - 1})"
    )
    assert result.checked == trail.alarm_row - 1


def test_a_rewritten_row_is_named_content_changed(trail: Trail) -> None:
    with forging(trail.url) as db:
        rewrite_reaction(db, trail.reaction_row, actor="someone-else", grade=1)
    result = verified(trail.url)
    assert result.broken is not None
    assert (result.broken.row, result.broken.problem) == (trail.reaction_row, "content_changed")
    assert str(result.broken).startswith(f"row {trail.reaction_row}: content changed")


def test_a_deleted_row_is_named_at_the_row_after_it(trail: Trail) -> None:
    with forging(trail.url) as db:
        delete_rows(db, trail.paused_row - 1, trail.paused_row)
    result = verified(trail.url)
    assert result.broken is not None
    assert (result.broken.row, result.broken.problem) == (trail.paused_row + 1, "rows_missing")
    gone = f"rows {trail.paused_row - 1}-{trail.paused_row} deleted"
    assert gone in result.broken.message


def test_a_reordering_is_named_with_the_row_it_came_from(trail: Trail) -> None:
    """The alarm and the reaction exchange places (every column but ids and hashes)."""
    with forging(trail.url) as db:
        swap_content(db, trail.alarm_row, trail.reaction_row)
    result = verified(trail.url)
    assert result.broken is not None
    assert (result.broken.row, result.broken.problem) == (trail.alarm_row, "reordered")
    assert result.broken.message == (
        f"re-ordered: it holds the row written as row {trail.reaction_row}"
    )


def test_a_chain_rewritten_whole_holds_alone_but_not_against_a_head_taken_before(
    trail: Trail,
) -> None:
    """The reaction rewritten and every hash recomputed with the public scheme: the chain
    holds by itself (the chain has no secret), and disagrees with the head the kernel logged
    before (`pumpctl audit verify --head`; tests/api/test_audit_health.py takes it from the
    real service's log)."""
    before_rewrite = ChainHead(*_rows(trail.url)[trail.reaction_row - 1][::2])
    with forging(trail.url) as db:
        rewrite_reaction(db, trail.reaction_row, actor="someone-else", grade=1)
        rechain(db)
    alone = verified(trail.url)
    assert alone.ok, alone.broken
    against = verified(trail.url, trail.head)
    assert against.broken is not None
    assert (against.broken.row, against.broken.problem) == (trail.head.id, "head_mismatch")
    assert trail.head.hash in against.broken.message
    at_the_reaction = verified(trail.url, before_rewrite)
    assert at_the_reaction.broken is not None
    assert at_the_reaction.broken.row == trail.reaction_row


def test_rows_deleted_at_the_end_are_named_by_a_later_head(trail: Trail) -> None:
    with forging(trail.url) as db:
        delete_rows(db, trail.head.id, trail.head.id - 1)
    assert verified(trail.url).ok  # the chain's end is the chain's: only a head shows it
    result = verified(trail.url, trail.head)
    assert result.broken is not None
    assert (result.broken.row, result.broken.problem) == (trail.head.id, "head_missing")
    assert f"the trail ends at row {trail.head.id - 2}" in result.broken.message


def test_a_walk_from_a_verified_row_checks_that_row_first(trail: Trail) -> None:
    """The running kernel's incremental pass: the row it verified last must be unchanged."""
    engine = make_engine(trail.url)
    try:
        walk = ChainWalk(engine, start=trail.head)
        while not walk.step():
            pass
        assert walk.result.ok
        assert walk.result.checked == 0
        with forging(trail.url) as db:
            rewrite_reaction(db, trail.reaction_row, actor="someone-else", grade=1)
            rechain(db)
        walk = ChainWalk(engine, start=trail.head)
        assert walk.step()
        assert walk.result.broken is not None
        assert (walk.result.broken.row, walk.result.broken.problem) == (
            trail.head.id,
            "head_mismatch",
        )
        with forging(trail.url) as db:
            delete_rows(db, trail.head.id)
        walk = ChainWalk(engine, start=trail.head)
        assert walk.step()
        assert walk.result.broken is not None
        assert walk.result.broken.problem == "head_missing"
    finally:
        engine.dispose()


def test_a_row_inserted_by_hand_is_unchained(sqlite_url_with_trail: Trail) -> None:
    """SQLite (whose columns keep an empty default): a row INSERTed around the store."""
    trail = sqlite_url_with_trail
    engine = make_engine(trail.url)
    try:
        with engine.begin() as db:
            db.execute(
                text("INSERT INTO audit (at, wall_at, type, data) VALUES (:t, :t, 'x', '{}')"),
                {"t": "2026-03-02 10:00:00.000000"},
            )
    finally:
        engine.dispose()
    result = verified(trail.url)
    assert result.broken is not None
    assert (result.broken.row, result.broken.problem) == (trail.head.id + 1, "unchained")


def test_a_row_that_cannot_be_read_is_named_unreadable(sqlite_url_with_trail: Trail) -> None:
    """SQLite keeps what it is given: data that is no JSON, an instant that is no time."""
    trail = sqlite_url_with_trail
    path = Path(trail.url.removeprefix("sqlite:///"))
    _mutated(path, "UPDATE audit SET data = 'not json' WHERE id = ?", trail.reaction_row)
    result = verified(trail.url)
    assert result.broken is not None
    assert (result.broken.row, result.broken.problem) == (trail.reaction_row, "unreadable")
    assert result.checked == trail.reaction_row - 1


@pytest.mark.postgres
def test_postgres_refuses_a_row_without_its_hashes(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with pytest.raises(IntegrityError, match="hash"), engine.begin() as db:
            db.execute(
                text("INSERT INTO audit (at, wall_at, type, data) VALUES (now(), now(), 'x', '{}')")
            )
    finally:
        engine.dispose()


def test_two_appenders_on_two_connections_keep_one_chain(database_url: str) -> None:
    """The kernel writes from one thread; a second store on the same database (another
    process) still cannot fork the chain: appends follow each other (SQLite: BEGIN IMMEDIATE;
    PostgreSQL: an advisory lock)."""
    migrate.upgrade(database_url)
    each = 25
    with Store.open(database_url) as one, Store.open(database_url) as two:

        def append(store: Store, actor: str) -> None:
            for i in range(each):
                event = AuditEvent(type=AuditType.STOPPED, rule=Rule.A6, at=T0 + timedelta(i))
                store.append_audit([event, event], actor=actor)

        threads = [
            threading.Thread(target=append, args=(s, a)) for s, a in ((one, "a"), (two, "b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        result = verified(database_url)
    assert result.ok, result.broken
    assert result.checked == 4 * each


def test_the_migration_chains_the_rows_written_before_it(database_url: str) -> None:
    """Rows written at revision 0002 are chained in id order by 0003, the first after GENESIS;
    the append-only triggers are back afterwards; down to 0002 and up again chains them anew."""
    migrate.upgrade(database_url, "0002")
    engine = make_engine(database_url)
    try:
        with engine.begin() as db:
            for minute in range(5):
                db.execute(
                    text(
                        "INSERT INTO audit (at, wall_at, type, actor, rule, data) "
                        "VALUES (:at, :at, 'clock_step', 'carl', 'A7', :data)"
                    ),
                    {
                        "at": T0 + timedelta(minutes=minute),
                        "data": json.dumps({"minute": minute, "words": "été ✓"}),
                    },
                )
    finally:
        engine.dispose()
    assert migrate.upgrade(database_url) == migrate.head()
    rows = _rows(database_url)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][1] == GENESIS
    result = verified(database_url)
    assert (result.ok, result.checked) == (True, 5)
    engine = make_engine(database_url)
    try:
        for statement in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit"):
            with pytest.raises(IntegrityError, match="append-only"), engine.begin() as db:
                db.execute(text(statement))
    finally:
        engine.dispose()
    with Store.open(database_url) as store:  # the store goes on from the chained rows
        store.append_audit([AuditEvent(type=AuditType.STOPPED, rule=Rule.A6, at=T0)])
    assert migrate.downgrade(database_url, "0002") == "0002"
    assert migrate.upgrade(database_url) == migrate.head()
    result = verified(database_url)
    assert (result.ok, result.checked) == (True, 6)


# -- any single-row mutation (hypothesis, on a real SQLite file) -----------------------------

COLUMNS = ("infusion_id", "at", "wall_at", "type", "actor", "rule", "data", "prev_hash", "hash")
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_VALUES = {
    "infusion_id": st.none() | st.integers(1, 3),
    "at": st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1)).map(  # noqa: DTZ001 - as stored
        lambda d: d.strftime(_SQLITE_TIME)
    ),
    "type": st.text(min_size=1, max_size=20),
    "actor": st.none() | st.text(max_size=20),
    "rule": st.none() | st.sampled_from([r.value for r in Rule]),
    "data": st.dictionaries(st.text(max_size=8), _json, max_size=4).map(json.dumps),
    "prev_hash": st.text("0123456789abcdef", min_size=0, max_size=64),
}
_VALUES["wall_at"] = _VALUES["at"]
_VALUES["hash"] = _VALUES["prev_hash"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    """A clinical trail in a SQLite file, copied for every example."""
    folder = tmp_path_factory.mktemp("pristine")
    return clinical_trail(f"sqlite:///{folder / 'pumpctl.db'}")


@pytest.fixture
def sqlite_url_with_trail(tmp_path: Path) -> Trail:
    return clinical_trail(f"sqlite:///{tmp_path / 'pumpctl.db'}")


def _copy(trail: Trail, folder: Path) -> Path:
    source = sqlite3.connect(trail.url.removeprefix("sqlite:///"))
    target_path = folder / "copy.db"
    target_path.unlink(missing_ok=True)
    target = sqlite3.connect(target_path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return target_path


def _mutated(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        db.execute(sql, params)
        db.execute("COMMIT")
    finally:
        db.close()


def _stored(path: Path, row_id: int) -> dict[str, object]:
    db = sqlite3.connect(path)
    try:
        listed = ", ".join(COLUMNS)
        found = db.execute(f"SELECT {listed} FROM audit WHERE id = ?", (row_id,)).fetchone()  # noqa: S608
    finally:
        db.close()
    return dict(zip(COLUMNS, found, strict=True))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_single_row_mutation_is_detected(
    pristine: Trail, tmp_path: Path, data: st.DataObject
) -> None:
    """One row changed in one column, deleted, moved to another id, or swapped with another:
    a verification with the head the kernel logged fails at the first row that no longer holds
    (the row itself; the row after one deleted or moved; the head's row when it was the last)."""
    path = _copy(pristine, tmp_path)
    ids = [r[0] for r in _rows(pristine.url)]
    index = data.draw(st.integers(0, len(ids) - 1), label="row")
    row_id, last = ids[index], index == len(ids) - 1
    after = row_id if last else ids[index + 1]
    kind = data.draw(st.sampled_from(["column", "delete", "move", "swap"]), label="kind")
    if kind == "column":
        column = data.draw(st.sampled_from(COLUMNS), label="column")
        value = data.draw(_VALUES[column], label="value")
        old = _stored(path, row_id)[column]
        if column == "data":
            assume(json.loads(value) != json.loads(str(old)))
        else:
            assume(value != old)
        _mutated(path, f"UPDATE audit SET {column} = ? WHERE id = ?", value, row_id)  # noqa: S608
        expected = row_id
    elif kind == "delete":
        _mutated(path, "DELETE FROM audit WHERE id = ?", row_id)
        expected = after
    elif kind == "move":
        _mutated(path, "UPDATE audit SET id = ? WHERE id = ?", ids[-1] + 100, row_id)
        expected = after
    else:
        other = data.draw(st.sampled_from([i for i in ids if i != row_id]), label="other")
        first, second = sorted((row_id, other))
        content = ("infusion_id", "at", "wall_at", "type", "actor", "rule", "data")
        a, b = (_stored(path, first), _stored(path, second))
        assume(any(a[c] != b[c] for c in content))
        assign = ", ".join(f"{c} = ?" for c in content)
        for target, source in ((first, b), (second, a)):
            _mutated(
                path,
                f"UPDATE audit SET {assign} WHERE id = ?",  # noqa: S608 - our column names
                *(source[c] for c in content),
                target,
            )
        expected = first
    result = verified(f"sqlite:///{path}", pristine.head)
    assert result.broken is not None, (kind, row_id)
    assert result.broken.row == expected, (kind, row_id, result.broken)


def test_the_trail_ids_are_what_the_store_returned(database_url: str) -> None:
    """Ids are given by the chain's append (ids after the sequence), and the store returns
    them as before: in order, never reused."""
    migrate.upgrade(database_url)
    with Store.open(database_url) as store:
        event = AuditEvent(type=AuditType.STOPPED, rule=Rule.A6, at=T0)
        first = store.append_audit([event, event])
        second = store.append_audit([event])
        assert list(first) + list(second) == [r.id for r in store.audit_since(0)]
        assert store.appended_head == ChainHead(second[0], _rows(database_url)[-1][2])
    assert audit_ids(database_url) == [*first, *second]


@contextlib.asynccontextmanager
async def _watching(url: str, **settings: Any) -> AsyncIterator[AuditWatch]:
    """The kernel's watch running over the store at `url` on reader threads, stopped after."""
    reader = StoreReader()
    with Store.open(url) as store:
        watch = AuditWatch(store, reader, **settings)
        task = asyncio.create_task(watch.run())
        try:
            async with asyncio.timeout(20):
                yield watch
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            reader.close()


async def test_the_kernel_s_watch_verifies_on_reader_threads_never_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel's watch (pumpctl/store/auditwatch.py): the head logged at start, a whole pass
    whose chunks run on the store's reader threads, the result as /health shows it."""
    trail = clinical_trail(f"sqlite:///{tmp_path / 'pumpctl.db'}")
    ran_on: list[str] = []
    step = ChainWalk.step

    def recorded(walk: ChainWalk) -> bool:
        ran_on.append(threading.current_thread().name)
        return step(walk)

    monkeypatch.setattr(ChainWalk, "step", recorded)
    caplog.set_level(logging.INFO, logger="pumpctl.audit")
    async with _watching(trail.url) as watch:
        while watch.status().ok is None:  # noqa: ASYNC110 - a condition with a deadline
            await asyncio.sleep(0.01)
        said = watch.status().as_json()
    assert ran_on
    assert all(name.startswith("store read") for name in ran_on), ran_on
    assert (said["ok"], said["verified_through_id"], said["head"]) == (
        True,
        trail.head.id,
        trail.head.hash,
    )
    assert f"audit chain head {trail.head} (at start)" in caplog.text


async def test_a_break_seen_from_the_row_verified_last_is_named_at_the_first_row_that_fails(
    tmp_path: Path,
) -> None:
    """The forgery rewrites an early row and deletes the row the watch verified last: the
    incremental pass sees only the deletion, the whole pass it triggers names the rewritten row
    first, as `pumpctl audit verify` does (the CI failure of 23abfb7 named the deletion or the
    rewrite by which pass came first)."""
    trail = clinical_trail(f"sqlite:///{tmp_path / 'pumpctl.db'}")
    async with _watching(trail.url, verify_every_s=0.05, full_every_s=3600) as watch:
        while watch.status().as_json()["verified_through_id"] != trail.head.id:  # noqa: ASYNC110 - a condition with a deadline
            await asyncio.sleep(0.01)
        with forging(trail.url) as db:
            rewrite_reaction(db, trail.reaction_row, actor="someone-else", grade=1)
            delete_rows(db, trail.head.id)  # the row verified last
        while watch.status().ok is not False:  # noqa: ASYNC110 - a condition with a deadline
            await asyncio.sleep(0.01)
        said = watch.status().as_json()
    assert trail.reaction_row < trail.head.id
    assert (said["row"], said["problem"]) == (trail.reaction_row, "content_changed")
