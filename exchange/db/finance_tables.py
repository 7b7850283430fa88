"""Finance tables: the hash chain over the journal and the settlement batches.

Declared on :data:`exchange.db.tables.metadata` (imported by ``exchange.db`` so that the
metadata always holds them). Every table here is append-only once written: the database
refuses ``UPDATE``, ``DELETE`` and ``TRUNCATE`` (SQLSTATE ``EX004``), and the rows that make
up a batch can only be written by the transaction that closes it (``EX006``); the rules are
in :mod:`exchange.db.finance_ddl`. The one mutable row is ``chain_state``, the sealer's
bookmark, which only the sealer writes and ``exchange verify`` cross-checks.

Settlement amounts are integers of micro-units (six decimal places), as in the ledger. A
*party* is a merchant code or one of the hub's accounts, ``hub:fees`` and ``hub:clearing``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from exchange.db.tables import metadata

NOW = text("now()")

# --- Tamper evidence: a hash chain of sealed blocks ---------------------------------------------

chain_blocks = Table(
    "chain_blocks",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("entry_count", Integer, nullable=False),
    Column("sealed_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("sealed_by", Text, nullable=False),
    CheckConstraint("id > 0", name="id"),
    CheckConstraint("entry_count > 0", name="entry_count"),
    CheckConstraint("length(prev_hash) = 32 AND length(hash) = 32", name="hash_length"),
)

chain_entries = Table(
    "chain_entries",
    metadata,
    # entry_id and block_id: checked per statement (EX008, EX006; migration 0007).
    Column("entry_id", BigInteger, primary_key=True),
    Column("block_id", BigInteger, nullable=False),
    Column("ord", Integer, nullable=False),
    Column("digest", LargeBinary, nullable=False),
    UniqueConstraint("block_id", "ord", name="uq_chain_entries_block_ord"),
    CheckConstraint("ord >= 0", name="ord"),
    CheckConstraint("length(digest) = 32", name="digest_length"),
)

chain_state = Table(
    "chain_state",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("frontier", BigInteger, nullable=False, server_default=text("0")),
    Column("barrier_hi", BigInteger, nullable=False, server_default=text("0")),
    Column(
        "barrier_writers",
        ARRAY(Text),
        nullable=False,
        server_default=text("'{}'::text[]"),
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("id = 1", name="singleton"),
    CheckConstraint("frontier >= 0 AND barrier_hi >= 0", name="ids"),
)

# --- Settlement batches -------------------------------------------------------------------------

settlement_batches = Table(
    "settlement_batches",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("cutoff", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("closed_by", Text, nullable=False),
    Column("request_key", Text, nullable=True, unique=True),
    Column("currency", Text, nullable=False),
    Column("minor_unit", SmallInteger, nullable=False),
    Column("chain_block", BigInteger, ForeignKey("chain_blocks.id"), nullable=True),
    Column("chain_head", LargeBinary, nullable=False),
    Column("scan_from_block", BigInteger, nullable=False),
    Column("sequence_at_close", BigInteger, nullable=False),
    Column("entry_count", Integer, nullable=False),
    Column("gross_micro", BigInteger, nullable=False),
    Column("net_micro", BigInteger, nullable=False),
    Column("efficiency", Numeric, nullable=False),
    Column("hub_fees_micro", BigInteger, nullable=False),
    Column("hub_rounding_micro", BigInteger, nullable=False),
    CheckConstraint("id > 0", name="id"),
    CheckConstraint("minor_unit BETWEEN 0 AND 6", name="minor_unit"),
    CheckConstraint("entry_count >= 0 AND gross_micro >= 0 AND net_micro >= 0", name="totals"),
    CheckConstraint("efficiency >= 0 AND efficiency <= 1", name="efficiency"),
)

settlement_batch_entries = Table(
    "settlement_batch_entries",
    metadata,
    Column("entry_id", BigInteger, ForeignKey("entries.id"), primary_key=True),
    Column("batch_id", BigInteger, ForeignKey("settlement_batches.id"), nullable=False),
)
Index(
    "ix_settlement_batch_entries_batch",
    settlement_batch_entries.c.batch_id,
    settlement_batch_entries.c.entry_id,
)

settlement_obligations = Table(
    "settlement_obligations",
    metadata,
    Column("batch_id", BigInteger, ForeignKey("settlement_batches.id"), nullable=False),
    Column("debtor", Text, nullable=False),
    Column("creditor", Text, nullable=False),
    Column("amount_micro", BigInteger, nullable=False),
    PrimaryKeyConstraint("batch_id", "debtor", "creditor"),
    CheckConstraint("amount_micro > 0", name="amount"),
)

settlement_positions = Table(
    "settlement_positions",
    metadata,
    Column("batch_id", BigInteger, ForeignKey("settlement_batches.id"), nullable=False),
    Column("party", Text, nullable=False),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=True),
    Column("position_micro", BigInteger, nullable=False),
    Column("carried_in_micro", BigInteger, nullable=False),
    Column("carry_out_micro", BigInteger, nullable=False),
    PrimaryKeyConstraint("batch_id", "party"),
    CheckConstraint(
        "(merchant_id IS NULL) = (party IN ('hub:fees', 'hub:clearing'))", name="party"
    ),
    CheckConstraint(
        "merchant_id IS NOT NULL OR (carried_in_micro = 0 AND carry_out_micro = 0)",
        name="hub_carry",
    ),
)

settlement_instructions = Table(
    "settlement_instructions",
    metadata,
    Column("batch_id", BigInteger, ForeignKey("settlement_batches.id"), nullable=False),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=False),
    Column("direction", Text, nullable=False),
    Column("amount_micro", BigInteger, nullable=False),
    PrimaryKeyConstraint("batch_id", "merchant_id"),
    CheckConstraint("direction IN ('to_hub', 'from_hub')", name="direction"),
    CheckConstraint("amount_micro > 0", name="amount"),
)

settlement_statements = Table(
    "settlement_statements",
    metadata,
    Column("batch_id", BigInteger, ForeignKey("settlement_batches.id"), nullable=False),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=False),
    Column("opening_micro", BigInteger, nullable=False),
    Column("closing_micro", BigInteger, nullable=False),
    Column("netted_micro", BigInteger, nullable=False),
    Column("payments_micro", BigInteger, nullable=False),
    Column("line_count", Integer, nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("payload", Text, nullable=False),
    Column("signature", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    PrimaryKeyConstraint("batch_id", "merchant_id"),
    CheckConstraint("closing_micro = opening_micro + netted_micro + payments_micro", name="ties"),
    CheckConstraint("line_count >= 0", name="line_count"),
)

settlement_payments = Table(
    "settlement_payments",
    metadata,
    Column("batch_id", BigInteger, nullable=False),
    Column("merchant_id", BigInteger, nullable=False),
    Column("entry_id", BigInteger, ForeignKey("entries.id"), nullable=False, unique=True),
    Column("direction", Text, nullable=False),
    Column("amount_micro", BigInteger, nullable=False),
    Column("external_ref", Text, nullable=False),
    Column("confirmed_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("confirmed_by", Text, nullable=False),
    PrimaryKeyConstraint("batch_id", "merchant_id"),
    ForeignKeyConstraint(
        ["batch_id", "merchant_id"],
        ["settlement_instructions.batch_id", "settlement_instructions.merchant_id"],
        name="fk_settlement_payments_instruction",
    ),
    CheckConstraint("direction IN ('to_hub', 'from_hub')", name="direction"),
    CheckConstraint("amount_micro > 0", name="amount"),
)
