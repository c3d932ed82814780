"""The store's tests run on both databases: SQLite in tmp_path, and a PostgreSQL server of the
tests' own (one per session, a fresh database per test; tests/helpers/postgres_env.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from postgres_env import PostgresServer, postgres_server

from pumpctl.store import Store, migrate

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, on a free port, stopped and removed after."""
    with postgres_server() as server:
        yield server


@contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on `server`, dropped afterwards."""
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pumpctl.db"
        return
    with fresh_database(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database, for what only PostgreSQL has (mark the test `postgres`)."""
    with fresh_database(postgres) as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A store on `database_url`, migrated to head."""
    migrate.upgrade(database_url)
    with Store.open(database_url) as opened:
        yield opened
