"""A block's chain entries checked once per statement instead of per row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from exchange.db.finance_ddl import (
    CHAIN_ENTRY_FOREIGN_KEYS,
    CHAIN_ENTRY_RULES_V2,
    DROP_CHAIN_ENTRY_RULES_V2,
)

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _name(table: str, column: str, target: str) -> str:
    return f"fk_{table}_{column}_{target}"


def upgrade() -> None:
    for table, column, target in CHAIN_ENTRY_FOREIGN_KEYS:
        op.drop_constraint(_name(table, column, target), table, type_="foreignkey")
    op.execute(CHAIN_ENTRY_RULES_V2)


def downgrade() -> None:
    op.execute(DROP_CHAIN_ENTRY_RULES_V2)
    for table, column, target in CHAIN_ENTRY_FOREIGN_KEYS:
        op.create_foreign_key(_name(table, column, target), table, target, [column], ["id"])
