"""Exclusive finance sessions: advisory locks taken *before* a repeatable-read snapshot.

Sealing and closing are rare, background operations, so they serialise on session-level
advisory locks (never on a row the write path touches). The lock is taken in autocommit
mode before the transaction begins, so the transaction's snapshot is taken after the
previous holder committed and sees everything it wrote.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from exchange.ledger.engine import Conn
from exchange.services.tx import Pool

CHAIN_LOCK = 0x65780001
"""Held while sealing blocks of the hash chain."""
BATCH_LOCK = 0x65780002
"""Held while closing a settlement batch (taken before :data:`CHAIN_LOCK`)."""
PAYMENT_LOCK_CLASS = 0x6578
"""Class of the per-instruction locks of payment confirmations (two-key form)."""


class Busy(Exception):
    """Another session holds the lock (only with ``wait=False``)."""


@contextlib.asynccontextmanager
async def exclusive(pool: Pool, *locks: int, wait: bool = True) -> AsyncIterator[Conn]:
    """A pooled connection in autocommit mode holding the session advisory ``locks``.

    Locks are taken in the order given and all released on exit (also when the body fails).
    With ``wait=False`` the first lock is only tried: :class:`Busy` when it is held.
    """
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            for i, lock in enumerate(locks):
                if i == 0 and not wait:
                    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock,))
                    row = await cur.fetchone()
                    if row is None or not row[0]:
                        raise Busy(f"advisory lock {lock:#x} is held by another session")
                else:
                    await conn.execute("SELECT pg_advisory_lock(%s)", (lock,))
            yield conn
        finally:
            if not conn.closed and not conn.broken:
                await conn.execute("SELECT pg_advisory_unlock_all()")
                await conn.set_autocommit(False)


@contextlib.asynccontextmanager
async def repeatable_read(conn: Conn) -> AsyncIterator[Conn]:
    """A repeatable-read transaction on an autocommit connection (one snapshot throughout)."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield conn
