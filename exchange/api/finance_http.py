"""``GET /finance/statements/{batch}.csv``: a merchant's statement as a streamed CSV file.

Authenticated like ``/graphql`` (``Authorization: Bearer`` with a finance or admin token, or
a merchant API key). Finance names the merchant with ``?merchant=<code>``; a merchant key
gets its own statement (naming another merchant is a 404, like a statement that does not
exist). Rows stream from a server-side cursor: the response never holds the whole file.
The layout is described in :mod:`exchange.finance.statements`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from exchange.api.auth import AuthError, authenticate, unauthenticated_response
from exchange.finance.statements import csv_records, csv_text, load_statement
from exchange.keys import Secrets, load_or_create_secrets
from exchange.services.actors import ADMIN, FINANCE, Actor
from exchange.services.tx import Pool, reading

PATH = "/finance/statements/{batch_id:int}.csv"
FLUSH_BYTES = 64 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status)


async def _merchant(pool: Pool, actor: Actor, named: str | None) -> int | Response | None:
    """The merchant whose statement is asked for, or an error response."""
    async with reading(pool) as conn:
        if actor.role in (FINANCE, ADMIN):
            if not named:
                return _error(400, "INVALID_ARGUMENT", "name the merchant: ?merchant=<code>")
            cur = await conn.execute("SELECT id FROM merchants WHERE code = %s", (named[:64],))
        elif actor.is_merchant:
            cur = await conn.execute(
                "SELECT id FROM merchants WHERE id = %s AND (%s::text IS NULL OR code = %s)",
                (actor.merchant_id, named, named),
            )
        else:
            return _error(403, "FORBIDDEN", f"{actor.role} credentials cannot read statements")
        row = await cur.fetchone()
    return None if row is None else int(row[0])


async def _stream(pool: Pool, batch_id: int, merchant_id: int) -> AsyncIterator[bytes]:
    async with pool.connection() as conn, conn.transaction():
        statement = await load_statement(conn, batch_id, merchant_id)
        if statement is None:  # checked before the response started; never changes
            return
        buffer: list[str] = []
        size = 0
        async for record in csv_records(conn, statement):
            text = csv_text(record)
            buffer.append(text)
            size += len(text)
            if size >= FLUSH_BYTES:
                yield "".join(buffer).encode()
                buffer, size = [], 0
        if buffer:
            yield "".join(buffer).encode()


def routes(state: State) -> list[Route]:
    """The finance HTTP routes; ``state`` is the app's state (``state.pool``, ``.settings``)."""
    loaded: dict[str, Secrets] = {}

    def secrets() -> Secrets:
        if "secrets" not in loaded:
            loaded["secrets"] = load_or_create_secrets(state.settings.data_dir)
        return loaded["secrets"]

    async def statement_csv(request: Request) -> Response:
        pool: Any = getattr(state, "pool", None)
        if pool is None:
            return _error(503, "UNAVAILABLE", "The hub is starting.")
        try:
            actor = await authenticate(
                request.headers.get("authorization"), pool, secrets(), state.settings
            )
        except AuthError as exc:
            return unauthenticated_response(exc.message)
        if actor is None:
            return unauthenticated_response("authentication required")
        batch_id = int(request.path_params["batch_id"])
        merchant = await _merchant(pool, actor, request.query_params.get("merchant"))
        if isinstance(merchant, Response):
            return merchant
        found = None
        if merchant is not None:
            async with reading(pool) as conn:
                found = await load_statement(conn, batch_id, merchant)
        if merchant is None or found is None:
            return _error(404, "NOT_FOUND", "statement not found")
        filename = f"statement-{batch_id}-{found.merchant}.csv"
        return StreamingResponse(
            _stream(pool, batch_id, merchant),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return [Route(PATH, statement_csv, methods=["GET"])]
