"""Programme measures and the trial balance, computed from the ledger's postings.

There is no second bookkeeping: every figure is a sum over postings, so it can only agree
with the balances. Points are in the currency's smallest unit.

**Flows** of a point currency ``X`` in a period ``[start, end)`` (by the entries' effective
time) come from the postings on ``outstanding(issuer, X)``: an entry that puts points into
circulation debits it, one that takes them out credits it.

| measure | entries | sign on outstanding |
|---|---|---|
| issued | earn | debit |
| redeemed at the issuer / elsewhere | redeem at the issuer / at another merchant | credit |
| converted in / out | convert into / out of ``X`` | debit / credit |
| expired (breakage) | expire | credit |
| reversed (issued / redeemed) | reversal taking points back / giving them back | credit / debit |
| adjusted (in / out) | adjust | debit / credit |

So ``outstanding(end) - outstanding(start) = issued + converted in + reversed redeemed +
adjusted in - redeemed - converted out - expired - reversed issued - adjusted out``.

**Per merchant** the flows are the entries the merchant made (its earns, the redemptions it
accepted, its adjustments, expiries of its currency); conversions (made by members through
the hub) and their reversals count for the issuer of ``X``. Points outstanding and their
liability belong to the issuer: a merchant sees them for its own currencies only.

**Rates** (``None`` when the denominator is 0), six places, half-even:

- redemption rate = redeemed ÷ issued;
- breakage rate = expired ÷ issued;
- active-use rate = members who redeemed in the period ÷ members who held points in it
  (a positive balance at its start, or points credited during it); per merchant, both
  counts are of the merchant's own customers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from exchange.domain.money import value_micro
from exchange.ledger.engine import Conn

RATIO_PLACES = 6


def ratio(numerator: int, denominator: int) -> Decimal | None:
    """``numerator / denominator`` to six places, half-even; ``None`` for a zero denominator."""
    if denominator == 0:
        return None
    quantum = Decimal(1).scaleb(-RATIO_PLACES)
    return (Decimal(numerator) / Decimal(denominator)).quantize(quantum, ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Flows:
    issued: int = 0
    redeemed_at_issuer: int = 0
    redeemed_elsewhere: int = 0
    converted_in: int = 0
    converted_out: int = 0
    expired: int = 0
    reversed_issued: int = 0
    reversed_redeemed: int = 0
    adjusted_in: int = 0
    adjusted_out: int = 0

    @property
    def redeemed(self) -> int:
        return self.redeemed_at_issuer + self.redeemed_elsewhere

    @property
    def reversed(self) -> int:
        return self.reversed_issued + self.reversed_redeemed

    @property
    def net_change(self) -> int:
        """The change of the points in circulation over the period."""
        return (
            self.issued
            + self.converted_in
            + self.reversed_redeemed
            + self.adjusted_in
            - self.redeemed
            - self.converted_out
            - self.expired
            - self.reversed_issued
            - self.adjusted_out
        )


def flows_from(rows: list[tuple[str, bool, int, int]]) -> Flows:
    """Flows from ``(kind, at issuer, credits, debits)`` of the outstanding account.

    ``credits`` is the sum of the positive postings (points leaving circulation),
    ``debits`` the magnitude of the negative ones (points entering it).
    """
    f: dict[str, int] = {}

    def add(name: str, amount: int) -> None:
        f[name] = f.get(name, 0) + amount

    for kind, at_issuer, credits, debits in rows:
        if kind == "earn":
            add("issued", debits)
        elif kind == "redeem":
            add("redeemed_at_issuer" if at_issuer else "redeemed_elsewhere", credits)
        elif kind == "convert":
            add("converted_out", credits)
            add("converted_in", debits)
        elif kind == "expire":
            add("expired", credits)
        elif kind == "reverse":
            add("reversed_issued", credits)
            add("reversed_redeemed", debits)
        elif kind == "adjust":
            add("adjusted_out", credits)
            add("adjusted_in", debits)
    return Flows(**f)


@dataclass(frozen=True)
class CurrencyMetrics:
    currency: str
    scale: int
    issuer: str
    merchant: str | None
    """The merchant the figures are for; ``None`` for the whole coalition."""
    start: datetime
    end: datetime
    flows: Flows
    outstanding: int | None
    """Points in circulation at ``end`` (issuer's or coalition view only)."""
    rate: Decimal | None
    """The rate in force now."""
    liability_micro: int | None
    """``value(outstanding)`` at the current rate."""
    members_redeemed: int
    members_holding: int

    @property
    def redemption_rate(self) -> Decimal | None:
        return ratio(self.flows.redeemed, self.flows.issued)

    @property
    def breakage_rate(self) -> Decimal | None:
        return ratio(self.flows.expired, self.flows.issued)

    @property
    def active_use_rate(self) -> Decimal | None:
        return ratio(self.members_redeemed, self.members_holding)


_CURRENCIES = """
SELECT c.id, c.code, c.scale, c.issuer_id, m.code, o.id,
       (SELECT r.rate FROM rates r WHERE r.currency_id = c.id AND r.effective_at <= now()
         ORDER BY r.effective_at DESC LIMIT 1)
  FROM currencies c JOIN merchants m ON m.id = c.issuer_id
  JOIN accounts o ON o.kind = 'outstanding' AND o.asset_id = c.id AND o.merchant_id = c.issuer_id
 WHERE c.kind = 'points' AND (%(code)s::text IS NULL OR c.code = %(code)s)
 ORDER BY c.code
"""

_FLOWS = """
SELECT e.kind, coalesce(e.merchant_id, %(issuer)s) = %(issuer)s,
       coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0),
       coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0)
  FROM postings p JOIN entries e ON e.id = p.entry_id
 WHERE p.account_id = %(outstanding)s
   AND e.effective_at >= %(start)s AND e.effective_at < %(end)s
   AND (%(merchant)s::bigint IS NULL OR coalesce(e.merchant_id, %(issuer)s) = %(merchant)s)
 GROUP BY 1, 2
"""

_OUTSTANDING = """
SELECT coalesce(-sum(p.amount), 0) FROM postings p JOIN entries e ON e.id = p.entry_id
 WHERE p.account_id = %(outstanding)s AND e.effective_at < %(end)s
"""

_CUSTOMER = """
(%(merchant)s::bigint IS NULL OR EXISTS (SELECT 1 FROM member_links l
   WHERE l.member_id = {member} AND l.merchant_id = %(merchant)s))
"""

_REDEEMERS = f"""
SELECT count(DISTINCT e.member_id) FROM postings p JOIN entries e ON e.id = p.entry_id
 WHERE p.account_id = %(outstanding)s AND e.kind = 'redeem'
   AND e.effective_at >= %(start)s AND e.effective_at < %(end)s
   AND (%(merchant)s::bigint IS NULL OR e.merchant_id = %(merchant)s)
   AND {_CUSTOMER.format(member="e.member_id")}
"""

_HOLDERS = f"""
SELECT count(*) FROM (
    SELECT w.member_id FROM accounts w
      JOIN postings p ON p.account_id = w.id JOIN entries e ON e.id = p.entry_id
     WHERE w.kind = 'wallet' AND w.asset_id = %(asset)s AND e.effective_at < %(end)s
     GROUP BY w.member_id
    HAVING coalesce(sum(p.amount) FILTER (WHERE e.effective_at < %(start)s), 0) > 0
        OR bool_or(p.amount > 0 AND e.effective_at >= %(start)s)
) h WHERE {_CUSTOMER.format(member="h.member_id")}
"""


async def _scalar(conn: Conn, query: str, params: dict[str, Any]) -> int:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


async def programme_metrics(
    conn: Conn,
    *,
    start: datetime,
    end: datetime,
    currency: str | None = None,
    merchant_id: int | None = None,
) -> list[CurrencyMetrics]:
    """The measures of each point currency (or just ``currency``) over ``[start, end)``.

    ``merchant_id`` restricts them to one merchant; ``None`` gives the whole coalition.
    """
    merchant_code: str | None = None
    if merchant_id is not None:
        cur = await conn.execute("SELECT code FROM merchants WHERE id = %s", (merchant_id,))
        row = await cur.fetchone()
        if row is None:
            return []
        merchant_code = str(row[0])
    cur = await conn.execute(_CURRENCIES, {"code": currency})
    out: list[CurrencyMetrics] = []
    for asset, code, scale, issuer, issuer_code, outstanding_id, rate in await cur.fetchall():
        params = {
            "asset": asset,
            "issuer": issuer,
            "outstanding": outstanding_id,
            "start": start,
            "end": end,
            "merchant": merchant_id,
        }
        flow_cur = await conn.execute(_FLOWS, params)
        flows = flows_from(
            [(str(k), bool(i), int(c), int(d)) for k, i, c, d in await flow_cur.fetchall()]
        )
        sees_liability = merchant_id is None or merchant_id == issuer
        outstanding = await _scalar(conn, _OUTSTANDING, params) if sees_liability else None
        current = None if rate is None else Decimal(rate)
        liability = (
            None
            if outstanding is None or current is None
            else value_micro(outstanding, current, int(scale))
        )
        out.append(
            CurrencyMetrics(
                currency=str(code),
                scale=int(scale),
                issuer=str(issuer_code),
                merchant=merchant_code,
                start=start,
                end=end,
                flows=flows,
                outstanding=outstanding,
                rate=current,
                liability_micro=liability,
                members_redeemed=await _scalar(conn, _REDEEMERS, params),
                members_holding=await _scalar(conn, _HOLDERS, params),
            )
        )
    return out


# --- trial balance ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassTotal:
    account_class: str
    accounts: int
    total: int


@dataclass(frozen=True)
class AssetBalance:
    asset: str
    kind: str
    """``points`` or ``settlement``."""
    scale: int
    classes: list[ClassTotal]

    @property
    def total(self) -> int:
        """The sum of every account of the asset: 0 in a sound ledger."""
        return sum(c.total for c in self.classes)

    def of(self, account_class: str) -> int:
        return sum(c.total for c in self.classes if c.account_class == account_class)

    @property
    def balanced(self) -> bool:
        if self.kind == "points":
            return self.total == 0 and -self.of("outstanding") == self.of("wallet")
        return self.total == 0


_TRIAL = """
SELECT c.code, c.kind, c.scale, a.kind, count(DISTINCT a.id), coalesce(sum(b.amount), 0)
  FROM currencies c JOIN accounts a ON a.asset_id = c.id
  JOIN balances b ON b.account_id = a.id
 GROUP BY c.code, c.kind, c.scale, a.kind
 ORDER BY c.kind DESC, c.code, a.kind
"""


async def trial_balance(conn: Conn) -> list[AssetBalance]:
    """Every account class's total per asset, settlement currency first."""
    cur = await conn.execute(_TRIAL)
    assets: dict[str, AssetBalance] = {}
    for code, kind, scale, account_class, accounts, total in await cur.fetchall():
        asset = assets.setdefault(
            str(code), AssetBalance(str(code), str(kind), int(scale), classes=[])
        )
        asset.classes.append(ClassTotal(str(account_class), int(accounts), int(total)))
    return list(assets.values())
