"""The hub's notion of "now", in one place so that tests can move time forward."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
