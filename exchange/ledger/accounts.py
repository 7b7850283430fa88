"""Accounts of the chart: wallets, issuer outstanding, merchant settlement, hub accounts.

Wallets hold one balance row and are locked by the operations that check them. The other
accounts are touched by most entries, so they hold ``stripes`` balance rows and are never
locked as a whole: their balance is the sum of the stripes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from exchange.domain.expiry import ExpiryPolicy
from exchange.domain.money import value_micro
from exchange.ledger.engine import Conn

WALLET = "wallet"
OUTSTANDING = "outstanding"
SETTLEMENT = "settlement"
HUB_FEES = "hub_fees"
HUB_CLEARING = "hub_clearing"


@dataclass(frozen=True)
class Currency:
    id: int
    code: str
    name: str
    issuer_id: int
    issuer_code: str
    scale: int
    expiry: ExpiryPolicy
    active: bool
    rate: Decimal | None
    """The rate in force now (``None`` only before the first rate takes effect)."""
    outstanding_id: int
    issuer_settlement_id: int
    issuer_active: bool
    issuer_exposure_limit_micro: int | None

    def value(self, n: int, rate: Decimal | None = None) -> int:
        r = self.rate if rate is None else rate
        assert r is not None
        return value_micro(n, r, self.scale)


@dataclass(frozen=True)
class SettlementAsset:
    id: int
    code: str
    fees_id: int
    clearing_id: int


_CURRENCY_SQL = """
SELECT c.id, c.code, c.name, c.issuer_id, m.code, c.scale, c.expiry_kind, c.expiry_param,
       c.active,
       (SELECT r.rate FROM rates r WHERE r.currency_id = c.id AND r.effective_at <= %s
         ORDER BY r.effective_at DESC LIMIT 1),
       o.id, s.id, m.status = 'active', m.exposure_limit_micro
  FROM currencies c
  JOIN merchants m ON m.id = c.issuer_id
  JOIN accounts o ON o.kind = 'outstanding' AND o.asset_id = c.id AND o.merchant_id = c.issuer_id
  JOIN accounts s ON s.kind = 'settlement' AND s.merchant_id = c.issuer_id
 WHERE c.kind = 'points' AND {where}
"""


def _currency(row: Any) -> Currency:
    return Currency(
        id=int(row[0]),
        code=str(row[1]),
        name=str(row[2]),
        issuer_id=int(row[3]),
        issuer_code=str(row[4]),
        scale=int(row[5]),
        expiry=ExpiryPolicy(str(row[6]), None if row[7] is None else int(row[7])),
        active=bool(row[8]),
        rate=row[9] if isinstance(row[9], Decimal) else None,
        outstanding_id=int(row[10]),
        issuer_settlement_id=int(row[11]),
        issuer_active=bool(row[12]),
        issuer_exposure_limit_micro=None if row[13] is None else int(row[13]),
    )


def currency_by_code_query(code: str, at: datetime) -> tuple[str, tuple[Any, ...]]:
    """The query :func:`currency_by_code` runs, to run it inside another statement."""
    return _CURRENCY_SQL.format(where="c.code = %s"), (at, code)


def currency_from_row(row: Sequence[Any] | None) -> Currency | None:
    """The currency of a row of :func:`currency_by_code_query` (``None`` for no row)."""
    return None if row is None else _currency(row)


async def currency_by_code(conn: Conn, code: str, at: datetime) -> Currency | None:
    cur = await conn.execute(_CURRENCY_SQL.format(where="c.code = %s"), (at, code))
    row = await cur.fetchone()
    return None if row is None else _currency(row)


async def currencies_by_code(conn: Conn, codes: Sequence[str], at: datetime) -> dict[str, Currency]:
    """The point currencies among ``codes`` (one statement), by code; unknown ones are absent."""
    cur = await conn.execute(_CURRENCY_SQL.format(where="c.code = ANY(%s)"), (at, list(codes)))
    return {c.code: c for c in map(_currency, await cur.fetchall())}


async def currency_by_id(conn: Conn, currency_id: int, at: datetime) -> Currency | None:
    cur = await conn.execute(_CURRENCY_SQL.format(where="c.id = %s"), (at, currency_id))
    row = await cur.fetchone()
    return None if row is None else _currency(row)


async def rate_at(conn: Conn, currency_id: int, at: datetime) -> Decimal | None:
    cur = await conn.execute(
        "SELECT rate FROM rates WHERE currency_id = %s AND effective_at <= %s"
        " ORDER BY effective_at DESC LIMIT 1",
        (currency_id, at),
    )
    row = await cur.fetchone()
    return None if row is None else Decimal(row[0])


async def settlement_asset(conn: Conn) -> SettlementAsset:
    cur = await conn.execute(
        "SELECT c.id, c.code, f.id, k.id FROM currencies c"
        "  JOIN accounts f ON f.kind = 'hub_fees' AND f.asset_id = c.id"
        "  JOIN accounts k ON k.kind = 'hub_clearing' AND k.asset_id = c.id"
        " WHERE c.kind = 'settlement'"
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError("the hub is not bootstrapped: no settlement currency")
    return SettlementAsset(int(row[0]), str(row[1]), int(row[2]), int(row[3]))


async def settlement_account(conn: Conn, merchant_id: int) -> int:
    cur = await conn.execute(
        "SELECT id FROM accounts WHERE kind = 'settlement' AND merchant_id = %s", (merchant_id,)
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"merchant {merchant_id} has no settlement account")
    return int(row[0])


async def wallet(conn: Conn, member_id: int, currency_id: int, *, create: bool) -> int | None:
    """The id of member's wallet in a currency, created on first use when ``create``."""
    if create:
        cur = await conn.execute(
            "INSERT INTO accounts (kind, asset_id, member_id, stripes)"
            " VALUES ('wallet', %s, %s, 1) ON CONFLICT DO NOTHING RETURNING id",
            (currency_id, member_id),
        )
        row = await cur.fetchone()
        if row is not None:
            return int(row[0])
    cur = await conn.execute(
        "SELECT id FROM accounts WHERE kind = 'wallet' AND asset_id = %s AND member_id = %s",
        (currency_id, member_id),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def create_account(
    conn: Conn,
    kind: str,
    asset_id: int,
    *,
    stripes: int,
    merchant_id: int | None = None,
) -> int:
    cur = await conn.execute(
        "INSERT INTO accounts (kind, asset_id, merchant_id, stripes) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING id",
        (kind, asset_id, merchant_id, stripes),
    )
    row = await cur.fetchone()
    if row is not None:
        return int(row[0])
    cur = await conn.execute(
        "SELECT id FROM accounts WHERE kind = %s AND asset_id = %s"
        " AND merchant_id IS NOT DISTINCT FROM %s AND member_id IS NULL",
        (kind, asset_id, merchant_id),
    )
    found = await cur.fetchone()
    assert found is not None
    return int(found[0])


async def issuer_liability_micro(conn: Conn, issuer_id: int, at: datetime) -> int:
    """The value now of every point the issuer has in circulation (its outstanding)."""
    cur = await conn.execute(
        "SELECT c.id, c.scale,"
        "       (SELECT r.rate FROM rates r WHERE r.currency_id = c.id AND r.effective_at <= %s"
        "         ORDER BY r.effective_at DESC LIMIT 1),"
        "       (SELECT coalesce(sum(b.amount), 0) FROM balances b WHERE b.account_id = o.id)"
        "  FROM currencies c JOIN accounts o ON o.kind = 'outstanding' AND o.asset_id = c.id"
        " WHERE c.issuer_id = %s",
        (at, issuer_id),
    )
    total = 0
    for _cid, scale, rate, outstanding in await cur.fetchall():
        if rate is not None and outstanding:
            total += value_micro(-int(outstanding), Decimal(rate), int(scale))
    return total
