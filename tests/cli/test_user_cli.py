"""`pumpctl user` as a real process (interfaces.md, section 6): accounts added with an Argon2id
hash (never the password), listed, disabled, given a new password; machine tokens printed once
and kept as their SHA-256, revoked; every refusal one line on stderr, exit 1. Every change is
an `account_changed` audit row naming the account and who made it, and changes made while a
running kernel writes its own rows (sign-ins) keep the hash chain whole (`pumpctl audit
verify`), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_env import PostgresServer, postgres_server
from pumpctl_process import PUMPCTL
from service_process import serving

from pumpctl.credentials import hash_password, token_digest, verify_password
from pumpctl.store import Store, migrate
from pumpctl.store.accounts import AccountBook
from pumpctl.store.engine import make_engine

PASSWORD = "a long enough pass phrase"  # noqa: S105 - the tests' account


@pytest.fixture
def url(tmp_path: Path) -> str:
    found = f"sqlite:///{tmp_path / 'pumpctl.db'}"
    migrate.upgrade(found)
    return found


def user(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    return subprocess.run(
        [*PUMPCTL, "user", *args, "--database", url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def rows(url: str) -> AccountBook:
    return AccountBook(make_engine(url))


def test_add_list_password_disable_and_tokens(url: str) -> None:
    done = user(url, "add", "Nina.K", "--role", "nurse", "--password-stdin", stdin=PASSWORD + "\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "account nina.k added (nurse)\n")
    done = user(url, "add", "dashboard", "--role", "viewer", "--no-password")
    assert done.returncode == 0
    book = rows(url)
    try:
        (account,) = (a for a in book.accounts() if a.name == "nina.k")
        assert account.password_hash is not None
        assert account.password_hash.startswith("$argon2id$")
        assert PASSWORD not in account.password_hash
        assert verify_password(account.password_hash, PASSWORD)

        made = user(url, "token", "dashboard", "--label", "ward 3")
        assert made.returncode == 0
        token = made.stdout.strip()
        assert len(token) == 43
        assert made.stderr.startswith("token 1 for dashboard: keep it now")
        assert book.snapshot().tokens == {token_digest(token): 2}  # only its digest is kept

        listed = user(url, "list")
        assert listed.returncode == 0
        lines = listed.stdout.splitlines()
        assert lines[0] == "dashboard viewer active no-password"
        assert lines[1].startswith("  token 1 ward 3 made ")
        assert lines[2] == "nina.k nurse active password"
        assert token not in listed.stdout
        assert "$argon2" not in listed.stdout

        assert user(url, "revoke", "1").returncode == 0
        assert book.snapshot().tokens == {}
        assert " revoked " in user(url, "list").stdout

        before = account.changed_at
        done = user(url, "password", "nina.k", "--password-stdin", stdin="another pass phrase\n")
        assert done.returncode == 0
        assert user(url, "disable", "NINA.K").returncode == 0
        (account,) = (a for a in book.accounts() if a.name == "nina.k")
        assert account.disabled
        assert account.changed_at > before  # her sessions end
        assert account.password_hash is not None
        assert verify_password(account.password_hash, "another pass phrase")
        assert "nina.k nurse disabled password" in user(url, "list").stdout
        assert user(url, "enable", "nina.k").returncode == 0
    finally:
        book.engine.dispose()


@pytest.mark.parametrize(
    ("args", "stdin", "line"),
    [
        (
            ("add", "x", "--role", "nurse", "--password-stdin"),
            "short\n",
            "pumpctl user add: a password has at least 12 characters",
        ),
        (
            ("add", "bad name", "--role", "nurse", "--no-password"),
            "",
            "pumpctl user add: a name is 1 to 64 of a-z 0-9 . _ @ -, starting with a letter "
            "or a digit",
        ),
        (("disable", "nobody"), "", "pumpctl user disable: no account named 'nobody'"),
        (("token", "nobody"), "", "pumpctl user token: no account named 'nobody'"),
        (("revoke", "7"), "", "pumpctl user revoke: no token 7"),
    ],
)
def test_each_refusal_is_one_line_exit_1(
    url: str, args: tuple[str, ...], stdin: str, line: str
) -> None:
    done = user(url, *args, stdin=stdin)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", line + "\n")


def test_a_name_taken_is_refused(url: str) -> None:
    assert user(url, "add", "nina.k", "--role", "nurse", "--no-password").returncode == 0
    done = user(url, "add", "Nina.K", "--role", "viewer", "--no-password")
    assert (done.returncode, done.stderr) == (1, "pumpctl user add: the name 'nina.k' is taken\n")


def test_a_database_not_migrated_is_named(tmp_path: Path) -> None:
    done = user(f"sqlite:///{tmp_path / 'empty.db'}", "list")
    assert done.returncode == 1
    assert "run `pumpctl db upgrade`" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def audit_rows(url: str) -> list[tuple[str, str | None, dict[str, object]]]:
    engine = make_engine(url)
    try:
        return [(r.type, r.actor, r.data) for r in Store(engine).audit_since(0, 10_000)]
    finally:
        engine.dispose()


def test_every_change_is_audited_naming_the_account_and_who_made_it(url: str) -> None:
    user(url, "add", "nina.k", "--role", "nurse", "--password-stdin", stdin=PASSWORD + "\n")
    user(url, "add", "dashboard", "--role", "viewer", "--no-password")
    token = user(url, "token", "dashboard", "--label", "ward 3").stdout.strip()
    user(url, "password", "nina.k", "--password-stdin", stdin="another pass phrase\n")
    user(url, "disable", "nina.k")
    user(url, "enable", "nina.k")
    user(url, "revoke", "1")
    assert user(url, "disable", "nobody").returncode == 1  # refused: no row
    by = f"pumpctl user ({pwd.getpwuid(os.getuid()).pw_name})"
    rows = audit_rows(url)
    assert [(kind, actor, data["change"], data["by"]) for kind, actor, data in rows] == [
        ("account_changed", "nina.k", "added", by),
        ("account_changed", "dashboard", "added", by),
        ("account_changed", "dashboard", "token_made", by),
        ("account_changed", "nina.k", "password", by),
        ("account_changed", "nina.k", "disabled", by),
        ("account_changed", "nina.k", "enabled", by),
        ("account_changed", "dashboard", "token_revoked", by),
    ]
    said = json.dumps(rows)
    for secret in (PASSWORD, "another pass phrase", token, token_digest(token), "$argon2"):
        assert secret not in said
    verified = subprocess.run(
        [*PUMPCTL, "audit", "verify", "--database", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (verified.returncode, verified.stderr) == (0, ""), verified
    assert verified.stdout.startswith("audit trail intact: 7 rows checked")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The service's database: SQLite in its data directory, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pumpctl.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.mark.slow
@pytest.mark.timeout(180)  # five processes' starts on a loaded 2-core machine
async def test_changes_made_while_a_kernel_writes_keep_the_chain_whole(
    tmp_path: Path, database: str
) -> None:
    """`pumpctl serve` appends its rows (sign-ins, each a `signed_in` row through its writer,
    several a second) while two `pumpctl user` processes at a time add accounts, then make
    their tokens: the rows of all three interleave and every one follows the one before it."""
    migrate.upgrade(database)
    book = AccountBook(make_engine(database))
    try:
        book.add("nina.k", "nurse", hash_password(PASSWORD))
    finally:
        book.engine.dispose()
    changes = 2
    async with serving(tmp_path, simulate=1, env={"PUMPCTL_DATABASE_URL": database}) as service:
        assert service.http is not None
        http = service.http
        signed_in = 0
        done = asyncio.Event()

        async def sign_ins() -> None:
            nonlocal signed_in
            while not done.is_set():
                body = {"name": "nina.k", "password": PASSWORD}
                r = await http.post("/api/v1/session", json=body)
                assert r.status_code == 201, r.text
                signed_in += 1
                await asyncio.sleep(0.1)  # a pace, not a wait: the CLI's processes need CPU

        async def change(n: int) -> None:
            made = await asyncio.to_thread(
                user, database, "add", f"nurse-{n}", "--role", "nurse", "--no-password"
            )
            assert made.returncode == 0, made.stderr
            made = await asyncio.to_thread(user, database, "token", f"nurse-{n}")
            assert made.returncode == 0, made.stderr

        flood = asyncio.create_task(sign_ins())
        try:
            await asyncio.gather(*(change(n) for n in range(changes)))
        finally:
            done.set()
            await flood
        async with asyncio.timeout(20):  # every sign-in's row written (the writer's queue)
            while sum(1 for r in audit_rows(database) if r[0] == "signed_in") < signed_in:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # polling a condition with a deadline
    types = [kind for kind, _actor, _data in audit_rows(database)]
    assert types.count("account_changed") == 1 + 2 * changes
    cli = [i for i, kind in enumerate(types) if kind == "account_changed"][1:]
    assert "signed_in" in types[cli[0] : cli[-1]]  # the kernel wrote between the CLI's rows
    verified = await asyncio.to_thread(
        subprocess.run,
        [*PUMPCTL, "audit", "verify", "--database", database],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (verified.returncode, verified.stderr) == (0, ""), verified
    assert verified.stdout.startswith(f"audit trail intact: {len(types)} rows checked")
