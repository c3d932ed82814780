"""Engines for the two databases the store supports, configured for durability.

SQLite (the embedded default): WAL journal, `synchronous=FULL` (a commit is on disk when it
returns: a stop's record survives a power cut after the commit), foreign keys on, a bounded
busy wait. pysqlite's own transaction handling is switched off and SQLAlchemy's `begin` emits
the `BEGIN` itself (SQLAlchemy's documented recipe), so a transaction is the database's
transaction; writers begin `IMMEDIATE`, taking the write lock up front instead of failing
half-way when another connection wrote first.

PostgreSQL through psycopg 3 (`postgresql://` is taken as `postgresql+psycopg://`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

from pumpctl.store.errors import UnsupportedDatabaseError
from pumpctl.store.sqltypes import json_dumps

__all__ = ["BEGIN_OPTION", "SQLITE_BUSY_TIMEOUT_MS", "database_url", "make_engine"]

SQLITE_BUSY_TIMEOUT_MS = 5000
#: Execution option naming the SQLite BEGIN mode of a connection ("IMMEDIATE" for writers).
BEGIN_OPTION = "pumpctl_sqlite_begin"


def database_url(url: str | URL) -> URL:
    """The URL as the store uses it; `UnsupportedDatabaseError` unless SQLite or PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UnsupportedDatabaseError(f"{url!s}: not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend not in {"sqlite", "postgresql"}:
        shown = parsed.render_as_string(hide_password=True)
        raise UnsupportedDatabaseError(f"{shown}: only sqlite:/// and postgresql:// are supported")
    return parsed


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN by pysqlite: ours, below
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(BEGIN_OPTION, "")
    connection.exec_driver_sql(f"BEGIN {mode}".strip())


def make_engine(url: str | URL) -> Engine:
    """An engine for `url` (SQLite or PostgreSQL), JSON columns written by `json_dumps`."""
    parsed = database_url(url)
    engine = create_engine(parsed, json_serializer=json_dumps)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine
