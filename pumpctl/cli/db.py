"""`pumpctl db`: the store's schema migrations (upgrade, downgrade, current).

The database is `--database URL` (or `PUMPCTL_DATABASE_URL`), else the embedded default
`sqlite:///<data dir>/pumpctl.db` (data dir: `PUMPCTL_DATA_DIR`, else ~/.local/share/pumpctl).
Prints the revision the database is at afterwards (`none` before the first). Exit 1 with one
line on stderr when the store cannot do it (a data directory that is not writable, an
unsupported URL, a database that cannot be reached, a downgrade that would drop records).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, NoReturn

import typer
from sqlalchemy.exc import SQLAlchemyError

from pumpctl.cli.progress import waiting
from pumpctl.store import StoreError, default_database_url, migrate

__all__ = ["app"]

app = typer.Typer(help="The store's schema: migrate it up or down, or say where it is.")

Database = Annotated[
    str | None,
    typer.Option(
        "--database",
        envvar="PUMPCTL_DATABASE_URL",
        help="sqlite:///PATH or postgresql://... (default: the data directory's SQLite file)",
        show_default=False,
    ),
]


def _fail(verb: str, message: str) -> NoReturn:
    typer.echo(f"pumpctl db {verb}: {message}", err=True)
    raise typer.Exit(1)


def _run(verb: str, database: str | None, action: Callable[[str], str | None]) -> None:
    try:
        url = database or default_database_url()
        with waiting(f"pumpctl db {verb}"):
            revision = action(url)
    except StoreError as exc:
        _fail(verb, str(exc))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc  # the driver's words, without SQLAlchemy's
        _fail(verb, str(cause).strip().splitlines()[0])
    typer.echo(revision or "none")


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    database: Database = None,
) -> None:
    """Migrate the database up to REVISION (default: head)."""
    _run("upgrade", database, lambda url: migrate.upgrade(url, revision))


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="target revision (base: no schema)")],
    database: Database = None,
) -> None:
    """Migrate the database down to REVISION."""
    _run("downgrade", database, lambda url: migrate.downgrade(url, revision))


@app.command()
def current(database: Database = None) -> None:
    """Print the revision the database is at."""
    _run("current", database, migrate.current)
