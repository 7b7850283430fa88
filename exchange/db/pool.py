"""Connections to the hub's database: the async pool, one-off sync connections, URL helpers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from exchange.config import Settings

APPLICATION_NAME = "exchange"
_URL_SCHEMES = ("postgresql", "postgres")


def connection_kwargs(settings: Settings | None = None) -> dict[str, Any]:
    """Per-connection parameters: application name, statement timeout, no autocommit."""
    timeout_ms = (settings or Settings()).statement_timeout_ms
    return {
        "application_name": APPLICATION_NAME,
        "options": f"-c statement_timeout={int(timeout_ms)}",
        "autocommit": False,
    }


async def create_pool(
    target: str | Settings,
    settings: Settings | None = None,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    open_timeout_s: float = 10.0,
) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """Open a connection pool and wait until its first connections are up.

    ``target`` is a libpq URL (then ``settings`` gives sizes and timeouts) or a
    :class:`Settings` whose ``database_url`` is set. Raises ``psycopg_pool.PoolTimeout`` when
    the database cannot be reached within ``open_timeout_s``.
    """
    if isinstance(target, Settings):
        settings = settings or target
        if target.database_url is None:
            raise ValueError("create_pool needs a database URL: Settings.database_url is unset")
        url = target.database_url
    else:
        url = target
    settings = settings or Settings()
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        url,
        min_size=min_size if min_size is not None else settings.pool_min_size,
        max_size=max_size if max_size is not None else settings.pool_max_size,
        kwargs=connection_kwargs(settings),
        name=APPLICATION_NAME,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=open_timeout_s)
    except BaseException:
        await pool.close()
        raise
    return pool


def sync_connect(
    url: str, *, autocommit: bool = False, connect_timeout_s: int = 10
) -> psycopg.Connection[tuple[Any, ...]]:
    """A single synchronous connection (for the CLI, migrations checks and tests)."""
    return psycopg.connect(
        url,
        autocommit=autocommit,
        application_name=APPLICATION_NAME,
        connect_timeout=connect_timeout_s,
    )


def sqlalchemy_url(url: str) -> str:
    """Turn a libpq URL (or ``key=value`` conninfo) into a SQLAlchemy ``postgresql+psycopg`` URL."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return url
    if sep and scheme in _URL_SCHEMES:
        return f"postgresql+psycopg://{rest}"
    params = conninfo_to_dict(url)
    return "postgresql+psycopg:///?" + urlencode({k: str(v) for k, v in params.items()})


def with_database(url: str, database: str) -> str:
    """The same server and credentials as ``url``, but the database ``database``."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme in _URL_SCHEMES:
        parts = urlsplit(url)
        query = "&".join(
            p for p in parts.query.split("&") if p and not p.lower().startswith("dbname=")
        )
        return urlunsplit((parts.scheme, parts.netloc, "/" + database, query, parts.fragment))
    params = conninfo_to_dict(url)
    params["dbname"] = database
    return make_conninfo("", **params)


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme in _URL_SCHEMES:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable connection string>"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a secret
    return make_conninfo("", **params)
