"""Facts that never change once written, cached per database: the hot path skips their reads.

A currency's id, issuer, scale, expiry policy and accounts are fixed when it is
registered (only its ``active`` flag and its rates change, and those are read inside each
transaction); a merchant's settlement account and the hub's settlement asset are created
once; a member link ``(merchant, customer reference) → member`` is never updated or
deleted. Caching these per process is therefore exact, not a staleness trade-off: every
process may keep them as long as it likes. Only positive answers are cached (an unknown
currency or reference is asked again next time, so it is found as soon as it exists).

One guess rides along, kept apart from the facts: each currency as last seen, with its
changing state (rate in force, active flags, exposure limit). The express path
(:mod:`exchange.ledger.express`) builds an earn on that guess and its statement checks the
guess against the database before it writes anything; a wrong guess costs a retry on the
ordinary path, never a wrong entry.

One :class:`Facts` belongs to one database (it is looked up by the connection pool, see
:func:`facts_of`), so several databases served by one process never mix their ids.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from exchange.domain.expiry import ExpiryPolicy
from exchange.ledger.accounts import Currency, SettlementAsset, settlement_account, settlement_asset
from exchange.ledger.engine import Conn

K = TypeVar("K")
V = TypeVar("V")

MAX_LINKS = 200_000
MAX_CURRENCIES = 10_000
MAX_MERCHANTS = 100_000


class Bounded(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def forget(self, key: K) -> None:
        self._items.pop(key, None)

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)


@dataclass(frozen=True)
class CurrencyFacts:
    """The fixed part of a point currency."""

    id: int
    code: str
    name: str
    issuer_id: int
    issuer_code: str
    scale: int
    expiry: ExpiryPolicy
    outstanding_id: int
    issuer_settlement_id: int

    def with_state(
        self,
        *,
        active: bool,
        rate: Decimal | None,
        issuer_active: bool,
        exposure_limit_micro: int | None,
    ) -> Currency:
        """The full :class:`Currency` with its changing part as read in a transaction."""
        return Currency(
            id=self.id,
            code=self.code,
            name=self.name,
            issuer_id=self.issuer_id,
            issuer_code=self.issuer_code,
            scale=self.scale,
            expiry=self.expiry,
            active=active,
            rate=rate,
            outstanding_id=self.outstanding_id,
            issuer_settlement_id=self.issuer_settlement_id,
            issuer_active=issuer_active,
            issuer_exposure_limit_micro=exposure_limit_micro,
        )


_FACTS_SQL = """
SELECT c.id, c.code, c.name, c.issuer_id, m.code, c.scale, c.expiry_kind, c.expiry_param,
       o.id, s.id
  FROM currencies c
  JOIN merchants m ON m.id = c.issuer_id
  JOIN accounts o ON o.kind = 'outstanding' AND o.asset_id = c.id AND o.merchant_id = c.issuer_id
  JOIN accounts s ON s.kind = 'settlement' AND s.merchant_id = c.issuer_id
 WHERE c.kind = 'points' AND c.code = %s
"""

STATE_COLUMNS = """
c.active,
(SELECT r.rate FROM rates r WHERE r.currency_id = c.id AND r.effective_at <= %(at)s
  ORDER BY r.effective_at DESC LIMIT 1),
m.status = 'active', m.exposure_limit_micro
"""
"""The changing part of currency ``c`` (joined to its issuer ``m``) at ``%(at)s``: four
columns, read by :func:`currency_from_state`."""


def currency_from_state(facts: CurrencyFacts, row: Any, offset: int = 0) -> Currency:
    """The currency with the four :data:`STATE_COLUMNS` found at ``row[offset:]``."""
    active, rate, issuer_active, limit = row[offset : offset + 4]
    return facts.with_state(
        active=bool(active),
        rate=rate if isinstance(rate, Decimal) else None,
        issuer_active=bool(issuer_active),
        exposure_limit_micro=None if limit is None else int(limit),
    )


class Facts:
    """The cached fixed facts of one database."""

    def __init__(self) -> None:
        self.currencies: Bounded[str, CurrencyFacts] = Bounded(MAX_CURRENCIES)
        self.links: Bounded[tuple[int, str], int] = Bounded(MAX_LINKS)
        self.settlement_accounts: Bounded[int, int] = Bounded(MAX_MERCHANTS)
        self.settlement: SettlementAsset | None = None
        self.states: Bounded[int, Currency] = Bounded(MAX_CURRENCIES)
        """Currency id → the currency as last seen: its state is a guess, checked wherever
        it is used."""

    def last_state(self, currency_id: int) -> Currency | None:
        return self.states.get(currency_id)

    def saw_state(self, currency: Currency) -> None:
        self.states.put(currency.id, currency)

    def forget_state(self, currency_id: int) -> None:
        self.states.forget(currency_id)

    async def currency(self, conn: Conn, code: str) -> CurrencyFacts | None:
        """The point currency ``code``'s fixed facts (``None`` when there is none)."""
        found = self.currencies.get(code)
        if found is not None:
            return found
        cur = await conn.execute(_FACTS_SQL, (code,))
        row = await cur.fetchone()
        if row is None:
            return None
        found = CurrencyFacts(
            id=int(row[0]),
            code=str(row[1]),
            name=str(row[2]),
            issuer_id=int(row[3]),
            issuer_code=str(row[4]),
            scale=int(row[5]),
            expiry=ExpiryPolicy(str(row[6]), None if row[7] is None else int(row[7])),
            outstanding_id=int(row[8]),
            issuer_settlement_id=int(row[9]),
        )
        self.currencies.put(code, found)
        return found

    def cached_currency(self, code: str) -> CurrencyFacts | None:
        return self.currencies.get(code)

    async def settlement_asset(self, conn: Conn) -> SettlementAsset:
        if self.settlement is None:
            self.settlement = await settlement_asset(conn)
        return self.settlement

    async def settlement_account(self, conn: Conn, merchant_id: int) -> int:
        found = self.settlement_accounts.get(merchant_id)
        if found is None:
            found = await settlement_account(conn, merchant_id)
            self.settlement_accounts.put(merchant_id, found)
        return found

    def cached_settlement(self, merchant_id: int) -> tuple[int, int] | None:
        """``(settlement asset id, merchant's settlement account)`` if both are cached."""
        account = self.settlement_accounts.get(merchant_id)
        if self.settlement is None or account is None:
            return None
        return self.settlement.id, account

    def link(self, merchant_id: int, customer_ref: str) -> int | None:
        return self.links.get((merchant_id, customer_ref))

    def remember_link(self, merchant_id: int, customer_ref: str, member_id: int) -> None:
        self.links.put((merchant_id, customer_ref), member_id)


_BY_POOL: weakref.WeakKeyDictionary[Any, Facts] = weakref.WeakKeyDictionary()


def facts_of(pool: Any) -> Facts:
    """The facts of the database behind ``pool`` (one :class:`Facts` per pool)."""
    found = _BY_POOL.get(pool)
    if found is None:
        found = _BY_POOL[pool] = Facts()
    return found
