"""Transaction boundaries: retries of deadlocks and serialization failures, idempotency.

Services never commit; :func:`transaction` does, around one unit of work. A deadlock or a
serialization failure rolls the whole unit back and runs it again, a bounded number of
times; each retry is counted in :data:`RETRIES` so operators and benchmarks can see them.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from exchange.domain.errors import Refusal
from exchange.ledger import idempotency
from exchange.ledger.engine import Conn

T = TypeVar("T")

MAX_ATTEMPTS = 10
RETRIES: Counter[str] = Counter()
"""Retried transactions by cause (``deadlock``, ``serialization``)."""

_RETRYABLE: dict[type[BaseException], str] = {
    pg_errors.DeadlockDetected: "deadlock",
    pg_errors.SerializationFailure: "serialization",
}

Pool = AsyncConnectionPool[Any]


class TooManyRetries(RuntimeError):
    """A unit of work kept failing with retryable errors."""


async def transaction(pool: Pool, work: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction, retrying on deadlocks and serialization failures."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with pool.connection() as conn, conn.transaction():
                return await work(conn)
        except tuple(_RETRYABLE) as exc:
            RETRIES[_RETRYABLE[type(exc)]] += 1
            await asyncio.sleep(random.uniform(0, 0.002 * (2**attempt)))  # noqa: S311
    raise TooManyRetries(f"gave up after {MAX_ATTEMPTS} attempts")


@dataclass(frozen=True)
class Claim:
    """The idempotency identity an entry is written under."""

    initiator: str
    key: str
    fingerprint: bytes
    read: tuple[Any, ...] | None = None
    """The row of the ``read`` query run with the claim (see :func:`idempotent`)."""


@dataclass(frozen=True)
class Outcome:
    entry_id: int
    replayed: bool
    """True when this request repeated an earlier one and nothing new was written."""


async def idempotent(
    pool: Pool,
    *,
    initiator: str,
    key: str,
    operation: str,
    request: dict[str, Any],
    body: Callable[[Conn, Claim], Awaitable[int]],
    read: tuple[str, Sequence[Any]] | None = None,
) -> Outcome:
    """Run ``body`` once per ``(initiator, key)``; replay the stored outcome afterwards.

    ``body`` posts one entry and returns its id, or raises :class:`Refusal` *before* it
    writes anything; the refusal is then stored under the key and raised to the caller.
    ``read`` (a read-only query and its parameters) runs in the same statement as the claim
    and its first row reaches ``body`` as ``Claim.read``: a lookup the body needs costs no
    round trip of its own.
    """
    idempotency.check_key(key)
    digest = idempotency.fingerprint(operation, request)

    async def attempt(conn: Conn) -> tuple[int | None, Refusal | None, bool]:
        found = None
        if read is None:
            prior = await idempotency.claim(conn, initiator, key, operation, digest)
        else:
            prior, found = await idempotency.claim_and_read(
                conn, initiator, key, operation, digest, read
            )
        if prior is not None:
            return prior.entry_id, prior.refusal, True
        try:
            return await body(conn, Claim(initiator, key, digest, found)), None, False
        except Refusal as refusal:
            await idempotency.record_refusal(conn, initiator, key, refusal)
            return None, refusal, False

    entry_id, refusal, replayed = await transaction(pool, attempt)
    if refusal is not None:
        raise refusal
    assert entry_id is not None
    return Outcome(entry_id=entry_id, replayed=replayed)
