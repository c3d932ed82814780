"""`pumpctl user` as a real process (interfaces.md, section 6): accounts added with an Argon2id
hash (never the password), listed, disabled, given a new password; machine tokens printed once
and kept as their SHA-256, revoked; every refusal one line on stderr, exit 1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pumpctl_process import PUMPCTL

from pumpctl.credentials import token_digest, verify_password
from pumpctl.store import migrate
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
