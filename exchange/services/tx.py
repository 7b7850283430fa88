"""Transaction boundaries: retries of deadlocks and serialization failures, idempotency.

Services never commit; :func:`transaction` does, around one unit of work. A deadlock or a
serialization failure rolls the whole unit back and runs it again, a bounded number of
times; each retry is counted in :data:`RETRIES` so operators and benchmarks can see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from exchange.domain.errors import Refusal
from exchange.ledger import idempotency
from exchange.ledger.engine import Conn, PendingPost, Posted
from exchange.ledger.idempotency import Prior

T = TypeVar("T")
F = TypeVar("F")

MAX_ATTEMPTS = 10
RETRIES: Counter[str] = Counter()
"""Retried transactions by cause (``deadlock``, ``serialization``)."""

_RETRYABLE: dict[type[BaseException], str] = {
    pg_errors.DeadlockDetected: "deadlock",
    pg_errors.SerializationFailure: "serialization",
}

Pool = AsyncConnectionPool[Any]


@contextlib.asynccontextmanager
async def reading(pool: Pool) -> AsyncIterator[Conn]:
    """A pooled connection for reads, in autocommit mode while it is borrowed: one round trip
    per statement, no ``BEGIN``/``COMMIT`` around it."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            await conn.set_autocommit(False)


class TooManyRetries(RuntimeError):
    """A unit of work kept failing with retryable errors."""


async def transaction(pool: Pool, work: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction, retrying on deadlocks and serialization failures."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with pool.connection() as conn, conn.transaction():
                return await work(conn)
        except tuple(_RETRYABLE) as exc:
            await _backoff(exc, attempt)
    raise TooManyRetries(f"gave up after {MAX_ATTEMPTS} attempts")


async def pipelined(pool: Pool, work: Callable[[Conn], Awaitable[Callable[[], Awaitable[T]]]]) -> T:
    """:func:`transaction` in pipeline mode: statements whose answers are not awaited yet
    travel together with the ``COMMIT``.

    ``work`` runs inside the transaction and returns a *finisher*, called once the
    transaction has committed (on the same connection) to read the answers it queued: an
    entry posted with :func:`exchange.ledger.engine.post_queued` and its commit cost one
    round trip together. A statement whose answer ``work`` reads at once still costs its
    own round trip (the ``BEGIN`` rides along with the first one).
    """
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with pool.connection() as conn:
                async with conn.pipeline(), conn.transaction():
                    finish = await work(conn)
                return await finish()
        except tuple(_RETRYABLE) as exc:
            await _backoff(exc, attempt)
    raise TooManyRetries(f"gave up after {MAX_ATTEMPTS} attempts")


async def autocommitted(pool: Pool, work: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``work`` on a pooled connection in autocommit mode, retrying as
    :func:`transaction` does: each statement is its own transaction, so ``work`` must write
    in one statement (see :mod:`exchange.ledger.express`)."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with reading(pool) as conn:
                return await work(conn)
        except tuple(_RETRYABLE) as exc:
            await _backoff(exc, attempt)
    raise TooManyRetries(f"gave up after {MAX_ATTEMPTS} attempts")


async def _backoff(exc: BaseException, attempt: int) -> None:
    RETRIES[_RETRYABLE[type(exc)]] += 1
    await asyncio.sleep(random.uniform(0, 0.002 * (2**attempt)))  # noqa: S311


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
    posted: Posted | None = None
    """The entry as written by this request (``None`` for a replay, or when not kept)."""


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


async def idempotent_queued(
    pool: Pool,
    *,
    initiator: str,
    key: str,
    operation: str,
    request: dict[str, Any],
    claim: Callable[[Conn, bytes], Awaitable[tuple[Prior | None, F | None]]],
    body: Callable[[Conn, Claim, F], Awaitable[PendingPost]],
) -> Outcome:
    """:func:`idempotent` for the hot operations, in two round trips.

    ``claim(conn, fingerprint)`` claims the key in a statement that also reads what the
    body needs (and may lock it): it returns the earlier outcome, or what it found. ``body``
    then queues its entry (:func:`exchange.ledger.engine.post_queued`), which travels with
    the ``COMMIT`` (see :func:`pipelined`). Refusals are stored under the key as with
    :func:`idempotent`.
    """
    idempotency.check_key(key)
    digest = idempotency.fingerprint(operation, request)
    Result = tuple[int | None, Refusal | None, bool, Posted | None]

    async def attempt(conn: Conn) -> Callable[[], Awaitable[Result]]:
        prior, found = await claim(conn, digest)
        if prior is not None:
            return _ready((prior.entry_id, prior.refusal, True, None))
        assert found is not None
        try:
            pending = await body(conn, Claim(initiator, key, digest), found)
        except Refusal as refusal:
            await idempotency.record_refusal(conn, initiator, key, refusal)
            return _ready((None, refusal, False, None))

        async def finish() -> Result:
            posted = await pending.result()
            return posted.entry_id, None, False, posted

        return finish

    entry_id, refusal, replayed, posted = await pipelined(pool, attempt)
    if refusal is not None:
        raise refusal
    assert entry_id is not None
    return Outcome(entry_id=entry_id, replayed=replayed, posted=posted)


def _ready(value: T) -> Callable[[], Awaitable[T]]:
    async def finish() -> T:
        return value

    return finish
