"""Posting rules once per statement; the express earn refuses a claim built on stale state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from exchange.db.ddl import (
    DROP_EXPRESS_RULES_V1,
    DROP_LEDGER_RULES_V2,
    EXPRESS_RULES_V1,
    LEDGER_RULES_V1,
    LEDGER_RULES_V2,
)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _posting_rules_v1() -> str:
    """The row-level posting triggers of ``0001`` (from its frozen text)."""
    start = LEDGER_RULES_V1.index("-- Every posting moves its account's balance")
    end = LEDGER_RULES_V1.index("-- Append-only journal.")
    return LEDGER_RULES_V1[start:end]


def upgrade() -> None:
    op.execute(LEDGER_RULES_V2)
    op.execute(EXPRESS_RULES_V1)


def downgrade() -> None:
    op.execute(DROP_EXPRESS_RULES_V1)
    op.execute(DROP_LEDGER_RULES_V2)
    op.execute(_posting_rules_v1())
