"""A member's wallet: balances valued at today's rates, expiring points, lots and history.

The member sees all of it. A merchant looking at a linked customer sees the balances in
every currency (it needs them to accept points at checkout) but only the line items it has
a part in: history entries it initiated, that are booked to it, or that move points of a
currency it issues; lots and expiring points of the currencies it issues.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import strawberry
from graphql import FieldNode

from exchange.api.context import Info
from exchange.api.errors import InvalidArgument
from exchange.api.fields import field
from exchange.api.loaders import ENTRY_COLUMNS, BalanceRow, entry_row, fetch_all
from exchange.api.nodes import (
    LOT_COLUMNS,
    Currency,
    Entry,
    EntryKind,
    Lot,
    is_party,
    lot_from_row,
)
from exchange.api.pagination import (
    DEFAULT_FIRST,
    Connection,
    build_connection,
    check_first,
    decode_cursor,
    encode_cursor,
)
from exchange.api.scalars import micro_value, points_value, rate_value
from exchange.domain.money import value_micro

MAX_WITHIN_DAYS = 3660


@strawberry.type(description="What a member holds in one currency, valued at today's rate.")
class Balance:
    currency: Currency
    points: Decimal = strawberry.field(description="Negative only for a points debt.")
    rate: Decimal | None = strawberry.field(
        description="The rate in force: value of one point in the settlement currency."
    )
    value: Decimal | None = strawberry.field(
        description="points × rate in the settlement currency (6 places); null without a rate."
    )


@strawberry.type(description="Points that expire at one instant.")
class ExpiringPoints:
    currency: Currency
    points: Decimal
    expires_at: datetime


@strawberry.input(description="Which entries of a history to list (all conditions apply).")
class HistoryFilter:
    kinds: list[EntryKind] | None = None
    currency: str | None = strawberry.field(
        default=None, description="Only entries that moved the member's points of this currency."
    )
    since: datetime | None = strawberry.field(
        default=None, description="Effective at or after this instant."
    )
    until: datetime | None = strawberry.field(
        default=None, description="Effective before this instant."
    )


def _value(row: BalanceRow) -> int | None:
    if row.currency.rate is None:
        return None
    return value_micro(row.amount, row.currency.rate, row.currency.scale)


_BALANCE_FIELDS = frozenset({"balances", "totalValue"})


def _asks_for_balances(info: Info) -> bool:
    """Whether the selection of the wallet field ``info`` resolves may ask for its balances:
    one of the fields that show them, or a fragment (not looked into)."""
    for node in info._raw_info.field_nodes:
        selection = node.selection_set
        if selection is None:
            continue
        for s in selection.selections:
            if not isinstance(s, FieldNode) or s.name.value in _BALANCE_FIELDS:
                return True
    return False


async def open_wallet(info: Info, member_id: int, viewer_merchant_id: int | None = None) -> Wallet:
    """The wallet of ``member_id`` for the field ``info`` resolves, with its balances read
    first when the selection may show them (one read however many fields show them).

    Read here, the wallet's balance fields resolve without waiting: graphql-core gathers
    two waiting fields as two tasks behind a future: an eighth of the read's own work.
    """
    rows = await info.context.loaders.balances(member_id) if _asks_for_balances(info) else None
    return Wallet(member_id=member_id, viewer_merchant_id=viewer_merchant_id, rows=rows)


@strawberry.type(description="A member's points across the alliance.")
class Wallet:
    member_id: strawberry.Private[int]
    viewer_merchant_id: strawberry.Private[int | None] = None
    """Set when a merchant looks at its customer: line items are limited to its part."""
    rows: strawberry.Private[list[BalanceRow] | None] = None
    """The member's balances, read by :func:`open_wallet` when the selection shows them."""

    def _rows(self) -> list[BalanceRow]:
        if self.rows is None:
            raise RuntimeError("a wallet's balances are read when it is opened (open_wallet)")
        return self.rows

    @field(description="The settlement currency values are expressed in.")
    def settlement_currency(self, info: Info) -> str:
        return info.context.settings.settlement_currency

    @field(description="Balances in every currency the member has held.")
    def balances(self) -> list[Balance]:
        out = []
        for row in self._rows():
            micro = _value(row)
            out.append(
                Balance(
                    currency=Currency.from_row(row.currency),
                    points=points_value(row.amount, row.currency.scale),
                    rate=None if row.currency.rate is None else rate_value(row.currency.rate),
                    value=None if micro is None else micro_value(micro),
                )
            )
        return out

    @field(description="The sum of the balances' values (settlement currency).")
    def total_value(self) -> Decimal:
        total = 0
        for row in self._rows():
            micro = _value(row)
            total += micro or 0
        return micro_value(total)

    @field(description="Points that expire within the next `withinDays` days.")
    async def expiring_soon(self, info: Info, within_days: int = 30) -> list[ExpiringPoints]:
        if not 0 <= within_days <= MAX_WITHIN_DAYS:
            raise InvalidArgument(
                f"`withinDays` must be between 0 and {MAX_WITHIN_DAYS}.", argument="withinDays"
            )
        now = datetime.now(UTC)
        params: list[Any] = [self.member_id, now, now + timedelta(days=within_days)]
        scope = ""
        if self.viewer_merchant_id is not None:
            scope = " AND c.issuer_id = %s"
            params.append(self.viewer_merchant_id)
        rows = await fetch_all(
            info.context.pool,
            "SELECT a.asset_id, c.scale, l.expires_at, sum(l.remaining) FROM lots l"
            "  JOIN accounts a ON a.id = l.wallet_id"
            "  JOIN currencies c ON c.id = a.asset_id"
            " WHERE a.kind = 'wallet' AND a.member_id = %s AND l.remaining > 0"
            f"   AND l.expires_at > %s AND l.expires_at <= %s{scope}"
            " GROUP BY a.asset_id, c.scale, l.expires_at ORDER BY l.expires_at, a.asset_id",
            params,
        )
        out = []
        for asset_id, scale, expires_at, remaining in rows:
            currency = await _currency(info, int(asset_id))
            out.append(
                ExpiringPoints(
                    currency=currency,
                    points=points_value(int(remaining), int(scale)),
                    expires_at=expires_at,
                )
            )
        return out

    @field(description="Lots with points left, soonest-expiring first.")
    async def lots(
        self,
        info: Info,
        currency: str | None = None,
        first: int = DEFAULT_FIRST,
        after: str | None = None,
    ) -> Connection[Lot]:
        n = check_first(first)
        position = decode_cursor(after, "lot", (str, int))
        params: list[Any] = [self.member_id]
        where = ""
        if currency is not None:
            where += " AND c.code = %s"
            params.append(currency)
        if self.viewer_merchant_id is not None:
            where += " AND c.issuer_id = %s"
            params.append(self.viewer_merchant_id)
        if position is not None:
            expires_text, lot_id = str(position[0]), int(position[1])
            if expires_text == "":
                where += " AND l.expires_at IS NULL AND l.id > %s"
                params.append(lot_id)
            else:
                try:
                    expires = datetime.fromisoformat(expires_text)
                except ValueError:
                    raise InvalidArgument("`after` is not a cursor of this list.") from None
                where += (
                    " AND (l.expires_at IS NULL OR l.expires_at > %s"
                    " OR (l.expires_at = %s AND l.id > %s))"
                )
                params += [expires, expires, lot_id]
        params.append(n + 1)
        rows = await fetch_all(
            info.context.pool,
            f"SELECT {LOT_COLUMNS} FROM lots l"
            "  JOIN accounts a ON a.id = l.wallet_id"
            "  JOIN currencies c ON c.id = a.asset_id"
            f" WHERE a.kind = 'wallet' AND a.member_id = %s AND l.remaining > 0{where}"
            " ORDER BY l.expires_at NULLS LAST, l.id LIMIT %s",
            params,
        )
        return build_connection(
            rows,
            n,
            node=lot_from_row,
            cursor=lambda r: encode_cursor(
                "lot", "" if r[6] is None else r[6].isoformat(), int(r[0])
            ),
            has_previous=position is not None,
        )

    @field(description="Entries of the member's points, newest first.")
    async def history(
        self,
        info: Info,
        first: int = DEFAULT_FIRST,
        after: str | None = None,
        filter: HistoryFilter | None = None,
    ) -> Connection[Entry]:
        n = check_first(first)
        position = decode_cursor(after, "entry", (int,))
        params: list[Any] = []
        where = ""
        source = "entries e"
        if filter is not None and filter.currency is not None:
            source = (
                "postings p JOIN entries e ON e.id = p.entry_id"
                " AND p.account_id = (SELECT a.id FROM accounts a"
                "  JOIN currencies c ON c.id = a.asset_id"
                "  WHERE a.kind = 'wallet' AND a.member_id = %s AND c.code = %s)"
            )
            params += [self.member_id, filter.currency]
        params.append(self.member_id)
        if position is not None:
            where += " AND e.id < %s"
            params.append(int(position[0]))
        if filter is not None:
            if filter.kinds:
                where += " AND e.kind = ANY(%s)"
                params.append([kind.value for kind in filter.kinds])
            if filter.since is not None:
                where += " AND e.effective_at >= %s"
                params.append(filter.since)
            if filter.until is not None:
                where += " AND e.effective_at < %s"
                params.append(filter.until)
        if self.viewer_merchant_id is not None:
            actor = info.context.actor
            assert actor is not None
            where += (
                " AND (e.merchant_id = %s OR e.initiator = %s OR EXISTS ("
                "SELECT 1 FROM postings q JOIN currencies qc ON qc.id = q.asset_id"
                " WHERE q.entry_id = e.id AND qc.issuer_id = %s))"
            )
            params += [self.viewer_merchant_id, actor.initiator, self.viewer_merchant_id]
        params.append(n + 1)
        rows = await fetch_all(
            info.context.pool,
            f"SELECT {ENTRY_COLUMNS} FROM {source}"
            f" WHERE e.member_id = %s{where} ORDER BY e.id DESC LIMIT %s",
            params,
        )
        actor = info.context.actor
        assert actor is not None
        issued: frozenset[int] | None = None
        if self.viewer_merchant_id is not None:
            issued = await info.context.loaders.issued_currencies.load(self.viewer_merchant_id)
        entries = [entry_row(r) for r in rows]
        for row in entries:
            info.context.loaders.entry.prime(row.id, row)
        return build_connection(
            entries,
            n,
            node=lambda row: Entry.from_row(row, party=is_party(actor, row), own_currencies=issued),
            cursor=lambda row: encode_cursor("entry", row.id),
            has_previous=position is not None,
        )


async def _currency(info: Info, currency_id: int) -> Currency:
    row = await info.context.loaders.currency.load(currency_id)
    assert row is not None
    return Currency.from_row(row)
