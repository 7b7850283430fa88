"""Migrations produce exactly the tables declared in ``exchange.db.tables``."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from exchange.db.migrate import (
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    is_at_head,
    upgrade,
)
from exchange.db.tables import metadata


def schema_differences(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_upgrade_from_empty_matches_the_metadata(empty_database_url: str) -> None:
    assert current_revision(empty_database_url) is None
    assert not is_at_head(empty_database_url)
    # The comparison is not vacuous: an empty database differs from the metadata.
    assert schema_differences(empty_database_url)

    upgrade(empty_database_url)

    assert current_revision(empty_database_url) == head_revision()
    assert is_at_head(empty_database_url)
    assert schema_differences(empty_database_url) == []
    assert table_names(empty_database_url) == set(metadata.tables) | {"alembic_version"}


def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    downgrade(empty_database_url, "base")
    assert current_revision(empty_database_url) is None
    assert table_names(empty_database_url) <= {"alembic_version"}

    upgrade(empty_database_url)
    assert is_at_head(empty_database_url)
    assert schema_differences(empty_database_url) == []


def storage_parameters(url: str) -> dict[str, dict[str, str]]:
    """Each public table's storage parameters (``WITH (...)``), as the database has them."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT c.relname, c.reloptions FROM pg_class c"
                "  JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.reloptions IS NOT NULL"
            )
            return {
                str(name): dict(str(o).split("=", 1) for o in options) for name, options in rows
            }
    finally:
        engine.dispose()


def declared_storage_parameters() -> dict[str, dict[str, str]]:
    out = {}
    for name, table in metadata.tables.items():
        declared = table.dialect_options["postgresql"]["with"]
        if declared:
            out[name] = {str(k): str(v) for k, v in declared.items()}
    return out


def test_storage_parameters_match_the_metadata(empty_database_url: str) -> None:
    """Alembic does not compare storage parameters: the migrations set what the tables
    declare (the balance rows' fill factor), and a downgrade past ``0009`` resets it."""
    assert declared_storage_parameters() == {"balances": {"fillfactor": "50"}}
    upgrade(empty_database_url)
    assert storage_parameters(empty_database_url) == declared_storage_parameters()
    downgrade(empty_database_url, "0008")
    assert storage_parameters(empty_database_url) == {}
    upgrade(empty_database_url)
    assert storage_parameters(empty_database_url) == declared_storage_parameters()
