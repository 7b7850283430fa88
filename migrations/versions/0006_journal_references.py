"""The journal's references checked once per statement instead of by foreign keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from exchange.db.ddl import (
    DROP_JOURNAL_REFERENCES_V1,
    JOURNAL_FOREIGN_KEYS,
    JOURNAL_REFERENCES_V1,
    LEDGER_RULES_V3,
)

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _name(table: str, column: str, target: str) -> str:
    return f"fk_{table}_{column}_{target}"


def upgrade() -> None:
    for table, column, target in JOURNAL_FOREIGN_KEYS:
        op.drop_constraint(_name(table, column, target), table, type_="foreignkey")
    op.execute(JOURNAL_REFERENCES_V1)


def downgrade() -> None:
    op.execute(DROP_JOURNAL_REFERENCES_V1)
    op.execute(LEDGER_RULES_V3)
    for table, column, target in JOURNAL_FOREIGN_KEYS:
        op.create_foreign_key(_name(table, column, target), table, target, [column], ["id"])
