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
