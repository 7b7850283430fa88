"""Balance rows kept on half-full pages, so that moving a balance is a heap-only update.

Every posting moves a balance row. On full pages (the default fill factor, 100) the new
version of a row seldom fits beside the old one, so most updates wrote the row to another
page and a new entry into the primary key; with pages half full, PostgreSQL writes it on
the same page and skips the index (a heap-only tuple), and pruning makes room again.

Rows already stored move to half-full pages as they are updated; ``VACUUM FULL balances``
rewrites the table at once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 23:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The value is this revision's own: a later change of ``BALANCES_FILLFACTOR`` needs a
    # revision of its own (a test compares the database with the metadata).
    op.execute("ALTER TABLE balances SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE balances RESET (fillfactor)")
