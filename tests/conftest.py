"""Test harness: one PostgreSQL server per session, one fresh database per test.

Without ``EXCHANGE_TEST_DATABASE_URL`` the session starts a private embedded PostgreSQL in a
temporary directory. With it, that server is used: the tests only create and drop their own
databases (``exchange_tmpl_*`` and ``exchange_test_*``) on it.

A template database is migrated to head once; each test that asks for ``database_url`` gets
``CREATE DATABASE ... TEMPLATE`` of it. (The default ``WAL_LOG`` strategy measured faster
than ``FILE_COPY`` for this small template on PostgreSQL 15 and 18.)

Async tests run on anyio's pytest plugin: mark them ``@pytest.mark.anyio``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from exchange.app import create_app
from exchange.config import Settings
from exchange.db.embedded import EmbeddedPostgres
from exchange.db.migrate import upgrade
from exchange.db.pool import create_pool, with_database

TEST_DATABASE_URL_ENV = "EXCHANGE_TEST_DATABASE_URL"


class DatabaseFactory:
    """Creates and drops uniquely named databases on the test server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: set[str] = set()

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server_url, autocommit=True)

    def url(self, name: str) -> str:
        return with_database(self.server_url, name)

    def create(self, prefix: str, template: str | None = None) -> str:
        name = f"{prefix}_{secrets.token_hex(6)}"
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self._admin() as conn:
            conn.execute(statement)
        self.created.add(name)
        return name

    def drop(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        self.created.discard(name)

    def drop_all(self) -> None:
        for name in sorted(self.created):
            self.drop(name)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a database on the session's server (used to create and drop test databases)."""
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="exchange-test-"))
    server = EmbeddedPostgres(root / "pg")
    # A terminated test run still stops its server: SIGTERM unwinds like Ctrl-C.
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def databases(pg_server_url: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_server_url)
    try:
        yield factory
    finally:
        factory.drop_all()


@pytest.fixture(scope="session")
def template_database(databases: DatabaseFactory) -> str:
    """Name of a database migrated to head, the template of every test database."""
    name = databases.create("exchange_tmpl")
    upgrade(databases.url(name), "head")
    return name


@pytest.fixture
def database_url(databases: DatabaseFactory, template_database: str) -> Iterator[str]:
    """A fresh database at the schema's head, dropped after the test."""
    name = databases.create("exchange_test", template=template_database)
    try:
        yield databases.url(name)
    finally:
        databases.drop(name)


@pytest.fixture
def empty_database_url(databases: DatabaseFactory) -> Iterator[str]:
    """A fresh database with no schema, dropped after the test."""
    name = databases.create("exchange_test")
    try:
        yield databases.url(name)
    finally:
        databases.drop(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Production settings with a small pool, a temporary data dir and the test database."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        mode="production",
        pool_min_size=1,
        pool_max_size=4,
        statement_timeout_ms=10_000,
    ).validate()


@pytest.fixture
async def pool(
    anyio_backend: str, settings: Settings, database_url: str
) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p = await create_pool(database_url, settings)
    try:
        yield p
    finally:
        await p.close()


@contextlib.asynccontextmanager
async def app_client(settings: Settings, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the real ASGI app, with the app's lifespan running."""
    app = create_app(settings, database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            yield client


@pytest.fixture
async def client(
    anyio_backend: str, settings: Settings, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, database_url) as c:
        yield c


@pytest.fixture
def make_client() -> Any:
    """``make_client(settings, database_url)``: an async context manager yielding a client."""
    return app_client
