"""`pumpctl audit verify`: the audit trail's hash chain checked from its first row
(pumpctl/store/chain.py; docs/interfaces.md, section 5).

The database is the one `pumpctl serve` opens with the same settings (as `pumpctl db`):
`--database URL` (or `PUMPCTL_DATABASE_URL`), else the `database` setting, else the data
directory's SQLite file. `--head ID:HASH` (repeatable) names a head the kernel logged
(`audit chain head ID:HASH` in the journal): the trail must still hold that row with that hash,
which a chain rewritten whole, hashes recomputed, does not.

Exit 0 with one line on stdout (rows checked, the head) when the trail holds; 1 with one line
on stderr naming the first row that does not hold and what (content changed, re-ordered, rows
missing, a broken link, a head rewritten or missing); 2 with one line when it cannot be checked
(a database that cannot be opened, is not there, or has no chain yet: `pumpctl db upgrade`).
Progress on stderr on a terminal (a long trail), nothing off one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from pumpctl.cli.configured import SettingsError, settings_for
from pumpctl.cli.db import Config, Database
from pumpctl.store import StoreError, configured_database_url
from pumpctl.store.chain import ChainHead, Verification, verify
from pumpctl.store.engine import make_engine

__all__ = ["app"]

app = typer.Typer(help="The audit trail: check its hash chain.", no_args_is_help=True)

#: Exit status when the trail does not hold, and when it cannot be checked.
BROKEN, UNCHECKED = 1, 2

Heads = Annotated[
    list[str] | None,
    typer.Option(
        "--head",
        help="ID:HASH, a head the kernel logged ('audit chain head ID:HASH'); repeatable",
        show_default=False,
    ),
]


def _fail(message: str, status: int) -> NoReturn:
    typer.echo(f"pumpctl audit verify: {message}", err=True)
    raise typer.Exit(status)


def _opened(url: str) -> Engine:
    """An engine on `url`, refused (one line) when there is nothing to verify there."""
    engine = make_engine(url)
    database = engine.url.database
    sqlite_file = engine.dialect.name == "sqlite" and database and database != ":memory:"
    if sqlite_file and not Path(str(database)).is_file():
        engine.dispose()
        _fail(f"no database at {database}", UNCHECKED)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("audit")}
    except NoSuchTableError:
        engine.dispose()
        _fail("the database has no audit trail (run `pumpctl db upgrade`)", UNCHECKED)
    except SQLAlchemyError:
        engine.dispose()
        raise
    if "hash" not in columns:
        engine.dispose()
        _fail("the audit trail has no hash chain yet (run `pumpctl db upgrade`)", UNCHECKED)
    return engine


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal (rows by id), else nothing."""
    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:
        yield None
        return
    columns = (TextColumn("verifying the audit trail"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("verify", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=max(total, done))

        yield advance


def _said(result: Verification) -> str:
    through = result.through
    if through is None:
        return "audit trail intact: 0 rows (empty)"
    return f"audit trail intact: {result.checked} rows checked, head {through}"


@app.command("verify")
def verify_command(
    database: Database = None,
    config: Config = None,
    head: Heads = None,
) -> None:
    """Check the audit trail's hash chain from its first row (and the heads given)."""
    try:
        heads = [ChainHead.parse(h) for h in head or ()]
    except ValueError as exc:
        _fail(f"--head {exc}", UNCHECKED)
    try:
        settings = settings_for(config, database=database)
        url = configured_database_url(settings.database, settings.data_dir)
        engine = _opened(url)
        try:
            with _progress() as progress:
                result = verify(engine, heads=heads, source="the head given", progress=progress)
        finally:
            engine.dispose()
    except (SettingsError, StoreError) as exc:
        _fail(str(exc), UNCHECKED)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc  # the driver's words, without SQLAlchemy's
        _fail(str(cause).strip().splitlines()[0], UNCHECKED)
    if result.broken is not None:
        _fail(f"{result.broken} (rows before it that hold: {result.checked})", BROKEN)
    typer.echo(_said(result))
