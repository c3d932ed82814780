"""The store's shared base: the engine, its transactions and the rows' insert and get, below
every repository of the store (`trail`, then `patients` and `infusions`; `store.Store` composes
them).

One method a transaction, the rules' constraints the database's own (see `models`): `_write` is
one write transaction (SQLite: BEGIN IMMEDIATE), committed when its block ends, `_read` one read;
`constraint_of` names the constraint that refused a statement, which each repository turns into
its rule's refusal. A store opens only a database migrated to the package's head.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, select

from pumpctl.core.rules import Rule
from pumpctl.store.chain import ChainHead
from pumpctl.store.engine import BEGIN_OPTION, make_engine
from pumpctl.store.errors import NotFoundError, StoreError, not_opened
from pumpctl.store.location import default_database_url
from pumpctl.store.migrate import current_of, head
from pumpctl.store.models import (
    MAX_ROW_ID,
    Alarm,
    CommandLedger,
    Course,
    HistoryEntry,
    Infusion,
    Patient,
)

__all__ = ["StoreBase", "constraint_of"]

_Row = TypeVar("_Row", Patient, Course, Infusion, Alarm, CommandLedger)
#: `Session.info` key: the audit row a write transaction appended last (`Store.appended_head`).
_APPENDED = "pumpctl_audit_appended"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _day(day: int | None) -> str:
    return f" day {day}" if day is not None else ""


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?:index '(?P<index>\w+)'|(?P<cols>.+))")
_SQLITE_COLUMNS = {
    "infusion.pump_id": "uq_infusion_live_pump",
    "infusion.course_id": "uq_infusion_live_course",
    "patient.mrn": "uq_patient_mrn",
    "infusion.course_id, infusion.infusion_number": "uq_infusion_number",
    "infusion.course_id, infusion.infusion_number, infusion.day": "uq_infusion_number_day",
    "command_ledger.id": "pk_command_ledger",
    "command_ledger.infusion_id, command_ledger.command_id": "uq_command_ledger_command",
}


def constraint_of(error: IntegrityError) -> str | None:
    """The name of the constraint that refused a statement (PostgreSQL names it; SQLite names
    the index, or the columns of a plain unique index)."""
    name = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
    if isinstance(name, str) and name:
        return name
    found = _SQLITE_UNIQUE.search(str(error.orig))
    if found is None:
        return None
    return found["index"] or _SQLITE_COLUMNS.get(found["cols"].strip())


def _rule(rule: Rule | str | None) -> str | None:
    return None if rule is None else str(rule)


#: Ids in one `IN (...)` list: within every SQLite's limit on a statement's variables.
_IN_LIST = 500


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _IN_LIST):
        yield ids[start : start + _IN_LIST]


class StoreBase:
    """The engine, its write and read transactions, open and close: what every repository of
    the store stands on."""

    def __init__(self, engine: Engine, *, wall_clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        self._wall_clock = wall_clock
        self._appended: ChainHead | None = None

    @classmethod
    def open(cls, url: str | None = None, *, wall_clock: Callable[[], datetime] = _utc_now) -> Self:
        """Open the database at `url` (default: the data directory's SQLite file); it must be
        migrated to the package's head (`pumpctl db upgrade`), else `StoreError`."""
        engine = make_engine(url or default_database_url())
        try:
            at, wanted = current_of(engine), head()
        except DBAPIError as exc:  # a database that does not answer at start: one line
            engine.dispose()
            raise not_opened(engine.url, "opened", exc) from None
        except Exception:
            engine.dispose()
            raise
        if at != wanted:
            shown = engine.url.render_as_string(hide_password=True)
            engine.dispose()
            raise StoreError(
                f"database {shown} is at revision {at or 'none'}, this pumpctl needs {wanted}: "
                "run `pumpctl db upgrade`"
            )
        return cls(engine, wall_clock=wall_clock)

    def close(self) -> None:
        """Close every connection."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction (SQLite: BEGIN IMMEDIATE); committed when the block ends."""
        with Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session
            appended = session.info.pop(_APPENDED, None)
            if appended is not None:  # committed: the chain's end as this store wrote it
                self._appended = appended

    @property
    def appended_head(self) -> ChainHead | None:
        """The last audit row this store wrote and committed, and its hash (None: none yet):
        what the kernel itself wrote, whatever the database says later."""
        return self._appended

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @staticmethod
    def _insert(session: Session, row: Patient | Course | HistoryEntry | Infusion | Alarm) -> int:
        """Add a row and flush it; its new id."""
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id

    @staticmethod
    def _get(session: Session, table: type[_Row], row_id: int | str) -> _Row:
        if isinstance(row_id, int) and not 0 < row_id <= MAX_ROW_ID:
            # names no row, and past the column's range the driver raises instead of finding none
            raise NotFoundError(f"no {table.__tablename__} {row_id}")
        row = session.get(table, row_id)
        if row is None:
            raise NotFoundError(f"no {table.__tablename__} {row_id}")
        return row

    def ping(self) -> None:
        """Raise unless the database answers (GET /health)."""
        with self._read() as session:
            session.exec(select(Patient.id).limit(1)).first()
