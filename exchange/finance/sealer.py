"""The periodic sealer: extends the hash chain in the background while the app runs.

Every server process may run one; they take turns on the chain lock (a busy lock means
another process is sealing, and this round is skipped). Writers never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from exchange.services.tx import Pool

from .chain import seal
from .sessions import Busy

logger = logging.getLogger("exchange.finance")

DEFAULT_INTERVAL_S = 5.0


async def run_sealer(pool: Pool, stop: asyncio.Event, interval_s: float) -> None:
    """Seal every ``interval_s`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await seal(pool, wait=False)
        except Busy:
            pass
        except Exception:
            logger.exception("sealing the hash chain failed; retrying in %.0f s", interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


@contextlib.asynccontextmanager
async def periodic_sealer(
    pool: Pool, interval_s: float = DEFAULT_INTERVAL_S
) -> AsyncIterator[asyncio.Task[None]]:
    """Run :func:`run_sealer` for the duration of the block (an app's lifespan)."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_sealer(pool, stop, interval_s), name="exchange-sealer")
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=30)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
