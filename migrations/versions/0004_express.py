"""The express path: a one-statement earn refuses to keep a claim built on stale state.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from exchange.db.ddl import DROP_EXPRESS_RULES_V1, EXPRESS_RULES_V1

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(EXPRESS_RULES_V1)


def downgrade() -> None:
    op.execute(DROP_EXPRESS_RULES_V1)
