"""The embedded default: SQLite in a data directory, WAL, synchronous=FULL, foreign keys on;
two connections at once (a reader is not blocked by a writer; writers take turns)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from store_cases import T0

from pumpctl.core.machine import AuditEvent, AuditType
from pumpctl.store import DataDirError, Store, default_database_url, migrate
from pumpctl.store.engine import BEGIN_OPTION

EVENT = AuditEvent(type=AuditType.STOPPED, rule=None, at=T0)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/pumpctl.db"
    migrate.upgrade(url)
    return url


def test_every_connection_is_wal_full_sync_with_foreign_keys(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store, store.engine.connect() as connection:
        pragma = {
            name: connection.execute(text(f"PRAGMA {name}")).scalar_one()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }


def test_foreign_keys_are_enforced(sqlite_url: str) -> None:
    insert = text(
        "INSERT INTO course (patient_id, protocol, course_state, created_at)"
        " VALUES (42, 'daratumumab', 'active', '2026-03-02 09:00:00')"
    )
    with (
        Store.open(sqlite_url) as store,
        pytest.raises(IntegrityError, match="FOREIGN KEY"),
        store.engine.begin() as connection,
    ):
        connection.execute(insert)


def test_WAL_a_reader_reads_while_a_writer_holds_its_transaction(sqlite_url: str) -> None:
    insert = text("INSERT INTO audit (at, wall_at, type, data) VALUES (:t, :t, 'x', '{}')")
    with Store.open(sqlite_url) as writer, Store.open(sqlite_url) as reader:
        (first,) = writer.append_audit([EVENT])
        done: list[tuple[int, ...]] = []
        second_writer = threading.Thread(target=lambda: done.append(reader.append_audit([EVENT])))
        immediate = writer.engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        with immediate.begin() as held:  # the write lock, held open
            held.execute(insert, {"t": "2026-03-02 09:00:00"})
            assert [r.id for r in reader.audit_since(0)] == [first]  # not blocked, not dirty
            second_writer.start()  # waits for the lock (busy_timeout), then writes
        second_writer.join(timeout=10)
        assert not second_writer.is_alive()
        assert len(reader.audit_since(0)) == 3
        assert len(done) == 1
        assert done[0][0] > first


def test_the_default_database_is_in_the_data_directory(tmp_path: Path) -> None:
    url = default_database_url({"PUMPCTL_DATA_DIR": str(tmp_path / "new" / "data")})
    assert url == f"sqlite:///{tmp_path / 'new' / 'data' / 'pumpctl.db'}"
    assert (tmp_path / "new" / "data").is_dir()


def test_the_default_data_directory_is_under_the_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_database_url({}) == f"sqlite:///{tmp_path}/.local/share/pumpctl/pumpctl.db"


def test_a_data_directory_that_is_not_writable_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataDirError) as refused:
        default_database_url({"PUMPCTL_DATA_DIR": str(blocker / "data")})
    assert str(refused.value) == (
        f"data directory {blocker / 'data'} is not writable (Not a directory); "
        "set PUMPCTL_DATA_DIR or pass --database"
    )
