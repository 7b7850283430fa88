"""Reads of one process that arrive together share one statement.

A balance read is one short statement; under load most of its cost is fixed, not per row:
the driver's round trip and event-loop work, the statement's start-up in PostgreSQL. So the
reads of one kind that arrive while an earlier statement of that kind is in the database
wait, and the next statement answers all of them (at most :data:`MAX_KEYS` keys). A read
that finds a slot free is sent at once, alone, so a quiet hub answers as fast as before.

Nothing a reader sees changes. A waiting read always joins a statement that starts *after*
it arrived, never one already in flight, so it sees every write committed before it was
asked for (read-your-writes holds as for a statement of its own), and each statement is one
snapshot. Each reader gets only its own key's answer; keys are resolved by the caller after
authorization, exactly as for a statement of its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from exchange.services.futures import answer, fail

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_KEYS = 100
"""Keys per shared statement."""
IN_FLIGHT = 1
"""Statements of one kind and process in the database at once."""

STATS: Counter[str] = Counter()
"""Shared ``statements`` sent and the ``reads`` they answered, per process."""

Fetch = Callable[[Any, Sequence[K]], Awaitable[dict[K, V]]]
"""``fetch(pool, keys)``: answers for distinct keys, in one statement; a key with no answer
is left out."""


class SharedReads(Generic[K, V]):
    """The reads of one kind waiting for a statement, for one connection pool."""

    def __init__(
        self,
        fetch: Fetch[K, V],
        missing: Callable[[], V],
        *,
        max_keys: int = MAX_KEYS,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self.fetch = fetch
        self.missing = missing
        self.max_keys = max_keys
        self.in_flight = in_flight
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, pool: Any, key: K) -> V:
        """``key``'s answer from the next statement on ``pool`` (``missing()`` when it has
        none)."""
        # A cancelled reader cancels only its own future; the statement goes on for the rest.
        return await self.future(pool, key)

    def future(self, pool: Any, key: K) -> asyncio.Future[V]:
        """A future of ``key``'s answer from the next statement on ``pool``: what
        :meth:`load` awaits, for a caller that shares it between several awaiters."""
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._running < self.in_flight:
            self._running += 1
            task = asyncio.create_task(self._drain(pool))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    def _take(self) -> dict[K, list[asyncio.Future[V]]]:
        taken: dict[K, list[asyncio.Future[V]]] = {}
        for key in list(self._waiting)[: self.max_keys]:
            taken[key] = self._waiting.pop(key)
        return taken

    async def _drain(self, pool: Any) -> None:
        try:
            while self._waiting:
                await self._send(pool, self._take())
        finally:
            self._running -= 1

    async def _send(self, pool: Any, taken: dict[K, list[asyncio.Future[V]]]) -> None:
        STATS["statements"] += 1
        STATS["reads"] += sum(len(futures) for futures in taken.values())
        try:
            found = await self.fetch(pool, list(taken))
        except BaseException as exc:
            for futures in taken.values():
                for future in futures:
                    fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for key, futures in taken.items():
            value = found.get(key)
            for future in futures:
                answer(future, self.missing() if value is None else value)


_BY_POOL: weakref.WeakKeyDictionary[Any, dict[str, SharedReads[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)


def shared_reads(
    pool: Any, kind: str, fetch: Fetch[K, V], missing: Callable[[], V]
) -> SharedReads[K, V]:
    """The shared reads of ``kind`` on ``pool`` (one queue per pool, kind and process).

    ``fetch`` and ``missing`` are kept from the first call for ``kind``: pass module-level
    functions (a closure over the pool would keep the pool alive).
    """
    kinds = _BY_POOL.get(pool)
    if kinds is None:
        kinds = _BY_POOL[pool] = {}
    found = kinds.get(kind)
    if found is None:
        found = kinds[kind] = SharedReads(fetch, missing)
    return found
