"""Earning rules, cap tallies, rule-based award decisions and member link codes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 04:39:00.874986
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "link_codes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("code_hash", sa.LargeBinary(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_merchant_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(used_at IS NULL) = (used_by_merchant_id IS NULL)", name=op.f("ck_link_codes_used")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_link_codes_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["used_by_merchant_id"],
            ["merchants.id"],
            name=op.f("fk_link_codes_used_by_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_link_codes_code_hash")),
    )
    op.create_index("ix_link_codes_member", "link_codes", ["member_id"], unique=False)
    op.create_table(
        "earn_tallies",
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("currency_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("points", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("period IN ('day', 'month')", name=op.f("ck_earn_tallies_period")),
        sa.CheckConstraint("points >= 0", name=op.f("ck_earn_tallies_points")),
        sa.ForeignKeyConstraint(
            ["currency_id"], ["currencies.id"], name=op.f("fk_earn_tallies_currency_id_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_earn_tallies_member_id_members")
        ),
        sa.PrimaryKeyConstraint(
            "member_id", "currency_id", "period", "period_start", name=op.f("pk_earn_tallies")
        ),
    )
    op.create_table(
        "earning_rules",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("currency_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_by", sa.Text(), nullable=True),
        sa.CheckConstraint("jsonb_typeof(params) = 'object'", name=op.f("ck_earning_rules_params")),
        sa.CheckConstraint(
            "kind IN ('spend', 'action', 'multiplier', 'cap')", name=op.f("ck_earning_rules_kind")
        ),
        sa.ForeignKeyConstraint(
            ["currency_id"], ["currencies.id"], name=op.f("fk_earning_rules_currency_id_currencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earning_rules")),
    )
    op.create_index(
        "ix_earning_rules_currency", "earning_rules", ["currency_id", "id"], unique=False
    )
    op.create_table(
        "rule_awards",
        sa.Column("initiator", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("currency_id", sa.Integer(), nullable=False),
        sa.Column("amount_spent", sa.Numeric(), nullable=True),
        sa.Column("order_ref", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("applied", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("capped_by", sa.BigInteger(), nullable=True),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'purchase') = (amount_spent IS NOT NULL) AND (kind = 'action') = (action IS NOT NULL)",
            name=op.f("ck_rule_awards_subject"),
        ),
        sa.CheckConstraint("kind IN ('purchase', 'action')", name=op.f("ck_rule_awards_kind")),
        sa.CheckConstraint(
            "(points > 0) = (entry_id IS NOT NULL) AND points >= 0",
            name=op.f("ck_rule_awards_entry"),
        ),
        sa.ForeignKeyConstraint(
            ["capped_by"], ["earning_rules.id"], name=op.f("fk_rule_awards_capped_by_earning_rules")
        ),
        sa.ForeignKeyConstraint(
            ["currency_id"], ["currencies.id"], name=op.f("fk_rule_awards_currency_id_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_rule_awards_entry_id_entries")
        ),
        sa.ForeignKeyConstraint(
            ["initiator", "idempotency_key"],
            ["requests.initiator", "requests.idempotency_key"],
            name="fk_rule_awards_request",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_rule_awards_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_rule_awards_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("initiator", "idempotency_key", name=op.f("pk_rule_awards")),
    )
    op.create_index("ix_rule_awards_entry", "rule_awards", ["entry_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_rule_awards_entry", table_name="rule_awards")
    op.drop_table("rule_awards")
    op.drop_index("ix_earning_rules_currency", table_name="earning_rules")
    op.drop_table("earning_rules")
    op.drop_table("earn_tallies")
    op.drop_index("ix_link_codes_member", table_name="link_codes")
    op.drop_table("link_codes")
