"""The hub's tables, declared once with SQLAlchemy Core.

Alembic migrations produce exactly these tables (a test compares them); the database-side
rules that SQLAlchemy cannot express (zero-sum trigger, append-only guards, the balance
roll-up) live in the migrations and in :mod:`exchange.db.ddl`.

Amounts are integers: points in the currency's smallest unit, settlement amounts in
micro-units (six decimal places). Rates are exact ``NUMERIC``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

NOW = text("now()")


def _ts(name: str, *, nullable: bool = False, default: bool = False) -> Column[object]:
    return Column(
        name,
        DateTime(timezone=True),
        nullable=nullable,
        server_default=NOW if default else None,
    )


merchants = Table(
    "merchants",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'active'")),
    Column("exposure_limit_micro", BigInteger, nullable=True),
    _ts("created_at", default=True),
    CheckConstraint("status IN ('active', 'suspended')", name="status"),
    CheckConstraint("exposure_limit_micro IS NULL OR exposure_limit_micro >= 0", name="exposure"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("role", Text, nullable=False),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=True),
    Column("prefix", Text, nullable=False),
    Column("last4", Text, nullable=False),
    Column("key_hash", LargeBinary, nullable=False, unique=True),
    Column("label", Text, nullable=False, server_default=text("''")),
    _ts("created_at", default=True),
    _ts("expires_at", nullable=True),
    _ts("revoked_at", nullable=True),
    _ts("last_used_at", nullable=True),
    CheckConstraint("role IN ('admin', 'finance', 'merchant')", name="role"),
    CheckConstraint("(role = 'merchant') = (merchant_id IS NOT NULL)", name="merchant_role"),
)
Index("ix_api_keys_merchant", api_keys.c.merchant_id)

members = Table(
    "members",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    _ts("created_at", default=True),
)

member_links = Table(
    "member_links",
    metadata,
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=False),
    Column("customer_ref", Text, nullable=False),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False),
    _ts("created_at", default=True),
    PrimaryKeyConstraint("merchant_id", "customer_ref"),
    UniqueConstraint("merchant_id", "member_id", name="uq_member_links_merchant_member"),
)
Index("ix_member_links_member", member_links.c.member_id)

currencies = Table(
    "currencies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("issuer_id", BigInteger, ForeignKey("merchants.id"), nullable=True),
    Column("scale", SmallInteger, nullable=False),
    Column("expiry_kind", Text, nullable=False, server_default=text("'never'")),
    Column("expiry_param", Integer, nullable=True),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _ts("created_at", default=True),
    CheckConstraint("kind IN ('points', 'settlement')", name="kind"),
    CheckConstraint("(kind = 'points') = (issuer_id IS NOT NULL)", name="issuer"),
    CheckConstraint("scale BETWEEN 0 AND 6", name="scale"),
    CheckConstraint("code ~ '^[A-Z][A-Z0-9_]{1,15}$'", name="code"),
    CheckConstraint(
        "(expiry_kind = 'never' AND expiry_param IS NULL)"
        " OR (expiry_kind IN ('days', 'months_end') AND expiry_param > 0)",
        name="expiry",
    ),
)
Index("ix_currencies_issuer", currencies.c.issuer_id)

rates = Table(
    "rates",
    metadata,
    Column("currency_id", Integer, ForeignKey("currencies.id"), nullable=False),
    Column("effective_at", DateTime(timezone=True), nullable=False),
    Column("rate", Numeric, nullable=False),
    _ts("recorded_at", default=True),
    Column("recorded_by", Text, nullable=False),
    PrimaryKeyConstraint("currency_id", "effective_at"),
    CheckConstraint("rate > 0", name="positive"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("asset_id", Integer, ForeignKey("currencies.id"), nullable=False),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=True),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=True),
    Column("stripes", SmallInteger, nullable=False),
    _ts("created_at", default=True),
    CheckConstraint(
        "kind IN ('wallet', 'outstanding', 'settlement', 'hub_fees', 'hub_clearing')", name="kind"
    ),
    CheckConstraint("(kind = 'wallet') = (member_id IS NOT NULL)", name="member"),
    CheckConstraint(
        "(kind IN ('outstanding', 'settlement')) = (merchant_id IS NOT NULL)", name="merchant"
    ),
    CheckConstraint(
        "stripes BETWEEN 1 AND 256 AND (kind <> 'wallet' OR stripes = 1)", name="stripes"
    ),
    UniqueConstraint(
        "kind",
        "asset_id",
        "member_id",
        "merchant_id",
        name="uq_accounts_identity",
        postgresql_nulls_not_distinct=True,
    ),
)
Index("ix_accounts_member", accounts.c.member_id)

BALANCES_FILLFACTOR = 50
"""Percent of each page of ``balances`` that inserts fill (migration ``0009``): every
posting updates a balance row, and the room left lets the new version stay on its page
(a heap-only update, with no new index entry)."""

balances = Table(
    "balances",
    metadata,
    Column("account_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("stripe", SmallInteger, nullable=False),
    Column("amount", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("account_id", "stripe"),
    postgresql_with={"fillfactor": BALANCES_FILLFACTOR},
)

quotes = Table(
    "quotes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False),
    Column("from_currency_id", Integer, ForeignKey("currencies.id"), nullable=False),
    Column("to_currency_id", Integer, ForeignKey("currencies.id"), nullable=False),
    Column("from_amount", BigInteger, nullable=False),
    Column("to_amount", BigInteger, nullable=False),
    Column("from_rate", Numeric, nullable=False),
    Column("to_rate", Numeric, nullable=False),
    Column("fee_bp", Integer, nullable=False),
    Column("value_micro", BigInteger, nullable=False),
    Column("to_value_micro", BigInteger, nullable=False),
    Column("fee_micro", BigInteger, nullable=False),
    _ts("created_at", default=True),
    _ts("expires_at"),
    CheckConstraint("from_amount > 0 AND to_amount > 0", name="amounts"),
    CheckConstraint("fee_micro >= 0 AND to_value_micro + fee_micro = value_micro", name="fee"),
    CheckConstraint("from_currency_id <> to_currency_id", name="distinct"),
)
Index("ix_quotes_member", quotes.c.member_id)

entries = Table(
    "entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("initiator", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    # merchant_id: checked per statement (EX008, migration 0006).
    Column("merchant_id", BigInteger, nullable=True),
    # member_id: checked per statement (EX008, migration 0008).
    Column("member_id", BigInteger, nullable=True),
    Column("reverses_entry_id", BigInteger, ForeignKey("entries.id"), nullable=True),
    Column("quote_id", BigInteger, ForeignKey("quotes.id"), nullable=True),
    Column("rates", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    _ts("effective_at"),
    Column(
        "recorded_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("clock_timestamp()"),
    ),
    CheckConstraint(
        "kind IN ('earn', 'redeem', 'convert', 'expire', 'reverse', 'adjust', 'settle')",
        name="kind",
    ),
    CheckConstraint("(kind = 'reverse') = (reverses_entry_id IS NOT NULL)", name="reverses"),
    UniqueConstraint("initiator", "idempotency_key", name="uq_entries_idempotency"),
)
Index("ix_entries_member", entries.c.member_id, entries.c.id)
Index("ix_entries_merchant", entries.c.merchant_id, entries.c.id)
Index(
    "ix_entries_reverses",
    entries.c.reverses_entry_id,
    postgresql_where=entries.c.reverses_entry_id.isnot(None),
)
Index(
    "uq_entries_quote",
    entries.c.quote_id,
    unique=True,
    postgresql_where=entries.c.quote_id.isnot(None),
)

postings = Table(
    "postings",
    metadata,
    # entry_id, account_id and asset_id: checked per statement (EX008, migration 0006).
    Column("entry_id", BigInteger, nullable=False),
    Column("seq", SmallInteger, nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("asset_id", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    PrimaryKeyConstraint("entry_id", "seq"),
    CheckConstraint("amount <> 0", name="nonzero"),
)
Index("ix_postings_account", postings.c.account_id, postings.c.entry_id)

requests = Table(
    "requests",
    metadata,
    Column("initiator", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("refusal_code", Text, nullable=True),
    Column("refusal_field", Text, nullable=True),
    Column("refusal_message", Text, nullable=True),
    _ts("created_at", default=True),
    PrimaryKeyConstraint("initiator", "idempotency_key"),
)

lots = Table(
    "lots",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    # wallet_id and entry_id: checked per statement (EX008, migration 0006).
    Column("wallet_id", BigInteger, nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("original", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    _ts("earned_at"),
    _ts("expires_at", nullable=True),
    CheckConstraint("original > 0", name="original"),
    CheckConstraint("remaining >= 0 AND remaining <= original", name="remaining"),
)
Index(
    "ix_lots_open",
    lots.c.wallet_id,
    lots.c.expires_at,
    lots.c.id,
    postgresql_where=lots.c.remaining > 0,
)
Index(
    "ix_lots_expiring",
    lots.c.expires_at,
    postgresql_where=(lots.c.remaining > 0) & lots.c.expires_at.isnot(None),
)
Index("ix_lots_entry", lots.c.entry_id)

lot_moves = Table(
    "lot_moves",
    metadata,
    # entry_id and lot_id: checked per statement (EX008, migration 0006).
    Column("entry_id", BigInteger, nullable=False),
    Column("lot_id", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    PrimaryKeyConstraint("entry_id", "lot_id"),
    CheckConstraint("amount <> 0", name="nonzero"),
)
Index("ix_lot_moves_lot", lot_moves.c.lot_id)

hub_settings = Table(
    "hub_settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    _ts("updated_at", default=True),
    Column("updated_by", Text, nullable=False),
)


# --- Earning rules and member links -----------------------------------------------------------
#
# Earning rules belong to a point currency and are written by its issuer; every merchant that
# awards the currency by rules uses them. ``params`` holds the rule's parameters with points
# as integers of the currency's smallest unit and exact decimals (unit amounts, factors) as
# strings.
#
# Caps are enforced with ``earn_tallies``: one row per member, currency, period kind and
# local period start, holding the points awarded by rules in that period. A rule-based earn
# locks its member's day and month rows (``FOR UPDATE``, day before month) before it reads
# them, evaluates the rules and adds what it awarded in the same transaction as the ledger
# entry, so concurrent earns of one member queue on those rows and no cap is ever exceeded.
#
# ``rule_awards`` keeps every rule-based decision under its idempotency key, including the
# ones that awarded nothing (no entry), so a retry replays the same answer.
#
# ``link_codes`` are a member's one-time codes (stored hashed) that let another merchant
# link its own customer reference to the same member.

earning_rules = Table(
    "earning_rules",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("currency_id", Integer, ForeignKey("currencies.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _ts("created_at", default=True),
    Column("created_by", Text, nullable=False),
    _ts("updated_at", nullable=True),
    Column("updated_by", Text, nullable=True),
    CheckConstraint("kind IN ('spend', 'action', 'multiplier', 'cap')", name="kind"),
    CheckConstraint("jsonb_typeof(params) = 'object'", name="params"),
)
Index("ix_earning_rules_currency", earning_rules.c.currency_id, earning_rules.c.id)

earn_tallies = Table(
    "earn_tallies",
    metadata,
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False),
    Column("currency_id", Integer, ForeignKey("currencies.id"), nullable=False),
    Column("period", Text, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("points", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("member_id", "currency_id", "period", "period_start"),
    CheckConstraint("period IN ('day', 'month')", name="period"),
    CheckConstraint("points >= 0", name="points"),
)

rule_awards = Table(
    "rule_awards",
    metadata,
    Column("initiator", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=False),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False),
    Column("currency_id", Integer, ForeignKey("currencies.id"), nullable=False),
    Column("amount_spent", Numeric, nullable=True),
    Column("order_ref", Text, nullable=True),
    Column("action", Text, nullable=True),
    Column("points", BigInteger, nullable=False),
    Column("applied", JSONB, nullable=False),
    Column("capped_by", BigInteger, ForeignKey("earning_rules.id"), nullable=True),
    Column("entry_id", BigInteger, ForeignKey("entries.id"), nullable=True),
    _ts("created_at", default=True),
    PrimaryKeyConstraint("initiator", "idempotency_key"),
    ForeignKeyConstraint(
        ["initiator", "idempotency_key"],
        ["requests.initiator", "requests.idempotency_key"],
        name="fk_rule_awards_request",
    ),
    CheckConstraint("kind IN ('purchase', 'action')", name="kind"),
    CheckConstraint("(points > 0) = (entry_id IS NOT NULL) AND points >= 0", name="entry"),
    CheckConstraint(
        "(kind = 'purchase') = (amount_spent IS NOT NULL)"
        " AND (kind = 'action') = (action IS NOT NULL)",
        name="subject",
    ),
)
Index("ix_rule_awards_entry", rule_awards.c.entry_id)

link_codes = Table(
    "link_codes",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("code_hash", LargeBinary, nullable=False, unique=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False),
    _ts("created_at", default=True),
    _ts("expires_at"),
    _ts("used_at", nullable=True),
    Column("used_by_merchant_id", BigInteger, ForeignKey("merchants.id"), nullable=True),
    CheckConstraint("(used_at IS NULL) = (used_by_merchant_id IS NULL)", name="used"),
)
Index("ix_link_codes_member", link_codes.c.member_id)


# The finance tables (settlement batches, hash chain) are declared in their own module on
# this metadata; importing it here makes every user of the metadata see them.
from exchange.db import finance_tables as finance_tables  # noqa: E402
