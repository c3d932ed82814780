"""Running the store's Alembic migrations from code (what `pumpctl db` wraps).

The migrations ship inside the package (`pumpctl/store/migrations`), so an installed pumpctl
migrates without the checkout. Each command runs in one transaction on one connection: a
migration that fails leaves the schema as it was (both databases have transactional DDL).
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from pumpctl.store.engine import make_engine
from pumpctl.store.errors import StoreError, not_opened

__all__ = ["SCRIPT_LOCATION", "current", "downgrade", "head", "upgrade"]

SCRIPT_LOCATION = "pumpctl.store:migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("path_separator", "os")
    return config


def head() -> str:
    """The newest revision the package ships."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships the first schema
        raise RuntimeError("pumpctl.store ships no migration")
    return revision


def _run(url: str, verb: str, revision: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config = _config()
            config.attributes["connection"] = connection
            try:
                if verb == "upgrade":
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)
            except CommandError as exc:  # an unknown revision, say
                raise StoreError(f"{verb} {revision}: {exc}") from None
        return current_of(engine)
    except DBAPIError as exc:  # a database that does not answer: one line, not a traceback
        raise not_opened(engine.url, "migrated", exc) from None
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate the database at `url` up to `revision`; the revision it is at afterwards."""
    return _run(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> str | None:
    """Migrate the database at `url` down to `revision` (`base`: nothing); where it is then."""
    return _run(url, "downgrade", revision)


def current_of(engine: Engine) -> str | None:
    """The revision the database of `engine` is at (None: not migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def current(url: str) -> str | None:
    """The revision the database at `url` is at (None: not migrated)."""
    engine = make_engine(url)
    try:
        return current_of(engine)
    finally:
        engine.dispose()
