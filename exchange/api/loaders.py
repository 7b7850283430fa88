"""Batched, per-request reads: DataLoaders and the row types resolvers build nodes from.

Every loader turns the keys asked for in one tick of the event loop into a single SQL
statement, so a page of 100 entries costs the same number of statements as a page of 10.
Loaders are created per request (:class:`Loaders` is built in the context) and each is
made on first use.

Reads run on a pooled connection in autocommit mode (:func:`reading`): one round trip per
statement, no ``BEGIN``/``COMMIT`` around it. A member's balances, the hub's most frequent
read, are read together with those other requests of the process ask for at the same time
(:mod:`exchange.services.shared_reads`).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader, DefaultCache

from exchange.ledger.engine import EntryDraft
from exchange.ledger.facts import Bounded
from exchange.services.shared_reads import shared_reads
from exchange.services.tx import Pool, reading

K = TypeVar("K")
V = TypeVar("V")


async def fetch_all(pool: Pool, query: str, params: Sequence[Any] | None = None) -> list[Any]:
    """Run one read statement and return its rows."""
    async with reading(pool) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


# -- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurrencyRow:
    id: int
    code: str
    name: str
    kind: str
    issuer_id: int | None
    scale: int
    expiry_kind: str
    expiry_param: int | None
    active: bool
    rate: Decimal | None
    """The rate in force now (``None`` before the first rate takes effect)."""
    rate_since: datetime | None


CURRENCY_COLUMNS = """
c.id, c.code, c.name, c.kind, c.issuer_id, c.scale, c.expiry_kind, c.expiry_param, c.active,
r.rate, r.effective_at
"""

CURRENT_RATE_JOIN = """
LEFT JOIN LATERAL (
    SELECT rt.rate, rt.effective_at FROM rates rt
     WHERE rt.currency_id = c.id AND rt.effective_at <= now()
     ORDER BY rt.effective_at DESC LIMIT 1
) r ON true
"""


_ROWS_SEEN: Bounded[tuple[Any, ...], CurrencyRow] = Bounded(10_000)
"""Currency rows already built, by their columns: a row is a value, so the same columns
give the same row, whatever request read them."""


def currency_row(row: Sequence[Any], offset: int = 0) -> CurrencyRow:
    columns = tuple(row[offset : offset + 11])
    found = _ROWS_SEEN.get(columns)
    if found is None:
        found = _build_currency_row(columns)
        _ROWS_SEEN.put(columns, found)
    return found


def _build_currency_row(r: Sequence[Any]) -> CurrencyRow:
    return CurrencyRow(
        id=int(r[0]),
        code=str(r[1]),
        name=str(r[2]),
        kind=str(r[3]),
        issuer_id=None if r[4] is None else int(r[4]),
        scale=int(r[5]),
        expiry_kind=str(r[6]),
        expiry_param=None if r[7] is None else int(r[7]),
        active=bool(r[8]),
        rate=None if r[9] is None else Decimal(r[9]),
        rate_since=r[10],
    )


@dataclass(frozen=True)
class MerchantRow:
    id: int
    code: str
    name: str
    status: str


@dataclass(frozen=True)
class EntryRow:
    id: int
    kind: str
    initiator: str
    merchant_id: int | None
    member_id: int | None
    reverses_entry_id: int | None
    quote_id: int | None
    rates: dict[str, Any]
    details: dict[str, Any]
    effective_at: datetime
    recorded_at: datetime


_FLAT = (str, int, bool, type(None))


def _as_stored(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as the database gives it back from a ``jsonb`` column: a flat document of
    text, integers, booleans and nulls is its own round trip; anything else goes through
    JSON."""
    if all(type(v) in _FLAT for v in doc.values()):
        return dict(doc)
    loaded: dict[str, Any] = json.loads(json.dumps(doc, sort_keys=True))
    return loaded


def posted_entry_row(entry_id: int, recorded_at: datetime, draft: EntryDraft) -> EntryRow:
    """The row an entry written from ``draft`` has, without reading it back (JSON values go
    through the same encoding the database stores)."""
    return EntryRow(
        id=entry_id,
        kind=draft.kind,
        initiator=draft.initiator,
        merchant_id=draft.merchant_id,
        member_id=draft.member_id,
        reverses_entry_id=draft.reverses_entry_id,
        quote_id=draft.quote_id,
        rates=_as_stored(draft.rates),
        details=_as_stored(draft.details),
        effective_at=draft.effective_at,
        recorded_at=recorded_at,
    )


ENTRY_COLUMNS = """
e.id, e.kind, e.initiator, e.merchant_id, e.member_id, e.reverses_entry_id, e.quote_id,
e.rates, e.details, e.effective_at, e.recorded_at
"""


def entry_row(r: Sequence[Any]) -> EntryRow:
    return EntryRow(
        id=int(r[0]),
        kind=str(r[1]),
        initiator=str(r[2]),
        merchant_id=None if r[3] is None else int(r[3]),
        member_id=None if r[4] is None else int(r[4]),
        reverses_entry_id=None if r[5] is None else int(r[5]),
        quote_id=None if r[6] is None else int(r[6]),
        rates=dict(r[7] or {}),
        details=dict(r[8] or {}),
        effective_at=r[9],
        recorded_at=r[10],
    )


@dataclass(frozen=True)
class Movement:
    """The net change an entry made to one of a member's wallets."""

    entry_id: int
    currency_id: int
    amount: int


@dataclass(frozen=True)
class BalanceRow:
    currency: CurrencyRow
    amount: int
    """Points in the currency's smallest unit (negative: a points debt)."""


_WALLET_BALANCES = f"""
SELECT a.member_id,
       (SELECT b.amount FROM balances b WHERE b.account_id = a.id AND b.stripe = 0),
       {CURRENCY_COLUMNS}
  FROM accounts a
  JOIN currencies c ON c.id = a.asset_id
  {CURRENT_RATE_JOIN}
 WHERE a.kind = 'wallet' AND a.member_id {{match}}
 ORDER BY a.member_id, c.code
"""
"""A member's wallets and their balances. A wallet has one balance row (stripe 0), read by
its key: joined instead, the planner hashed the whole ``balances`` table for the wallets of
a dozen members, at a cost that grew with the hub."""
WALLET_BALANCES_SQL = _WALLET_BALANCES.format(match="= ANY(%s)")
WALLET_BALANCE_SQL = _WALLET_BALANCES.format(match="= %s")
"""One member's balances. A scalar parameter, not a one-element array: PostgreSQL then keeps
the prepared statement's generic plan instead of planning every read again (planning took
twice as long as executing)."""


_CURRENCIES = f"SELECT {CURRENCY_COLUMNS} FROM currencies c {CURRENT_RATE_JOIN}"
_BY_ID = _CURRENCIES + " WHERE c.id = ANY(%s)"
_BY_CODE = _CURRENCIES + " WHERE c.code = ANY(%s)"


# -- batch functions ---------------------------------------------------------------------------


async def _balance_rows(pool: Pool, member_ids: Sequence[int]) -> dict[int, list[Any]]:
    """The balance rows of each member in ``member_ids``, in one statement."""
    if len(member_ids) == 1:
        rows = await fetch_all(pool, WALLET_BALANCE_SQL, (member_ids[0],))
    else:
        rows = await fetch_all(pool, WALLET_BALANCES_SQL, (list(member_ids),))
    found: dict[int, list[Any]] = {}
    for r in rows:
        found.setdefault(int(r[0]), []).append(r)
    return found


def _ordered(keys: Sequence[Any], found: dict[Any, Any]) -> list[Any]:
    return [found.get(key) for key in keys]


class Loaders:
    """The request's DataLoaders (each created on first use).

    Each loader calls back into this object through a weak reference: a loader holding a
    bound method of the object that holds the loader is a reference cycle, which kept every
    request's loaders alive until the garbage collector's next pass. So the object must
    outlive its loads, as the request's context does (a load whose ``Loaders`` is gone
    fails with a ``RuntimeError``).
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._seen: dict[int, CurrencyRow] = {}
        """Currency rows other statements of this request brought along (see
        :meth:`prime_currencies`): the currency loaders answer from them first."""
        self._seen_codes: dict[str, CurrencyRow] = {}
        self._balance_reads: dict[int, asyncio.Future[list[Any]]] = {}
        self._balances: dict[int, list[BalanceRow]] = {}

    async def _currencies(self, ids: Sequence[int]) -> list[CurrencyRow | None]:
        # The rows the by-code loader has asked for answer first: its batch may still be in
        # flight when these ids are asked for (an entry's currency by code, then its
        # movements' by id), and waiting for it costs less than a second statement. Only
        # this loader waits for the other, never the other way round.
        wanted = set(ids)
        found = {i: self._seen[i] for i in wanted if i in self._seen}
        if len(found) < len(wanted):
            found.update({row.id: row for row in await self._rows_by_code() if row.id in wanted})
        missing = [i for i in ids if i not in found]
        for row in await self._currency_rows(_BY_ID, missing):
            found[row.id] = row
            self.currency_by_code.prime(row.code, row)
        return _ordered(ids, found)

    async def _rows_by_code(self) -> list[CurrencyRow]:
        cache = self.currency_by_code.cache_map
        futures = list(cache.cache_map.values()) if isinstance(cache, DefaultCache) else []
        if not futures:
            return []
        settled = await asyncio.gather(*futures, return_exceptions=True)
        return [row for row in settled if isinstance(row, CurrencyRow)]

    async def _currencies_by_code(self, codes: Sequence[str]) -> list[CurrencyRow | None]:
        found = {c: self._seen_codes[c] for c in codes if c in self._seen_codes}
        missing = [c for c in codes if c not in found]
        for row in await self._currency_rows(_BY_CODE, missing):
            found[row.code] = row
            self.currency.prime(row.id, row)
        return _ordered(codes, found)

    async def _currency_rows(self, query: str, keys: list[Any]) -> list[CurrencyRow]:
        """The currencies of ``keys`` (no statement for none)."""
        if not keys:
            return []
        return [currency_row(r) for r in await fetch_all(self.pool, query, (keys,))]

    async def _merchants(self, ids: Sequence[int]) -> list[MerchantRow | None]:
        rows = await fetch_all(
            self.pool,
            "SELECT id, code, name, status FROM merchants WHERE id = ANY(%s)",
            (list(ids),),
        )
        found = {int(r[0]): MerchantRow(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows}
        return _ordered(ids, found)

    async def _entries(self, ids: Sequence[int]) -> list[EntryRow | None]:
        rows = await fetch_all(
            self.pool, f"SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.id = ANY(%s)", (list(ids),)
        )
        found = {int(r[0]): entry_row(r) for r in rows}
        return _ordered(ids, found)

    async def _movements(self, entry_ids: Sequence[int]) -> list[list[Movement]]:
        rows = await fetch_all(
            self.pool,
            "SELECT p.entry_id, p.asset_id, sum(p.amount) FROM postings p"
            "  JOIN accounts a ON a.id = p.account_id AND a.kind = 'wallet'"
            " WHERE p.entry_id = ANY(%s)"
            " GROUP BY p.entry_id, p.asset_id ORDER BY p.entry_id, p.asset_id",
            (list(entry_ids),),
        )
        found: dict[int, list[Movement]] = {key: [] for key in entry_ids}
        for entry_id, asset_id, amount in rows:
            if int(amount) != 0:
                found[int(entry_id)].append(Movement(int(entry_id), int(asset_id), int(amount)))
        return [found[key] for key in entry_ids]

    async def _issued(self, merchant_ids: Sequence[int]) -> list[frozenset[int]]:
        rows = await fetch_all(
            self.pool,
            "SELECT issuer_id, array_agg(id) FROM currencies WHERE issuer_id = ANY(%s)"
            " GROUP BY issuer_id",
            (list(merchant_ids),),
        )
        found = {int(r[0]): frozenset(int(i) for i in r[1]) for r in rows}
        return [found.get(key, frozenset()) for key in merchant_ids]

    async def _links(self, keys: Sequence[tuple[int, int]]) -> list[str | None]:
        merchants = [k[0] for k in keys]
        members = [k[1] for k in keys]
        rows = await fetch_all(
            self.pool,
            "SELECT l.merchant_id, l.member_id, l.customer_ref FROM member_links l"
            "  JOIN unnest(%s::bigint[], %s::bigint[]) AS k(merchant_id, member_id)"
            "    ON k.merchant_id = l.merchant_id AND k.member_id = l.member_id",
            (merchants, members),
        )
        found = {(int(r[0]), int(r[1])): str(r[2]) for r in rows}
        return _ordered(keys, found)

    async def balances(self, member_id: int) -> list[BalanceRow]:
        """A member's balances in every currency, with the rates in force: read once per
        request and member, in the statement the balance reads of this process that arrive
        together share (:mod:`exchange.services.shared_reads`), which also gathers the
        members one request asks for at once. No DataLoader in front of it: its future, batch
        and task per read were a tenth of the read's own work. A wait cancelled before the
        answer cancels the request's future; the next call asks again."""
        done = self._balances.get(member_id)
        if done is not None:
            return done
        pending = self._balance_reads.get(member_id)
        if pending is None or pending.cancelled():
            reads = shared_reads(self.pool, "wallet_balances", _balance_rows, list)
            pending = self._balance_reads[member_id] = reads.future(self.pool, member_id)
        rows = await pending
        done = self._balances.get(member_id)
        if done is None:
            currencies = [currency_row(r, 2) for r in rows]
            self.prime_currencies(currencies)
            amounts = (int(r[1]) for r in rows)
            done = [BalanceRow(c, n) for c, n in zip(currencies, amounts, strict=True)]
            self._balances[member_id] = done
        return done

    def _loader(
        self, method: Callable[[Loaders, Sequence[K]], Awaitable[list[V]]]
    ) -> DataLoader[K, V]:
        ref = weakref.ref(self)

        async def load(keys: Sequence[K]) -> list[V]:
            loaders = ref()
            if loaders is None:
                raise RuntimeError("the request's loaders are gone")
            return await method(loaders, keys)

        return DataLoader(load_fn=load)

    @cached_property
    def currency(self) -> DataLoader[int, CurrencyRow | None]:
        """Currencies by id, with the rate in force now."""
        return self._loader(Loaders._currencies)

    @cached_property
    def currency_by_code(self) -> DataLoader[str, CurrencyRow | None]:
        return self._loader(Loaders._currencies_by_code)

    @cached_property
    def merchant(self) -> DataLoader[int, MerchantRow | None]:
        return self._loader(Loaders._merchants)

    @cached_property
    def entry(self) -> DataLoader[int, EntryRow | None]:
        """Entries by id, unfiltered: callers apply the visibility rule."""
        return self._loader(Loaders._entries)

    @cached_property
    def movements(self) -> DataLoader[int, list[Movement]]:
        """An entry's net changes to member wallets, per currency."""
        return self._loader(Loaders._movements)

    @cached_property
    def issued_currencies(self) -> DataLoader[int, frozenset[int]]:
        """The ids of the currencies a merchant issues."""
        return self._loader(Loaders._issued)

    @cached_property
    def customer_ref(self) -> DataLoader[tuple[int, int], str | None]:
        """``(merchant_id, member_id)`` → the merchant's reference for that member, if linked."""
        return self._loader(Loaders._links)

    def prime_currencies(self, rows: Iterable[CurrencyRow]) -> None:
        """Remember currency rows read along with something else, for the currency loaders
        of this request. A plain dictionary: priming the loaders themselves (a future per
        row and loader, both loaders built) cost more than the balance read's statement."""
        for row in rows:
            self._seen[row.id] = row
            self._seen_codes[row.code] = row
