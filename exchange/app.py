"""The ASGI application: health probes, the GraphQL endpoint and the request-size cap."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.api.finance_http import routes as finance_routes
from exchange.api.graphql_app import create_graphql_app
from exchange.config import ConfigError, Settings, load_settings
from exchange.db.migrate import head_revision
from exchange.db.pool import create_pool
from exchange.finance.sealer import periodic_sealer
from exchange.services.catalog import bootstrap

READINESS_TIMEOUT_S = 2.0


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Answer 413 to HTTP requests whose body exceeds ``max_bytes``.

    A declared ``Content-Length`` is checked before the app runs; a streamed body is counted as
    the app reads it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await _send_json(send, 400, {"error": "invalid Content-Length header"})
                    return
                if int(value) > self.max_bytes:
                    await self._too_large(send)
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if response_started:
                raise
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await _send_json(
            send,
            413,
            {"error": f"request body larger than {self.max_bytes} bytes"},
        )


async def _send_json(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and its schema is at the migrations' head."""
    pool = getattr(request.app.state, "pool", None)
    expected: str = request.app.state.head_revision
    if pool is None:
        return _unavailable("starting")
    try:
        async with pool.connection(timeout=READINESS_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
            cur = await conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
            row = await cur.fetchone()
            if row is None or not row[0]:
                return _unavailable("database schema is not migrated")
            cur = await conn.execute("SELECT version_num FROM alembic_version")
            revisions = [r[0] for r in await cur.fetchall()]
    except PoolTimeout:
        return _unavailable("database unreachable: no connection available")
    except psycopg.Error as exc:
        return _unavailable(f"database error: {_one_line(str(exc))}")
    if revisions != [expected]:
        found = ", ".join(revisions) or "none"
        return _unavailable(f"database schema at revision {found}, expected {expected}")
    return JSONResponse({"status": "ready", "revision": expected})


def _unavailable(reason: str) -> JSONResponse:
    return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def _bootstrap(pool: Any, settings: Settings) -> None:
    """Create the settlement currency and the hub's accounts when the schema is there.

    Idempotent and safe with several workers starting at once. On a database that is not
    migrated yet nothing is done: ``/readyz`` reports it.
    """
    try:
        async with pool.connection() as conn:
            await bootstrap(conn, settings.settlement_currency, settings.balance_stripes)
    except psycopg.errors.UndefinedTable:
        return


GRAPHQL_PATH = "/graphql"


class Hub(Starlette):
    """The Starlette app, with requests to ``/graphql`` -- nearly every request -- handed
    straight to the GraphQL endpoint behind the body-size cap.

    The way through Starlette's error and exception middleware and its router costs a few
    per cent of a small request and adds nothing here: the endpoint answers its own errors,
    and uvicorn answers 500 to anything that escapes it, as Starlette would. Every other
    path (and ``/graphql`` under a ``root_path``) goes the usual way.
    """

    graphql: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.graphql is not None
            and scope["type"] == "http"
            and scope["path"] == GRAPHQL_PATH
            and not scope.get("root_path")
        ):
            scope["app"] = self
            await self.graphql(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


YOUNG_GC_THRESHOLD = 10_000
"""Net new container objects between two passes of the collector over the youngest
generation (Python's default is 700). A request leaves no reference cycle behind (tested),
so what the collector finds in a serving process is mostly the live objects of requests in
flight: with the default it walked them about every eight earns, moved them into the older
generations and walked them again there; with this it runs a few times a second at most,
under a bulk call's thousands of live objects. Each pass over 10,000 objects takes a few
milliseconds."""


def create_app(settings: Settings, database_url: str) -> Starlette:
    """The hub's ASGI app; the lifespan opens the connection pool on ``database_url``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await create_pool(database_url, settings)
        await _bootstrap(app.state.pool, settings)
        # What exists now (modules, the schema, validation rules) lives as long as the
        # process: keep it out of the garbage collector's full passes, which otherwise walk
        # it on every one and stall the event loop for tens of milliseconds.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_GC_THRESHOLD, *thresholds[1:])
        try:
            async with periodic_sealer(app.state.pool):
                yield
        finally:
            gc.set_threshold(*thresholds)
            pool, app.state.pool = app.state.pool, None
            await pool.close()

    app = Hub(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        middleware=[Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.head_revision = head_revision()
    app.state.pool = None
    graphql = create_graphql_app(settings, app.state)
    app.router.routes.append(Route(GRAPHQL_PATH, graphql))
    app.graphql = BodySizeLimit(graphql, max_bytes=settings.max_body_bytes)
    app.router.routes.extend(finance_routes(app.state))
    return app


def app_from_env() -> Starlette:
    """App factory for uvicorn workers: settings and the database URL come from the environment.

    ``exchange serve`` resolves the database (starting the embedded server if needed) and
    puts its URL in ``EXCHANGE_DATABASE_URL`` before starting the workers.
    """
    settings = load_settings()
    if not settings.database_url:
        raise ConfigError("EXCHANGE_DATABASE_URL is not set; start the hub with 'exchange serve'")
    return create_app(settings, settings.database_url)
