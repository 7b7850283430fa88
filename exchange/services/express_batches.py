"""Express earns of one process written together: one statement and one commit for many.

An express earn (:mod:`exchange.ledger.express`) costs one statement and one commit. Under
load most of that cost is fixed (a round trip, the statement's start-up, the posting
trigger's queries, the commit's WAL flush), so the earns that arrive while others are being
written wait in a queue and go to the database together: each batch is one
:func:`exchange.ledger.express.post_earns` statement of up to :data:`MAX_ITEMS` earns, and
at most :data:`IN_FLIGHT` batches of a process are in the database at once. An earn that
finds a batch slot free is sent at once (alone, as the single-earn statement), so a quiet
hub answers as fast as before; a busy one answers more earns per second with the same
cores.

Nothing about an earn changes: the same key space and fingerprint, the same entry,
postings and lot, committed before it is answered. Two earns under the same key never share
a batch (the later waits for the next one and replays). An earn whose guess fails (a stale
rate, a currency just deactivated, a first earn with no wallet yet, a wallet in debt) is
left out of its batch's writes and takes the ordinary path on its own (which records any
refusal); the others are written. Only when a wallet goes into debt between the statement's
check and its lock does the statement write nothing; every earn of that batch is then tried
again alone.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from exchange.ledger import express
from exchange.ledger.engine import Conn, EntryDraft, Posted
from exchange.services.futures import answer, fail
from exchange.services.tx import Pool, autocommitted

MAX_ITEMS = 64
"""Earns per statement."""
IN_FLIGHT = 2
"""Batches of one process in the database at once."""

ALONE = object()
"""A batch's answer to an earn that must be tried again alone (some earn of its batch
failed its check; nothing was written)."""

STATS: Counter[str] = Counter()
"""``batches`` sent, the ``earns`` they carried (single-earn statements included), the earns
whose guess failed (``stale``: they take the ordinary path) and those sent back to be tried
``alone`` (their batch was refused)."""


@dataclass
class _Waiting:
    draft: EntryDraft
    guess: express.Guess
    future: asyncio.Future[object] = field(repr=False)

    @property
    def claim(self) -> tuple[str, str]:
        return self.draft.initiator, self.draft.idempotency_key


class ExpressBatches:
    """The queue of express earns waiting for a batch, for one connection pool."""

    def __init__(self, pool: Pool, *, max_items: int = MAX_ITEMS, in_flight: int = IN_FLIGHT):
        self.pool = pool
        self.max_items = max_items
        self.in_flight = in_flight
        self._queue: deque[_Waiting] = deque()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(
        self, draft: EntryDraft, guess: express.Guess, operation: str
    ) -> Posted | object | None:
        """Write the express earn ``draft`` with others; as :func:`express.post_earn`
        (a posted entry, ``None`` when its key was claimed before, :class:`express.Stale`
        raised), or :data:`ALONE`."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(draft, guess, future))
        if self._running < self.in_flight:
            self._running += 1
            task = asyncio.create_task(self._drain(operation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # A cancelled request cancels only its future: the batch writes its earn all the
        # same (a retry replays it) and skips answering it.
        result: object = await future
        return result

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        claims: set[tuple[str, str]] = set()
        later: list[_Waiting] = []
        while self._queue and len(batch) < self.max_items:
            waiting = self._queue.popleft()
            if waiting.claim in claims:
                later.append(waiting)  # a twin: it replays once this batch has committed
            else:
                claims.add(waiting.claim)
                batch.append(waiting)
        self._queue.extendleft(reversed(later))
        return batch

    async def _drain(self, operation: str) -> None:
        try:
            while self._queue:
                batch = self._take()
                await self._send(batch, operation)
        finally:
            self._running -= 1

    async def _send(self, batch: Sequence[_Waiting], operation: str) -> None:
        STATS["batches"] += 1
        STATS["earns"] += len(batch)
        try:
            if len(batch) == 1:
                only = batch[0]

                async def one(conn: Conn) -> list[Posted | express.Stale | None]:
                    return [await express.post_earn(conn, only.draft, operation, only.guess)]

                results: list[Any] = await autocommitted(self.pool, one)
            else:

                async def many(conn: Conn) -> list[Posted | express.Stale | None]:
                    return await express.post_earns(
                        conn, [w.draft for w in batch], [w.guess for w in batch], operation
                    )

                results = await autocommitted(self.pool, many)
        except express.Stale as stale:
            if len(batch) == 1:
                fail(batch[0].future, stale)
            else:
                STATS["alone"] += len(batch)
                for waiting in batch:
                    answer(waiting.future, ALONE)
            return
        except BaseException as exc:
            # Every earn of the batch learns of it (a cancellation or exit still propagates).
            for waiting in batch:
                fail(waiting.future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for waiting, result in zip(batch, results, strict=True):
            if isinstance(result, express.Stale):
                STATS["stale"] += 1
                fail(waiting.future, result)
            else:
                answer(waiting.future, result)


_BY_POOL: weakref.WeakKeyDictionary[Any, ExpressBatches] = weakref.WeakKeyDictionary()


def batches_of(pool: Pool) -> ExpressBatches:
    """The express batches of ``pool`` (one queue per pool and process)."""
    found = _BY_POOL.get(pool)
    if found is None:
        found = _BY_POOL[pool] = ExpressBatches(pool)
    return found
