"""Alembic's environment for the store: run on the connection the caller hands over.

`pumpctl.store.migrate` passes an open connection in `config.attributes["connection"]` (one
transaction for the whole run); without one, the URL of the configuration is used. SQLite
migrations run in batch mode (`render_as_batch`): SQLite alters a table by copying it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pumpctl.store.engine import make_engine
from pumpctl.store.models import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: no connection and no sqlalchemy.url to migrate")
    engine = make_engine(url)
    try:
        with engine.begin() as opened:
            _run(opened)
    finally:
        engine.dispose()


def _offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _offline()
else:
    _online()
