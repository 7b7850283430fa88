"""Answering the futures of requests that wait on a shared statement."""

from __future__ import annotations

import asyncio
from typing import Any


def answer(future: asyncio.Future[Any], result: object) -> None:
    """Give ``future`` its result, unless its waiter is gone (cancelled) or answered."""
    if not future.done():
        future.set_result(result)


def fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail ``future`` with ``exc``; a cancellation cancels it, as it would a direct await."""
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)
