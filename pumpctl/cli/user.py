"""`pumpctl user`: personal accounts and machines' tokens (interfaces.md, section 6).

Writes the database `pumpctl serve` opens with the same settings (as `pumpctl db`); a running
kernel reads the accounts again every 2 s, so a change takes effect without a restart.
Passwords are asked on the terminal (twice, not echoed) or read as one line from stdin
(`--password-stdin`), hashed here with Argon2id (pumpctl/credentials.py); a token is printed
once and only its SHA-256 is kept. No password, hash or token is in any other line.

Every change is audited (`account_changed`, actor the account's name, `by` this command and
the system user running it) in the change's own transaction, ordered with a running kernel's
writes so the audit's hash chain holds (pumpctl/store/accounts.py).
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from pumpctl.cli.configured import SettingsError, settings_for
from pumpctl.cli.db import Config, Database  # the same options as `pumpctl db`
from pumpctl.credentials import (
    ACCOUNT_NAME,
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    hash_password,
    new_token,
    token_digest,
)
from pumpctl.settings import Role
from pumpctl.store import Store, StoreError, configured_database_url
from pumpctl.store.accounts import AccountBook

__all__ = ["app"]

app = typer.Typer(help="Personal accounts and machines' tokens (the service sees a change in 2 s).")
T = TypeVar("T")

Name = Annotated[str, typer.Argument(help="The account's name (taken in lowercase).")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password as one line from stdin.")
]


def _fail(verb: str, message: str) -> NoReturn:
    typer.echo(f"pumpctl user {verb}: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _book(verb: str, database: str | None, config: Path | None) -> Iterator[AccountBook]:
    """The accounts of the configured database (migrated to head, else one line)."""
    try:
        settings = settings_for(config, database=database)
        url = configured_database_url(settings.database, settings.data_dir)
        store = Store.open(url)
    except (SettingsError, StoreError) as exc:
        _fail(verb, str(exc))
    try:
        yield AccountBook(store.engine, by=_by())
    finally:
        store.close()


def _by() -> str:
    """Who makes a change, for its audit row: this command and the system user running it."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (a container)
        user = f"uid {uid}"
    return f"pumpctl user ({user})"


def _run(
    verb: str, database: str | None, config: Path | None, act: Callable[[AccountBook], T]
) -> T:
    with _book(verb, database, config) as book:
        try:
            return act(book)
        except StoreError as exc:
            _fail(verb, str(exc))
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            _fail(verb, str(cause).strip().splitlines()[0])


def _name(verb: str, name: str) -> str:
    key = name.strip().lower()
    if not ACCOUNT_NAME.match(key):
        _fail(
            verb,
            "a name is 1 to 64 of a-z 0-9 . _ @ -, starting with a letter or a digit",
        )
    return key


def _password(verb: str, *, from_stdin: bool) -> str:
    """The new password: one line of stdin, or asked twice on the terminal."""
    if from_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True)
        if typer.prompt("The same again", hide_input=True) != password:
            _fail(verb, "the two passwords are not alike")
    if len(password) < MIN_PASSWORD_CHARS:
        _fail(verb, f"a password has at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        _fail(verb, f"a password has at most {MAX_PASSWORD_CHARS} characters")
    return password


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%MZ")


@app.command()
def add(  # noqa: PLR0917 - typer: one parameter per option
    name: Name,
    role: Annotated[Role, typer.Option("--role", help="viewer, nurse, clinician or admin")],
    no_password: Annotated[
        bool, typer.Option("--no-password", help="A machine's account: tokens only.")
    ] = False,
    password_stdin: PasswordStdin = False,
    database: Database = None,
    config: Config = None,
) -> None:
    """A new account with ROLE; its password asked (or none: a machine's)."""
    key = _name("add", name)
    phc = None if no_password else hash_password(_password("add", from_stdin=password_stdin))
    _run("add", database, config, lambda book: book.add(key, role.value, phc))
    typer.echo(f"account {key} added ({role.value})", err=True)


@app.command()
def password(
    name: Name,
    password_stdin: PasswordStdin = False,
    database: Database = None,
    config: Config = None,
) -> None:
    """A new password for NAME (its sessions end)."""
    key = _name("password", name)
    phc = hash_password(_password("password", from_stdin=password_stdin))
    _run("password", database, config, lambda book: book.set_password(key, phc))
    typer.echo(f"account {key}: password changed", err=True)


@app.command()
def disable(name: Name, database: Database = None, config: Config = None) -> None:
    """Disable NAME: no sign-in, no token, its sessions end."""
    key = _name("disable", name)
    _run("disable", database, config, lambda book: book.set_disabled(key, disabled=True))
    typer.echo(f"account {key} disabled", err=True)


@app.command()
def enable(name: Name, database: Database = None, config: Config = None) -> None:
    """Enable NAME again."""
    key = _name("enable", name)
    _run("enable", database, config, lambda book: book.set_disabled(key, disabled=False))
    typer.echo(f"account {key} enabled", err=True)


@app.command("list")
def list_accounts(database: Database = None, config: Config = None) -> None:
    """Every account and its tokens (never a hash)."""
    accounts, tokens = _run("list", database, config, lambda book: (book.accounts(), book.tokens()))
    for account in accounts:
        state = "disabled" if account.disabled else "active"
        secret = "password" if account.password_hash else "no-password"
        typer.echo(f"{account.name} {account.role} {state} {secret}")
        for token in (t for t in tokens if t.account == account.name):
            revoked = f" revoked {_when(token.revoked_at)}" if token.revoked_at else ""
            label = token.label or "-"
            typer.echo(f"  token {token.id} {label} made {_when(token.created_at)}{revoked}")


@app.command()
def token(
    name: Name,
    label: Annotated[str, typer.Option("--label", help="What the token is for.")] = "",
    database: Database = None,
    config: Config = None,
) -> None:
    """A machine token for NAME, printed once (only its SHA-256 is kept)."""
    key = _name("token", name)
    made = new_token()
    token_id = _run(
        "token", database, config, lambda book: book.add_token(key, token_digest(made), label[:100])
    )
    typer.echo(f"token {token_id} for {key}: keep it now, it is not shown again", err=True)
    typer.echo(made)


@app.command()
def revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (pumpctl user list).")],
    database: Database = None,
    config: Config = None,
) -> None:
    """Revoke the token TOKEN_ID: refused from then on."""
    owner = _run("revoke", database, config, lambda book: book.revoke_token(token_id))
    typer.echo(f"token {token_id} of {owner} revoked", err=True)
