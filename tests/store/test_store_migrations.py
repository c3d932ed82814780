"""Migrations from the first schema on, up and down on both databases (issue 8), and the
schema they make is the one the table classes describe."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from store_cases import T0

from pumpctl.store import Store, StoreError, migrate
from pumpctl.store.engine import make_engine
from pumpctl.store.models import metadata

TABLES = {
    "account",
    "api_token",
    "alarm",
    "audit",
    "command_ledger",
    "course",
    "history_entry",
    "infusion",
    "patient",
    "reaction",
}


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_up_to_head_down_to_base_and_up_again(database_url: str) -> None:
    assert migrate.current(database_url) is None
    assert migrate.upgrade(database_url) == migrate.head() == "0004"
    assert tables(database_url) == TABLES
    assert migrate.downgrade(database_url, "base") is None
    assert tables(database_url) == set()
    assert migrate.upgrade(database_url) == migrate.head()
    assert tables(database_url) == TABLES
    assert migrate.upgrade(database_url) == migrate.head()  # at head: nothing to do


def test_the_migrated_schema_is_the_table_classes(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_the_partial_unique_indexes_are_made_on_both_databases(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = make_engine(database_url)
    try:
        indexes = {i["name"]: i for i in inspect(engine).get_indexes("infusion")}
    finally:
        engine.dispose()
    numbers = ("uq_infusion_number", "uq_infusion_number_day")
    for name in ("uq_infusion_live_pump", "uq_infusion_live_course", *numbers):
        assert indexes[name]["unique"]
        where = str(indexes[name]["dialect_options"][f"{engine.dialect.name}_where"])
        assert "cancelled" in where


def test_downgrade_refuses_to_drop_clinical_records(store: Store, database_url: str) -> None:
    store.create_patient("MRN-1", 70.0, actor="clinician", at=T0)
    with pytest.raises(StoreError, match="clinical records are never dropped"):
        migrate.downgrade(database_url, "base")
    assert migrate.current(database_url) == migrate.head()
    assert tables(database_url) == TABLES


def test_a_store_refuses_a_database_not_at_head(database_url: str) -> None:
    with pytest.raises(
        StoreError, match=r"revision none, this pumpctl needs 0004: run `pumpctl db upgrade`"
    ):
        Store.open(database_url)
