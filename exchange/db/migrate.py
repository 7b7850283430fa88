"""Schema migrations with alembic, configured in code (there is no ``alembic.ini``).

The migration scripts live in the repository's top-level ``migrations/`` directory, found
next to the ``exchange`` package: the hub is meant to be installed from a checkout
(``pip install -e .``). ``migrations/env.py`` takes the database URL from the alembic
config's ``sqlalchemy.url`` attribute, set here, and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

import exchange
from exchange.db.pool import sqlalchemy_url

URL_ATTRIBUTE = "sqlalchemy.url"


class MigrationError(RuntimeError):
    """The migration scripts cannot be found or applied."""


def migrations_dir() -> Path:
    """The ``migrations/`` directory of the checkout the package was installed from."""
    path = Path(exchange.__file__).resolve().parents[1] / "migrations"
    if not (path / "env.py").is_file():
        raise MigrationError(
            f"migration scripts not found at {path}: install the hub from a checkout "
            "with 'pip install -e .'"
        )
    return path


def alembic_config(url: str | None = None) -> Config:
    """An alembic ``Config`` for the hub's migrations, optionally bound to ``url``."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        config.attributes[URL_ATTRIBUTE] = url
    return config


def create_engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine without pooling (connections close when released)."""
    return sa.create_engine(sqlalchemy_url(url), poolclass=NullPool)


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The single head revision of the migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise MigrationError("there are no migration scripts")
    return head


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` when it was never migrated."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_at_head(url: str) -> bool:
    return current_revision(url) == head_revision()
