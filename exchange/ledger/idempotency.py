"""Idempotency keys: one key of one initiator yields exactly one outcome.

A request first *claims* its key by inserting a ``requests`` row in its own transaction.
A concurrent request with the same key waits on that row's unique index until the first
one commits or rolls back, then finds the stored outcome and replays it. The outcome is
either the entry written under the key (same transaction as the claim) or a refusal
recorded on the row; a refusal stays a refusal under that key even after, say, the
balance has grown. The same key with a different request is ``IDEMPOTENCY_KEY_REUSED``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exchange.domain.canonical import compact
from exchange.domain.errors import IDEMPOTENCY_KEY_REUSED, Refusal
from exchange.ledger.engine import Conn

_CANONICAL = compact(sort_keys=True, default=str)
"""Sorted keys, compact separators, anything else (a Decimal, a date) as its ``str``."""
KEY_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def check_key(key: str) -> None:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise Refusal(
            "INVALID_IDEMPOTENCY_KEY",
            "idempotencyKey must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
            "idempotencyKey",
        )


def fingerprint(operation: str, request: dict[str, Any]) -> bytes:
    """A stable digest of what was asked (canonical JSON of the operation and its input)."""
    return hashlib.sha256(_CANONICAL([operation, request]).encode()).digest()


@dataclass(frozen=True)
class Prior:
    """The stored outcome of an earlier request under the same key."""

    entry_id: int | None
    refusal: Refusal | None


async def claim(
    conn: Conn, initiator: str, key: str, operation: str, digest: bytes
) -> Prior | None:
    """Claim ``key`` for this transaction; return the earlier outcome if it was taken."""
    cur = await conn.execute(
        "INSERT INTO requests (initiator, idempotency_key, operation, fingerprint)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (initiator, key, operation, digest),
    )
    if await cur.fetchone() is not None:
        return None
    return await prior(conn, initiator, key, operation, digest)


async def prior(conn: Conn, initiator: str, key: str, operation: str, digest: bytes) -> Prior:
    """The outcome stored under a key another request claimed (and has committed)."""
    cur = await conn.execute(
        "SELECT r.operation, r.fingerprint, r.refusal_code, r.refusal_field, r.refusal_message,"
        "       e.id"
        "  FROM requests r LEFT JOIN entries e"
        "    ON e.initiator = r.initiator AND e.idempotency_key = r.idempotency_key"
        " WHERE r.initiator = %s AND r.idempotency_key = %s",
        (initiator, key),
    )
    row = await cur.fetchone()
    assert row is not None, "a conflicting claim must be visible once it committed"
    if row[0] != operation or bytes(row[1]) != digest:
        raise Refusal(
            IDEMPOTENCY_KEY_REUSED,
            "this idempotencyKey was already used for a different request",
            "idempotencyKey",
        )
    if row[2] is not None:
        return Prior(entry_id=None, refusal=Refusal(row[2], row[4], row[3]))
    return Prior(entry_id=int(row[5]) if row[5] is not None else None, refusal=None)


_CLAIM_AND_READ = """
WITH claim AS (
    INSERT INTO requests (initiator, idempotency_key, operation, fingerprint)
    VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1
)
SELECT (SELECT count(*) FROM claim), r.*
  FROM (SELECT 1) AS one LEFT JOIN LATERAL ({read}) AS r ON true
"""


async def claim_and_read(
    conn: Conn,
    initiator: str,
    key: str,
    operation: str,
    digest: bytes,
    read: tuple[str, Sequence[Any]],
) -> tuple[Prior | None, tuple[Any, ...] | None]:
    """:func:`claim`, and run the read-only query ``read`` in the same statement.

    One round trip instead of two for an operation that needs a lookup once it holds its key
    (the lookup takes no lock, so it may run alongside the claim). Returns the earlier
    outcome (``None`` when this call claimed the key) and ``read``'s first row (``None``
    when it has none; its first column must not be null).
    """
    sql, params = read
    cur = await conn.execute(
        _CLAIM_AND_READ.format(read=sql), (initiator, key, operation, digest, *params)
    )
    row = await cur.fetchone()
    assert row is not None
    found = None if row[1] is None else tuple(row[1:])
    if row[0]:
        return None, found
    return await prior(conn, initiator, key, operation, digest), found


async def record_refusal(conn: Conn, initiator: str, key: str, refusal: Refusal) -> None:
    await conn.execute(
        "UPDATE requests SET refusal_code = %s, refusal_field = %s, refusal_message = %s"
        " WHERE initiator = %s AND idempotency_key = %s",
        (refusal.code, refusal.field, refusal.message, initiator, key),
    )
