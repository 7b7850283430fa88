"""Alembic environment: the target is ``exchange.db.tables.metadata``.

The URL comes from ``config.attributes["sqlalchemy.url"]``, set by :mod:`exchange.db.migrate`.
A caller may instead pass an open SQLAlchemy connection as ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from exchange.db.migrate import URL_ATTRIBUTE, create_engine
from exchange.db.pool import sqlalchemy_url
from exchange.db.tables import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get(URL_ATTRIBUTE)
    if not url:
        raise RuntimeError(
            "no database URL: run migrations through exchange.db.migrate (or 'exchange migrate')"
        )
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=sqlalchemy_url(_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run(given)
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
