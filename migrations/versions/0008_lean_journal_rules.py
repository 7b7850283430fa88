"""The journal's rules with fewer lookups per row; an entry's member checked per statement.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 02:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from exchange.db.journal_ddl import DROP_LEAN_RULES_V1, LEAN_RULES_V1, MEMBER_REFERENCE

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE, _COLUMN, _TARGET = MEMBER_REFERENCE
_FK = f"fk_{_TABLE}_{_COLUMN}_{_TARGET}"


def upgrade() -> None:
    op.drop_constraint(_FK, _TABLE, type_="foreignkey")
    op.execute(LEAN_RULES_V1)
    op.drop_index("ix_entries_reverses", table_name="entries")
    op.create_index(
        "ix_entries_reverses",
        "entries",
        ["reverses_entry_id"],
        postgresql_where=sa.text("reverses_entry_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_entries_reverses", table_name="entries")
    op.create_index("ix_entries_reverses", "entries", ["reverses_entry_id"])
    op.execute(DROP_LEAN_RULES_V1)
    op.create_foreign_key(_FK, _TABLE, _TARGET, [_COLUMN], ["id"])
