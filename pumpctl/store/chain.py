"""The audit trail's hash chain: each row carries a SHA-256 over its content and the previous
row's hash, so a row rewritten, deleted or re-ordered after it was written no longer holds
(docs/architecture.md, "The audit trail's hash chain").

- `row_hash`: the hash of one row: SHA-256 (hashlib) of a canonical serialisation, a JSON array
  (keys sorted, no spaces, ASCII) of the scheme's name, the row's id, infusion id, clinical and
  wall instants (UTC, microseconds), type, actor, rule, data and the previous row's hash. The
  scheme (`SCHEME`) is frozen: a change is a new scheme, never an edit of this one
  (tests/store/test_audit_chain.py pins a known vector).
- `append_ids`: where a write transaction appends: the chain's last row (PostgreSQL: after an
  advisory lock that orders appenders; SQLite: the writer's `BEGIN IMMEDIATE` already does)
  and the ids the new rows take. `Store._audit`, the one place audit rows are inserted, uses it.
- `ChainWalk`: one verification pass in chunks of rows (each chunk its own short read), from
  the first row or from a row verified earlier, checking expected heads (the journal's, the
  last verification's, what the kernel wrote) on the way; the first row that does not hold is
  a `ChainBreak` naming it and what (content changed, re-ordered, rows missing, a broken link,
  a rewritten or missing head).
- `verify`: a whole pass at once (`pumpctl audit verify`).

The chain shows tampering; it does not prevent it, and it holds no secret: whoever can write
the database and knows this scheme can rewrite the whole chain consistently. That is what the
heads the kernel logs (and the running kernel's own memory of what it verified and wrote) are
for: a rewritten chain disagrees with them.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, select, text

from pumpctl.store.models import Audit
from pumpctl.store.sqltypes import json_dumps

__all__ = [
    "CHUNK_ROWS",
    "GENESIS",
    "SCHEME",
    "ChainBreak",
    "ChainHead",
    "ChainRow",
    "ChainWalk",
    "Problem",
    "Verification",
    "append_ids",
    "chain_rows",
    "last_row",
    "row_hash",
    "verify",
]

#: The name of the hashing scheme, hashed into every row (a later scheme gets another name).
SCHEME = "pumpctl-audit-v1"
#: The "previous hash" of the first row of the chain.
GENESIS = "0" * 64
#: Rows read and checked in one short read transaction.
CHUNK_ROWS = 2000
#: Rows on either side of a row that does not hold, read to tell a re-ordering from an edit.
_AROUND = 256
#: PostgreSQL advisory lock key ordering the chain's appenders ("pumpaudt").
_APPEND_LOCK = 0x70756D7061756474

_TABLE = Audit.__table__  # type: ignore[attr-defined]
_COLUMNS = (
    _TABLE.c.id,
    _TABLE.c.infusion_id,
    _TABLE.c.at,
    _TABLE.c.wall_at,
    _TABLE.c.type,
    _TABLE.c.actor,
    _TABLE.c.rule,
    _TABLE.c.data,
    _TABLE.c.prev_hash,
    _TABLE.c.hash,
)

Problem = Literal[
    "content_changed",  # the row's hash does not match what it holds
    "reordered",  # it holds what was written as another row
    "rows_missing",  # ids missing before it, and it does not follow the row before them
    "broken_link",  # it does not follow the row before it (that row was rewritten, hash too)
    "unchained",  # no hash: written around the store (a hand-made INSERT)
    "unreadable",  # its instants or data cannot be read
    "head_mismatch",  # its hash is not the one an expected head names: the chain was rewritten
    "head_missing",  # a row an expected head names is gone
]


def _instant(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value.isoformat()}: an audit instant must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def row_hash(
    *,
    id: int,  # noqa: A002 - the column's name
    infusion_id: int | None,
    at: datetime,
    wall_at: datetime,
    type: str,  # noqa: A002 - the column's name
    actor: str | None,
    rule: str | None,
    data: Any,
    prev_hash: str,
) -> str:
    """The SHA-256 (hex) of one audit row's canonical serialisation (the module docstring)."""
    canonical = json_dumps(
        [
            SCHEME,
            id,
            infusion_id,
            _instant(at),
            _instant(wall_at),
            type,
            actor,
            rule,
            data,
            prev_hash,
        ]
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A row of the chain and its hash: what the kernel logs, `--head ID:HASH` names."""

    id: int
    hash: str

    def __str__(self) -> str:
        return f"{self.id}:{self.hash}"

    @classmethod
    def parse(cls, text_: str) -> ChainHead:
        """`ID:HASH` as the kernel logs it (ValueError naming what is wrong)."""
        row, sep, digest = text_.strip().partition(":")
        digest = digest.lower()
        if not sep or not row.isdigit() or int(row) < 1:
            raise ValueError(f"{text_!r}: a head is ID:HASH (a row id, then its hash)")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{text_!r}: the hash is 64 hexadecimal digits")
        return cls(int(row), digest)


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One audit row as the chain sees it (values as the store's column types read them)."""

    id: int
    infusion_id: int | None
    at: datetime
    wall_at: datetime
    type: str
    actor: str | None
    rule: str | None
    data: Any
    prev_hash: str
    hash: str

    def computed(self, *, as_id: int | None = None, prev_hash: str | None = None) -> str:
        """The hash this row's content gives (as row `as_id`, after `prev_hash`)."""
        return row_hash(
            id=self.id if as_id is None else as_id,
            infusion_id=self.infusion_id,
            at=self.at,
            wall_at=self.wall_at,
            type=self.type,
            actor=self.actor,
            rule=self.rule,
            data=self.data,
            prev_hash=self.prev_hash if prev_hash is None else prev_hash,
        )


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first row that does not hold, and what is wrong with it (one line)."""

    row: int
    problem: Problem
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}"


@dataclass(frozen=True, slots=True)
class Verification:
    """A pass's result: `through` is the last row that holds (None: none was checked)."""

    checked: int
    through: ChainHead | None
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None


# -- appending ------------------------------------------------------------------------------


def last_row(connection: Connection) -> ChainHead | None:
    """The trail's last row and its hash, as the database holds it (None: empty)."""
    last = connection.execute(
        select(_TABLE.c.id, _TABLE.c.hash).order_by(_TABLE.c.id.desc()).limit(1)
    ).first()
    return None if last is None else ChainHead(int(last[0]), str(last[1]))


def append_ids(connection: Connection, count: int) -> tuple[ChainHead | None, list[int]]:
    """In a write transaction: the chain's last row (None: the trail is empty) and the ids of
    `count` new rows after it. PostgreSQL: first an advisory lock held to the transaction's end,
    so appenders from any connection follow each other (the default READ COMMITTED isolation
    lets the query after it see the last row committed); ids from the table's sequence (never
    reused). SQLite: the writer's `BEGIN IMMEDIATE` holds the database's write lock; ids after
    the AUTOINCREMENT sequence (never reused either)."""
    postgres = connection.dialect.name == "postgresql"
    if postgres:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
    tail = last_row(connection)
    if postgres:
        drawn = connection.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('audit', 'id')) FROM generate_series(1, :n)"
            ),
            {"n": count},
        )
        return tail, sorted(int(n) for (n,) in drawn)
    seq = connection.execute(
        text("SELECT seq FROM sqlite_sequence WHERE name = 'audit'")
    ).scalar_one_or_none()
    after = max(int(seq or 0), tail.id if tail is not None else 0)
    return tail, list(range(after + 1, after + 1 + count))


# -- verifying ------------------------------------------------------------------------------


def _row(values: Sequence[Any]) -> ChainRow:
    return ChainRow(*values)


def _rows_after(connection: Connection, after: int, limit: int) -> list[ChainRow]:
    query = select(*_COLUMNS).where(_TABLE.c.id > after).order_by(_TABLE.c.id).limit(limit)
    return [_row(r) for r in connection.execute(query)]


def _readable_rows_after(
    connection: Connection, after: int, limit: int
) -> tuple[list[ChainRow], ChainBreak | None]:
    """The rows after `after`; when one cannot be read (its instants or data are not what the
    store writes), the rows before it and a break naming it."""
    try:
        return _rows_after(connection, after, limit), None
    except (ValueError, TypeError) as exc:  # a JSON or instant column that does not parse
        why = type(exc).__name__
    ids = connection.execute(
        select(_TABLE.c.id).where(_TABLE.c.id > after).order_by(_TABLE.c.id).limit(limit)
    )
    rows: list[ChainRow] = []
    for (row_id,) in ids.fetchall():
        try:
            rows.extend(_rows_after(connection, int(row_id) - 1, 1))
        except (ValueError, TypeError):
            message = f"unreadable (an instant or its data is not what the store writes: {why})"
            return rows, ChainBreak(int(row_id), "unreadable", message)
    return rows, None  # pragma: no cover - read once more, it parsed (changed meanwhile)


def _around(connection: Connection, row_id: int) -> list[ChainRow]:
    query = (
        select(*_COLUMNS)
        .where(_TABLE.c.id.between(row_id - _AROUND, row_id + _AROUND), _TABLE.c.id != row_id)
        .order_by(_TABLE.c.id)
    )
    try:
        return [_row(r) for r in connection.execute(query)]
    except (ValueError, TypeError):  # a neighbour unreadable: no re-ordering said
        return []


def _written_as(row: ChainRow, others: Iterable[ChainRow]) -> int | None:
    """The id of the row whose place `row`'s content was written for, when it moved."""
    for other in others:
        if row.computed(as_id=other.id, prev_hash=other.prev_hash) == other.hash:
            return other.id  # its content, another row's hashes left in place
        if row.computed(as_id=other.id) == row.hash:
            return other.id  # moved with its hashes
    return None


def _short(digest: str) -> str:
    return digest[:16] + "…" if len(digest) > 16 else digest


class ChainWalk:
    """One verification pass over the audit trail of `engine`, in chunks (`step()` until it
    returns True): from the first row, or from `start` (a row verified earlier, checked to be
    still the same); each row must hold its hash and follow the row before it; each head of
    `expect` (id -> hash, with where it came from) must be a row with that hash. A step is one
    short read transaction; steps never run at once (a step asked while one runs does nothing).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        start: ChainHead | None = None,
        expect: Mapping[int, tuple[str, str]] | None = None,
        chunk: int = CHUNK_ROWS,
    ) -> None:
        self.engine = engine
        self.start = start
        self.chunk = chunk
        floor = 0 if start is None else start.id
        # heads at or below `start` were held by the pass that verified it
        self._expect = {k: v for k, v in (expect or {}).items() if k > floor}
        self._prev = start
        self._checked = 0
        self._broken: ChainBreak | None = None
        self._done = False
        self._begun = False
        self._lock = threading.Lock()

    @property
    def result(self) -> Verification:
        return Verification(self._checked, self._prev, self._broken)

    @property
    def done(self) -> bool:
        return self._done

    def step(self) -> bool:
        """Check the next chunk; True once the pass is over (the end reached, or a break)."""
        if not self._lock.acquire(blocking=False):
            return self._done
        try:
            if not self._done:
                with self.engine.connect() as connection, connection.begin():
                    self._step(connection)
            return self._done
        finally:
            self._lock.release()

    def _fail(self, broken: ChainBreak) -> None:
        self._broken, self._done = broken, True

    def _step(self, connection: Connection) -> None:
        if not self._begun:
            self._begun = True
            if self.start is not None and not self._start_holds(connection, self.start):
                return
        after = 0 if self._prev is None else self._prev.id
        rows, unreadable = _readable_rows_after(connection, after, self.chunk)
        for row in rows:
            broken = self._check(connection, row)
            if broken is not None:
                self._fail(broken)
                return
            self._checked += 1
            self._prev = ChainHead(row.id, row.hash)
        if unreadable is not None:
            self._fail(self._missing_heads_before(unreadable.row) or unreadable)
            return
        if len(rows) < self.chunk:  # the end of the trail
            self._done = True
            end = 0 if self._prev is None else self._prev.id
            later = sorted(k for k in self._expect if k > end)
            if later:
                head = later[0]
                where = f"row {end}" if end else "no row"
                self._fail(
                    ChainBreak(
                        head,
                        "head_missing",
                        f"missing: {self._named_by(head)}, but the trail ends at {where} "
                        "(rows at its end were deleted)",
                    )
                )

    def _start_holds(self, connection: Connection, start: ChainHead) -> bool:
        found = connection.execute(
            select(_TABLE.c.hash).where(_TABLE.c.id == start.id)
        ).scalar_one_or_none()
        if found == start.hash:
            return True
        if found is None:
            message = f"missing: it held {_short(start.hash)} when last verified (deleted since)"
            self._fail(ChainBreak(start.id, "head_missing", message))
        else:
            message = (
                f"rewritten: its hash is {found}, not {start.hash} as when last verified (the "
                "chain up to it was rewritten since)"
            )
            self._fail(ChainBreak(start.id, "head_mismatch", message))
        return False

    def _named_by(self, head_id: int) -> str:
        digest, source = self._expect[head_id]
        return f"{source} names row {head_id} with hash {_short(digest)}"

    def _missing_heads_before(self, row_id: int) -> ChainBreak | None:
        after = 0 if self._prev is None else self._prev.id
        skipped = sorted(k for k in self._expect if after < k < row_id)
        if not skipped:
            return None
        head = skipped[0]
        return ChainBreak(head, "head_missing", f"missing: {self._named_by(head)} (deleted)")

    def _check(self, connection: Connection, row: ChainRow) -> ChainBreak | None:
        """The first thing wrong with `row` after the rows verified so far, or None."""
        missing = self._missing_heads_before(row.id)
        if missing is not None:
            return missing
        content, link = _content_break(connection, row), self._link_break(row)
        if content is not None and link is not None:  # both said: rewritten and cut off
            return ChainBreak(row.id, content.problem, f"{content.message}; and {link.message}")
        return content or link or self._head_break(row)

    def _link_break(self, row: ChainRow) -> ChainBreak | None:
        expected = GENESIS if self._prev is None else self._prev.hash
        if row.prev_hash == expected:
            return None
        before = 0 if self._prev is None else self._prev.id
        if row.id > before + 1:
            first, last = before + 1, row.id - 1
            gone = f"row {first}" if first == last else f"rows {first}-{last}"
            follows = f"row {before}" if before else "the start of the trail"
            message = f"rows missing before it: {gone} deleted (it does not follow {follows})"
            return ChainBreak(row.id, "rows_missing", message)
        if before:
            message = (
                f"broken link: it does not follow row {before} (row {before}, or rows before "
                "it, were rewritten with their hashes)"
            )
        else:
            message = (
                "broken link: it is the first row but does not start the chain (rows before "
                "it were deleted and their ids reused)"
            )
        return ChainBreak(row.id, "broken_link", message)

    def _head_break(self, row: ChainRow) -> ChainBreak | None:
        head = self._expect.pop(row.id, None)
        if head is None or head[0] == row.hash:
            return None
        message = (
            f"rewritten: {head[1]} names it with hash {head[0]}, the trail has {row.hash} "
            "(the chain up to it was rewritten, hashes recomputed)"
        )
        return ChainBreak(row.id, "head_mismatch", message)


def _content_break(connection: Connection, row: ChainRow) -> ChainBreak | None:
    """`row` without a hash, or one its content does not give (moved here, or changed)."""
    if not row.hash or not row.prev_hash:
        return ChainBreak(row.id, "unchained", "no hash (written around pumpctl's store, by hand)")
    if row.computed() == row.hash:
        return None
    moved = _written_as(row, _around(connection, row.id))
    if moved is not None:
        message = f"re-ordered: it holds the row written as row {moved}"
        return ChainBreak(row.id, "reordered", message)
    message = (
        "content changed: its hash does not match what it holds (rewritten after it was written)"
    )
    return ChainBreak(row.id, "content_changed", message)


def verify(
    engine: Engine,
    *,
    heads: Iterable[ChainHead] = (),
    source: str = "the head given",
    progress: Callable[[int, int], None] | None = None,
    chunk: int = CHUNK_ROWS,
) -> Verification:
    """A whole pass from the first row: every row, and each of `heads` (from `source`, e.g. the
    journal). `progress(last id checked, highest id)` after each chunk."""
    walk = ChainWalk(engine, expect={h.id: (h.hash, source) for h in heads}, chunk=chunk)
    top = 0
    if progress is not None:
        with engine.connect() as connection:
            top = int(connection.execute(select(func.max(_TABLE.c.id))).scalar_one() or 0)
    while not walk.step():
        if progress is not None and walk.result.through is not None:
            progress(walk.result.through.id, top)
    return walk.result


def chain_rows(connection: Connection) -> Iterator[ChainRow]:
    """Every audit row, in id order, as the chain sees them (for tests and tools)."""
    after = 0
    while True:
        rows = _rows_after(connection, after, CHUNK_ROWS)
        yield from rows
        if len(rows) < CHUNK_ROWS:
            return
        after = rows[-1].id
