"""The settlement ledger: catalogue, accounts, journal, lots, idempotency, rules.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 04:34:45.096665
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from exchange.db.ddl import DROP_LEDGER_RULES_V1, LEDGER_RULES_V1

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hub_settings",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_hub_settings")),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_members")),
    )
    op.create_table(
        "merchants",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'active'"), nullable=False),
        sa.Column("exposure_limit_micro", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f("ck_merchants_status")),
        sa.CheckConstraint(
            "exposure_limit_micro IS NULL OR exposure_limit_micro >= 0",
            name=op.f("ck_merchants_exposure"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint("code", name=op.f("uq_merchants_code")),
    )
    op.create_table(
        "requests",
        sa.Column("initiator", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("refusal_code", sa.Text(), nullable=True),
        sa.Column("refusal_field", sa.Text(), nullable=True),
        sa.Column("refusal_message", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("initiator", "idempotency_key", name=op.f("pk_requests")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("last4", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("label", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(role = 'merchant') = (merchant_id IS NOT NULL)",
            name=op.f("ck_api_keys_merchant_role"),
        ),
        sa.CheckConstraint(
            "role IN ('admin', 'finance', 'merchant')", name=op.f("ck_api_keys_role")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_api_keys_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index("ix_api_keys_merchant", "api_keys", ["merchant_id"], unique=False)
    op.create_table(
        "currencies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("issuer_id", sa.BigInteger(), nullable=True),
        sa.Column("scale", sa.SmallInteger(), nullable=False),
        sa.Column("expiry_kind", sa.Text(), server_default=sa.text("'never'"), nullable=False),
        sa.Column("expiry_param", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(expiry_kind = 'never' AND expiry_param IS NULL) OR (expiry_kind IN ('days', 'months_end') AND expiry_param > 0)",
            name=op.f("ck_currencies_expiry"),
        ),
        sa.CheckConstraint(
            "(kind = 'points') = (issuer_id IS NOT NULL)", name=op.f("ck_currencies_issuer")
        ),
        sa.CheckConstraint("code ~ '^[A-Z][A-Z0-9_]{1,15}$'", name=op.f("ck_currencies_code")),
        sa.CheckConstraint("kind IN ('points', 'settlement')", name=op.f("ck_currencies_kind")),
        sa.CheckConstraint("scale BETWEEN 0 AND 6", name=op.f("ck_currencies_scale")),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["merchants.id"], name=op.f("fk_currencies_issuer_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_currencies")),
        sa.UniqueConstraint("code", name=op.f("uq_currencies_code")),
    )
    op.create_index("ix_currencies_issuer", "currencies", ["issuer_id"], unique=False)
    op.create_table(
        "member_links",
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_ref", sa.Text(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_links_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_member_links_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("merchant_id", "customer_ref", name=op.f("pk_member_links")),
        sa.UniqueConstraint("merchant_id", "member_id", name="uq_member_links_merchant_member"),
    )
    op.create_index("ix_member_links_member", "member_links", ["member_id"], unique=False)
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=True),
        sa.Column("merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("stripes", sa.SmallInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'wallet') = (member_id IS NOT NULL)", name=op.f("ck_accounts_member")
        ),
        sa.CheckConstraint(
            "(kind IN ('outstanding', 'settlement')) = (merchant_id IS NOT NULL)",
            name=op.f("ck_accounts_merchant"),
        ),
        sa.CheckConstraint(
            "kind IN ('wallet', 'outstanding', 'settlement', 'hub_fees', 'hub_clearing')",
            name=op.f("ck_accounts_kind"),
        ),
        sa.CheckConstraint(
            "stripes BETWEEN 1 AND 256 AND (kind <> 'wallet' OR stripes = 1)",
            name=op.f("ck_accounts_stripes"),
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["currencies.id"], name=op.f("fk_accounts_asset_id_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_accounts_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_accounts_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint(
            "kind",
            "asset_id",
            "member_id",
            "merchant_id",
            name="uq_accounts_identity",
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index("ix_accounts_member", "accounts", ["member_id"], unique=False)
    op.create_table(
        "quotes",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("from_currency_id", sa.Integer(), nullable=False),
        sa.Column("to_currency_id", sa.Integer(), nullable=False),
        sa.Column("from_amount", sa.BigInteger(), nullable=False),
        sa.Column("to_amount", sa.BigInteger(), nullable=False),
        sa.Column("from_rate", sa.Numeric(), nullable=False),
        sa.Column("to_rate", sa.Numeric(), nullable=False),
        sa.Column("fee_bp", sa.Integer(), nullable=False),
        sa.Column("value_micro", sa.BigInteger(), nullable=False),
        sa.Column("to_value_micro", sa.BigInteger(), nullable=False),
        sa.Column("fee_micro", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "fee_micro >= 0 AND to_value_micro + fee_micro = value_micro",
            name=op.f("ck_quotes_fee"),
        ),
        sa.CheckConstraint("from_amount > 0 AND to_amount > 0", name=op.f("ck_quotes_amounts")),
        sa.CheckConstraint("from_currency_id <> to_currency_id", name=op.f("ck_quotes_distinct")),
        sa.ForeignKeyConstraint(
            ["from_currency_id"],
            ["currencies.id"],
            name=op.f("fk_quotes_from_currency_id_currencies"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_quotes_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["to_currency_id"], ["currencies.id"], name=op.f("fk_quotes_to_currency_id_currencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotes")),
    )
    op.create_index("ix_quotes_member", "quotes", ["member_id"], unique=False)
    op.create_table(
        "rates",
        sa.Column("currency_id", sa.Integer(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rate", sa.Numeric(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("recorded_by", sa.Text(), nullable=False),
        sa.CheckConstraint("rate > 0", name=op.f("ck_rates_positive")),
        sa.ForeignKeyConstraint(
            ["currency_id"], ["currencies.id"], name=op.f("fk_rates_currency_id_currencies")
        ),
        sa.PrimaryKeyConstraint("currency_id", "effective_at", name=op.f("pk_rates")),
    )
    op.create_table(
        "balances",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("stripe", sa.SmallInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_balances_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "stripe", name=op.f("pk_balances")),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("initiator", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("member_id", sa.BigInteger(), nullable=True),
        sa.Column("reverses_entry_id", sa.BigInteger(), nullable=True),
        sa.Column("quote_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "rates",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'reverse') = (reverses_entry_id IS NOT NULL)", name=op.f("ck_entries_reverses")
        ),
        sa.CheckConstraint(
            "kind IN ('earn', 'redeem', 'convert', 'expire', 'reverse', 'adjust', 'settle')",
            name=op.f("ck_entries_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_entries_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_entries_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["quote_id"], ["quotes.id"], name=op.f("fk_entries_quote_id_quotes")
        ),
        sa.ForeignKeyConstraint(
            ["reverses_entry_id"], ["entries.id"], name=op.f("fk_entries_reverses_entry_id_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entries")),
        sa.UniqueConstraint("initiator", "idempotency_key", name="uq_entries_idempotency"),
    )
    op.create_index("ix_entries_member", "entries", ["member_id", "id"], unique=False)
    op.create_index("ix_entries_merchant", "entries", ["merchant_id", "id"], unique=False)
    op.create_index("ix_entries_reverses", "entries", ["reverses_entry_id"], unique=False)
    op.create_index(
        "uq_entries_quote",
        "entries",
        ["quote_id"],
        unique=True,
        postgresql_where=sa.text("quote_id IS NOT NULL"),
    )
    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("wallet_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("original", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("earned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("original > 0", name=op.f("ck_lots_original")),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= original", name=op.f("ck_lots_remaining")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_lots_entry_id_entries")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["accounts.id"], name=op.f("fk_lots_wallet_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
    )
    op.create_index("ix_lots_entry", "lots", ["entry_id"], unique=False)
    op.create_index(
        "ix_lots_expiring",
        "lots",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("remaining > 0 AND expires_at IS NOT NULL"),
    )
    op.create_index(
        "ix_lots_open",
        "lots",
        ["wallet_id", "expires_at", "id"],
        unique=False,
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_table(
        "postings",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_postings_nonzero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_postings_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["currencies.id"], name=op.f("fk_postings_asset_id_currencies")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_postings_entry_id_entries")
        ),
        sa.PrimaryKeyConstraint("entry_id", "seq", name=op.f("pk_postings")),
    )
    op.create_index("ix_postings_account", "postings", ["account_id", "entry_id"], unique=False)
    op.create_table(
        "lot_moves",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_lot_moves_nonzero")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_lot_moves_entry_id_entries")
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"], name=op.f("fk_lot_moves_lot_id_lots")),
        sa.PrimaryKeyConstraint("entry_id", "lot_id", name=op.f("pk_lot_moves")),
    )
    op.create_index("ix_lot_moves_lot", "lot_moves", ["lot_id"], unique=False)

    op.execute(LEDGER_RULES_V1)


def downgrade() -> None:
    op.execute(DROP_LEDGER_RULES_V1)
    op.drop_index("ix_lot_moves_lot", table_name="lot_moves")
    op.drop_table("lot_moves")
    op.drop_index("ix_postings_account", table_name="postings")
    op.drop_table("postings")
    op.drop_index("ix_lots_open", table_name="lots", postgresql_where=sa.text("remaining > 0"))
    op.drop_index(
        "ix_lots_expiring",
        table_name="lots",
        postgresql_where=sa.text("remaining > 0 AND expires_at IS NOT NULL"),
    )
    op.drop_index("ix_lots_entry", table_name="lots")
    op.drop_table("lots")
    op.drop_index(
        "uq_entries_quote", table_name="entries", postgresql_where=sa.text("quote_id IS NOT NULL")
    )
    op.drop_index("ix_entries_reverses", table_name="entries")
    op.drop_index("ix_entries_merchant", table_name="entries")
    op.drop_index("ix_entries_member", table_name="entries")
    op.drop_table("entries")
    op.drop_table("balances")
    op.drop_table("rates")
    op.drop_index("ix_quotes_member", table_name="quotes")
    op.drop_table("quotes")
    op.drop_index("ix_accounts_member", table_name="accounts")
    op.drop_table("accounts")
    op.drop_index("ix_member_links_member", table_name="member_links")
    op.drop_table("member_links")
    op.drop_index("ix_currencies_issuer", table_name="currencies")
    op.drop_table("currencies")
    op.drop_index("ix_api_keys_merchant", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("requests")
    op.drop_table("merchants")
    op.drop_table("members")
    op.drop_table("hub_settings")
