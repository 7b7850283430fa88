"""Finance: the hash chain over the journal, settlement batches, statements, payments.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 04:57:08.460975
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from exchange.db.finance_ddl import DROP_FINANCE_RULES_V1, FINANCE_RULES_V1

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_blocks",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column(
            "sealed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("sealed_by", sa.Text(), nullable=False),
        sa.CheckConstraint("entry_count > 0", name=op.f("ck_chain_blocks_entry_count")),
        sa.CheckConstraint("id > 0", name=op.f("ck_chain_blocks_id")),
        sa.CheckConstraint(
            "length(prev_hash) = 32 AND length(hash) = 32", name=op.f("ck_chain_blocks_hash_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_blocks")),
    )
    op.create_table(
        "chain_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("frontier", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("barrier_hi", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "barrier_writers",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("frontier >= 0 AND barrier_hi >= 0", name=op.f("ck_chain_state_ids")),
        sa.CheckConstraint("id = 1", name=op.f("ck_chain_state_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_state")),
    )
    op.create_table(
        "settlement_batches",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "closed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("closed_by", sa.Text(), nullable=False),
        sa.Column("request_key", sa.Text(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("minor_unit", sa.SmallInteger(), nullable=False),
        sa.Column("chain_block", sa.BigInteger(), nullable=True),
        sa.Column("chain_head", sa.LargeBinary(), nullable=False),
        sa.Column("scan_from_block", sa.BigInteger(), nullable=False),
        sa.Column("sequence_at_close", sa.BigInteger(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("gross_micro", sa.BigInteger(), nullable=False),
        sa.Column("net_micro", sa.BigInteger(), nullable=False),
        sa.Column("efficiency", sa.Numeric(), nullable=False),
        sa.Column("hub_fees_micro", sa.BigInteger(), nullable=False),
        sa.Column("hub_rounding_micro", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "efficiency >= 0 AND efficiency <= 1", name=op.f("ck_settlement_batches_efficiency")
        ),
        sa.CheckConstraint(
            "entry_count >= 0 AND gross_micro >= 0 AND net_micro >= 0",
            name=op.f("ck_settlement_batches_totals"),
        ),
        sa.CheckConstraint("id > 0", name=op.f("ck_settlement_batches_id")),
        sa.CheckConstraint(
            "minor_unit BETWEEN 0 AND 6", name=op.f("ck_settlement_batches_minor_unit")
        ),
        sa.ForeignKeyConstraint(
            ["chain_block"],
            ["chain_blocks.id"],
            name=op.f("fk_settlement_batches_chain_block_chain_blocks"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_batches")),
        sa.UniqueConstraint("request_key", name=op.f("uq_settlement_batches_request_key")),
    )
    op.create_table(
        "settlement_instructions",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('to_hub', 'from_hub')", name=op.f("ck_settlement_instructions_direction")
        ),
        sa.CheckConstraint("amount_micro > 0", name=op.f("ck_settlement_instructions_amount")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_instructions_batch_id_settlement_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_settlement_instructions_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "merchant_id", name=op.f("pk_settlement_instructions")),
    )
    op.create_table(
        "settlement_obligations",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("debtor", sa.Text(), nullable=False),
        sa.Column("creditor", sa.Text(), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_micro > 0", name=op.f("ck_settlement_obligations_amount")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_obligations_batch_id_settlement_batches"),
        ),
        sa.PrimaryKeyConstraint(
            "batch_id", "debtor", "creditor", name=op.f("pk_settlement_obligations")
        ),
    )
    op.create_table(
        "settlement_positions",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("party", sa.Text(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("position_micro", sa.BigInteger(), nullable=False),
        sa.Column("carried_in_micro", sa.BigInteger(), nullable=False),
        sa.Column("carry_out_micro", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(merchant_id IS NULL) = (party IN ('hub:fees', 'hub:clearing'))",
            name=op.f("ck_settlement_positions_party"),
        ),
        sa.CheckConstraint(
            "merchant_id IS NOT NULL OR (carried_in_micro = 0 AND carry_out_micro = 0)",
            name=op.f("ck_settlement_positions_hub_carry"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_positions_batch_id_settlement_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_settlement_positions_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "party", name=op.f("pk_settlement_positions")),
    )
    op.create_table(
        "settlement_statements",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("opening_micro", sa.BigInteger(), nullable=False),
        sa.Column("closing_micro", sa.BigInteger(), nullable=False),
        sa.Column("netted_micro", sa.BigInteger(), nullable=False),
        sa.Column("payments_micro", sa.BigInteger(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "closing_micro = opening_micro + netted_micro + payments_micro",
            name=op.f("ck_settlement_statements_ties"),
        ),
        sa.CheckConstraint("line_count >= 0", name=op.f("ck_settlement_statements_line_count")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_statements_batch_id_settlement_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_settlement_statements_merchant_id_merchants"),
        ),
        sa.PrimaryKeyConstraint("batch_id", "merchant_id", name=op.f("pk_settlement_statements")),
    )
    op.create_table(
        "chain_entries",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("block_id", sa.BigInteger(), nullable=False),
        sa.Column("ord", sa.Integer(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("length(digest) = 32", name=op.f("ck_chain_entries_digest_length")),
        sa.CheckConstraint("ord >= 0", name=op.f("ck_chain_entries_ord")),
        sa.ForeignKeyConstraint(
            ["block_id"], ["chain_blocks.id"], name=op.f("fk_chain_entries_block_id_chain_blocks")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_chain_entries_entry_id_entries")
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_chain_entries")),
        sa.UniqueConstraint("block_id", "ord", name="uq_chain_entries_block_ord"),
    )
    op.create_table(
        "settlement_batch_entries",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["settlement_batches.id"],
            name=op.f("fk_settlement_batch_entries_batch_id_settlement_batches"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_settlement_batch_entries_entry_id_entries")
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_settlement_batch_entries")),
    )
    op.create_index(
        "ix_settlement_batch_entries_batch",
        "settlement_batch_entries",
        ["batch_id", "entry_id"],
        unique=False,
    )
    op.create_table(
        "settlement_payments",
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.Column("external_ref", sa.Text(), nullable=False),
        sa.Column(
            "confirmed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("confirmed_by", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('to_hub', 'from_hub')", name=op.f("ck_settlement_payments_direction")
        ),
        sa.CheckConstraint("amount_micro > 0", name=op.f("ck_settlement_payments_amount")),
        sa.ForeignKeyConstraint(
            ["batch_id", "merchant_id"],
            ["settlement_instructions.batch_id", "settlement_instructions.merchant_id"],
            name="fk_settlement_payments_instruction",
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name=op.f("fk_settlement_payments_entry_id_entries")
        ),
        sa.PrimaryKeyConstraint("batch_id", "merchant_id", name=op.f("pk_settlement_payments")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_settlement_payments_entry_id")),
    )
    op.execute(FINANCE_RULES_V1)


def downgrade() -> None:
    op.execute(DROP_FINANCE_RULES_V1)
    op.drop_table("settlement_payments")
    op.drop_index("ix_settlement_batch_entries_batch", table_name="settlement_batch_entries")
    op.drop_table("settlement_batch_entries")
    op.drop_table("chain_entries")
    op.drop_table("settlement_statements")
    op.drop_table("settlement_positions")
    op.drop_table("settlement_obligations")
    op.drop_table("settlement_instructions")
    op.drop_table("settlement_batches")
    op.drop_table("chain_state")
    op.drop_table("chain_blocks")
