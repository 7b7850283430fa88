"""Posting checks that read only the statement's own postings (no walk of the journal).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 13:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from exchange.db.ddl import LEDGER_RULES_V3, ledger_rules_v2_function

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(LEDGER_RULES_V3)


def downgrade() -> None:
    op.execute(ledger_rules_v2_function())
