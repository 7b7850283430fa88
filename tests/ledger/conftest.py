"""Fixtures of the ledger tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.ledger.support import Hub, build_hub


@pytest.fixture
async def hub(anyio_backend: str, database_url: str) -> AsyncIterator[Hub]:
    h = await build_hub(database_url)
    try:
        yield h
    finally:
        await h.pool.close()
