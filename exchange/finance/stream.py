"""Streaming entries out of the database through server-side cursors.

Memory stays bounded by one fetch (``CHUNK`` rows), however many entries a batch holds.
Server-side cursors live inside a transaction: callers open one.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from exchange.ledger.engine import Conn

from .lines import EntryRow, Grouper

CHUNK = 2_000

_names = itertools.count(1)


async def stream_rows(
    conn: Conn, query: str, params: Mapping[str, Any] | None = None
) -> AsyncIterator[tuple[Any, ...]]:
    """The rows of ``query``, fetched ``CHUNK`` at a time from a server-side cursor."""
    async with conn.cursor(name=f"finance_{next(_names)}") as cur:
        await cur.execute(query, params)
        while True:
            rows = await cur.fetchmany(CHUNK)
            if not rows:
                return
            for row in rows:
                yield tuple(row)


async def stream_entries(
    conn: Conn, query: str, params: Mapping[str, Any] | None = None
) -> AsyncIterator[EntryRow]:
    """Entries (with their settlement legs) from rows of :data:`exchange.finance.sql.ENTRY_LEGS`."""
    grouper = Grouper()
    async for row in stream_rows(conn, query, params):
        entry = grouper.feed(row)
        if entry is not None:
            yield entry
    last = grouper.flush()
    if last is not None:
        yield last
