"""`pumpctl db`: the store's schema migrations (upgrade, downgrade, current).

The database is the one `pumpctl serve` opens with the same settings: `--database URL` (or
`PUMPCTL_DATABASE_URL`), else the `database` setting (`PUMPCTL_DATABASE`, or `database` in the
`--config` file), else the embedded default `sqlite:///<data dir>/pumpctl.db` (data dir: the
`data_dir` setting, `PUMPCTL_DATA_DIR`, else ~/.local/share/pumpctl).
Prints the revision the database is at afterwards (`none` before the first). Exit 1 with one
line on stderr when the store cannot do it (a data directory that is not writable, an
unsupported URL, a database that cannot be reached, a downgrade that would drop records).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from sqlalchemy.exc import SQLAlchemyError

from pumpctl.cli.configured import SettingsError, settings_for
from pumpctl.cli.progress import waiting
from pumpctl.store import StoreError, configured_database_url, migrate

__all__ = ["Config", "Database", "app"]

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

Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="PUMPCTL_CONFIG",
        help="The service's settings file (TOML): its database and data_dir are used.",
    ),
]


def _fail(verb: str, message: str) -> NoReturn:
    typer.echo(f"pumpctl db {verb}: {message}", err=True)
    raise typer.Exit(1)


def _run(
    verb: str, database: str | None, config: Path | None, action: Callable[[str], str | None]
) -> None:
    try:
        settings = settings_for(config, database=database)
        url = configured_database_url(settings.database, settings.data_dir)
        with waiting(f"pumpctl db {verb}"):
            revision = action(url)
    except (SettingsError, StoreError) as exc:
        _fail(verb, str(exc))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc  # the driver's words, without SQLAlchemy's
        _fail(verb, str(cause).strip().splitlines()[0])
    typer.echo(revision or "none")


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
    database: Database = None,
    config: Config = None,
) -> None:
    """Migrate the database up to REVISION (default: head)."""
    _run("upgrade", database, config, lambda url: migrate.upgrade(url, revision))


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="target revision (base: no schema)")],
    database: Database = None,
    config: Config = None,
) -> None:
    """Migrate the database down to REVISION."""
    _run("downgrade", database, config, lambda url: migrate.downgrade(url, revision))


@app.command()
def current(database: Database = None, config: Config = None) -> None:
    """Print the revision the database is at."""
    _run("current", database, config, migrate.current)
