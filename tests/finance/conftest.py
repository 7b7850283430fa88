"""Fixtures of the finance tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.finance.support import Finance
from tests.ledger.support import build_hub


@pytest.fixture
async def fin(anyio_backend: str, database_url: str) -> AsyncIterator[Finance]:
    hub = await build_hub(database_url, pool_size=6)
    try:
        yield Finance(hub)
    finally:
        await hub.pool.close()
