"""`pumpctl audit verify` as a real subprocess (docs/interfaces.md, section 5): exit 0 and one
line on an intact trail; 1 naming the first row that does not hold after the forgery of issue
20, on SQLite and on PostgreSQL, and after a chain rewritten whole when given the head the
kernel logged (`--head ID:HASH`); 2 with one line when the trail cannot be checked; progress
on a terminal only."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from audit_forgery import (
    T0,
    Trail,
    clinical_trail,
    delete_rows,
    forging,
    rechain,
    rewrite_reaction,
)
from postgres_env import PostgresServer, postgres_server

from pumpctl.core.machine import AuditEvent, AuditType
from pumpctl.core.rules import Rule
from pumpctl.store import Store, migrate

PUMPCTL = [sys.executable, "-m", "pumpctl", "audit", "verify"]


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    return subprocess.run(
        [*PUMPCTL, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Trail]:
    if request.param == "sqlite":
        yield clinical_trail(f"sqlite:///{tmp_path / 'pumpctl.db'}")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    try:
        yield clinical_trail(server.url(name))
    finally:
        server.drop_database(name)


def test_an_intact_trail_is_one_line_and_exit_0(trail: Trail) -> None:
    done = verify("--database", trail.url)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"audit trail intact: {trail.head.id} rows checked, head {trail.head}\n"
    with_head = verify("--database", trail.url, "--head", str(trail.head))
    assert with_head.returncode == 0, with_head.stderr


def test_the_forgery_of_issue_20_is_named(trail: Trail) -> None:
    """Triggers dropped, the reaction rewritten (actor, grade 3 -> 1), the alarm and paused
    rows deleted, triggers re-created, in one transaction: exit 1 naming the reaction's row."""
    with forging(trail.url) as db:
        rewrite_reaction(db, trail.reaction_row, actor="someone-else", grade=1)
        delete_rows(db, trail.alarm_row, trail.paused_row)
    done = verify("--database", trail.url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(
        f"pumpctl audit verify: row {trail.reaction_row}: content changed: "
    ), done.stderr
    assert f"row {trail.alarm_row} deleted" in done.stderr
    assert done.stderr.endswith(f"(rows before it that hold: {trail.alarm_row - 1})\n")
    assert done.stderr.count("\n") == 1


def test_a_chain_rewritten_whole_is_named_by_the_logged_head(trail: Trail) -> None:
    with forging(trail.url) as db:
        rewrite_reaction(db, trail.reaction_row, actor="someone-else", grade=1)
        rechain(db)
    alone = verify("--database", trail.url)
    assert alone.returncode == 0, alone.stderr  # the chain has no secret: it holds again
    against = verify("--database", trail.url, "--head", str(trail.head))
    assert against.returncode == 1
    assert against.stderr.startswith(
        f"pumpctl audit verify: row {trail.head.id}: rewritten: the head given names it with "
        f"hash {trail.head.hash}, the trail has "
    ), against.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--database", "sqlite:///{tmp}/nothing.db"), "no database at {tmp}/nothing.db"),
        (("--database", "mysql://x/y"), "only sqlite:/// and postgresql://"),
        (("--database", "sqlite:///{tmp}/empty.db"), "the database has no audit trail"),
        (("--database", "sqlite:///{tmp}/v2.db"), "the audit trail has no hash chain yet"),
        (("--database", "sqlite:///{tmp}/v2.db", "--head", "12"), "--head '12': a head is ID:HASH"),
        (
            ("--database", "sqlite:///{tmp}/v2.db", "--head", "12:abc"),
            "the hash is 64 hexadecimal digits",
        ),
        (("--database", "postgresql://nobody@127.0.0.1:1/x"), "connection"),
    ],
    ids=["missing", "unsupported", "not-migrated", "no-chain", "head", "head-hash", "unreachable"],
)
def test_a_trail_that_cannot_be_checked_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    migrate.upgrade(f"sqlite:///{tmp_path / 'v2.db'}", "0002")
    done = verify(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, done
    assert done.stderr.startswith("pumpctl audit verify: ")
    assert message.format(tmp=tmp_path) in done.stderr
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "nothing.db").exists()  # never made by looking


def test_a_long_trail_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrate.upgrade(url)
    with Store.open(url) as store:
        events = [
            AuditEvent(type=AuditType.STOPPED, rule=Rule.A6, at=T0 + timedelta(seconds=i))
            for i in range(5000)
        ]
        store.append_audit(events, actor="nina")
        head = store.appended_head
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [*PUMPCTL, "--database", url],
            stdin=terminal, stdout=terminal, stderr=terminal,
            timeout=60, check=False, env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )  # fmt: skip
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    shown = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, shown
    assert "verifying the audit trail" in shown
    assert f"audit trail intact: 5000 rows checked, head {head}" in shown
