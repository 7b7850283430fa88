"""Relay nodes: merchants, currencies, members, entries, quotes and lots.

Every ``resolve_nodes`` applies the caller's visibility rule, so an ID of another tenant
resolves exactly like an ID that does not exist (``null``):

- merchants and currencies are the alliance's public catalogue (any authenticated caller);
- a member sees its own member record, entries, quotes and lots;
- a merchant sees a member it has linked, and an entry it initiated, that is booked to it,
  or that moves points of a currency it issues (``docs/members.md``);
- admin and finance operators see everything.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay

from exchange.api.context import Info
from exchange.api.errors import InvalidArgument
from exchange.api.fields import field
from exchange.api.loaders import (
    CURRENCY_COLUMNS,
    CURRENT_RATE_JOIN,
    CurrencyRow,
    EntryRow,
    MerchantRow,
    Movement,
    fetch_all,
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
from exchange.domain.money import decimal_to_micro, value_micro
from exchange.ledger.facts import Bounded
from exchange.services.actors import ADMIN, FINANCE, MEMBER, Actor

if TYPE_CHECKING:
    from exchange.api.wallet import Wallet

OPERATORS = (ADMIN, FINANCE)


def _int_ids(node_ids: Iterable[str]) -> list[int | None]:
    out: list[int | None] = []
    for raw in node_ids:
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = None
        out.append(value if value is not None and 0 < value < 2**63 else None)
    return out


# -- merchants ---------------------------------------------------------------------------------


@strawberry.type(description="A partner of the alliance.")
class Merchant(relay.Node):
    id: relay.NodeID[int]
    code: str = strawberry.field(description="The merchant's stable code, e.g. `tea-house`.")
    name: str
    active: bool = strawberry.field(description="False while the merchant is suspended.")

    @classmethod
    def from_row(cls, row: MerchantRow) -> Merchant:
        return cls(id=row.id, code=row.code, name=row.name, active=row.status == "active")

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Merchant | None]:
        ids = _int_ids(node_ids)
        if info.context.actor is None:
            return [None for _ in ids]
        return [await merchant_by_id(info, i) for i in ids]


async def merchant_by_id(info: Info, merchant_id: int | None) -> Merchant | None:
    if merchant_id is None:
        return None
    row = await info.context.loaders.merchant.load(merchant_id)
    return None if row is None else Merchant.from_row(row)


# -- currencies --------------------------------------------------------------------------------


@strawberry.enum(description="How the points of a currency expire.")
class ExpiryKind(enum.Enum):
    NEVER = "never"
    DAYS = "days"
    MONTHS_END = "months_end"


@strawberry.type(description="When points earned at a given time expire.")
class ExpiryPolicy:
    kind: ExpiryKind
    period: int | None = strawberry.field(
        description="DAYS: days after earning; MONTHS_END: the end of the Nth month after"
        " the month of earning; null for NEVER."
    )


@strawberry.type(description="A rate of a currency and when it takes effect.")
class RateChange:
    rate: Decimal = strawberry.field(description="Value of one point in the settlement currency.")
    effective_at: datetime
    recorded_at: datetime
    in_force: bool = strawberry.field(description="True for the rate that applies now.")


_CURRENCIES_BUILT: Bounded[CurrencyRow, Currency] = Bounded(10_000)
"""Currency nodes already built, by row: a node is never changed once built, so requests
share them."""


@strawberry.type(description="A point currency of the alliance.")
class Currency(relay.Node):
    id: relay.NodeID[int]
    code: str
    name: str
    scale: int = strawberry.field(description="Decimal places of a point (0: whole points).")
    active: bool = strawberry.field(description="False when the currency no longer issues points.")
    rate: Decimal | None = strawberry.field(
        description="The value of one point in the settlement currency now."
    )
    rate_since: datetime | None = strawberry.field(description="When the current rate took effect.")
    expiry: ExpiryPolicy
    issuer_id: strawberry.Private[int]

    @classmethod
    def from_row(cls, row: CurrencyRow) -> Currency:
        found = _CURRENCIES_BUILT.get(row)
        if found is None:
            found = cls._build(row)
            _CURRENCIES_BUILT.put(row, found)
        return found

    @classmethod
    def _build(cls, row: CurrencyRow) -> Currency:
        return cls(
            id=row.id,
            code=row.code,
            name=row.name,
            scale=row.scale,
            active=row.active,
            rate=None if row.rate is None else rate_value(row.rate),
            rate_since=row.rate_since,
            expiry=ExpiryPolicy(kind=ExpiryKind(row.expiry_kind), period=row.expiry_param),
            issuer_id=row.issuer_id or 0,
        )

    @field(description="The merchant that issues this currency.")
    async def issuer(self, info: Info) -> Merchant:
        merchant = await merchant_by_id(info, self.issuer_id)
        assert merchant is not None
        return merchant

    @field(description="Rate changes, newest effective time first (future ones too).")
    async def rate_history(
        self, info: Info, first: int = DEFAULT_FIRST, after: str | None = None
    ) -> Connection[RateChange]:
        n = check_first(first)
        position = decode_cursor(after, "rate", (str,))
        params: list[Any] = [self.id]
        where = ""
        if position is not None:
            try:
                params.append(datetime.fromisoformat(str(position[0])))
            except ValueError:
                raise InvalidArgument("`after` is not a cursor of this list.") from None
            where = " AND effective_at < %s"
        params.append(n + 1)
        rows = await fetch_all(
            info.context.pool,
            "SELECT rate, effective_at, recorded_at, effective_at <= now() FROM rates"
            f" WHERE currency_id = %s{where} ORDER BY effective_at DESC LIMIT %s",
            params,
        )
        in_force_at = self.rate_since
        return build_connection(
            rows,
            n,
            node=lambda r: RateChange(
                rate=rate_value(Decimal(r[0])),
                effective_at=r[1],
                recorded_at=r[2],
                in_force=in_force_at is not None and r[1] == in_force_at,
            ),
            cursor=lambda r: encode_cursor("rate", r[1].isoformat()),
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Currency | None]:
        ids = _int_ids(node_ids)
        if info.context.actor is None:
            return [None for _ in ids]
        return [await currency_by_id(info, i) for i in ids]


async def currency_by_id(info: Info, currency_id: int | None) -> Currency | None:
    if currency_id is None:
        return None
    row = await info.context.loaders.currency.load(currency_id)
    return None if row is None or row.kind != "points" else Currency.from_row(row)


async def currency_by_code(info: Info, code: str | None) -> Currency | None:
    if not code:
        return None
    row = await info.context.loaders.currency_by_code.load(code)
    return None if row is None or row.kind != "points" else Currency.from_row(row)


# -- members -----------------------------------------------------------------------------------


@strawberry.type(description="A member of the alliance, as the caller may see it.")
class Member(relay.Node):
    id: relay.NodeID[int]
    customer_ref: str | None = strawberry.field(
        description="The calling merchant's own reference for this member (null for others)."
    )
    viewer_merchant_id: strawberry.Private[int | None] = None

    @field(description="Balances, history and lots, as the caller may see them.")
    async def wallet(self, info: Info) -> Annotated[Wallet, strawberry.lazy("exchange.api.wallet")]:
        from exchange.api.wallet import open_wallet

        return await open_wallet(info, self.id, self.viewer_merchant_id)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Member | None]:
        return [await visible_member(info, i) for i in _int_ids(node_ids)]


async def visible_member(info: Info, member_id: int | None) -> Member | None:
    actor = info.context.actor
    if actor is None or member_id is None:
        return None
    if actor.role == MEMBER:
        return Member(id=member_id, customer_ref=None) if actor.member_id == member_id else None
    if actor.is_merchant:
        assert actor.merchant_id is not None
        ref = await info.context.loaders.customer_ref.load((actor.merchant_id, member_id))
        if ref is None:
            return None
        return Member(id=member_id, customer_ref=ref, viewer_merchant_id=actor.merchant_id)
    if actor.role in OPERATORS:
        rows = await fetch_all(
            info.context.pool, "SELECT 1 FROM members WHERE id = %s", (member_id,)
        )
        return Member(id=member_id, customer_ref=None) if rows else None
    return None


# -- entries -----------------------------------------------------------------------------------


@strawberry.enum(description="What an entry of the ledger did.")
class EntryKind(enum.Enum):
    EARN = "earn"
    REDEEM = "redeem"
    CONVERT = "convert"
    EXPIRE = "expire"
    REVERSE = "reverse"
    ADJUST = "adjust"
    SETTLE = "settle"


@strawberry.type(description="The change an entry made to a member's points in one currency.")
class PointsMovement:
    currency: Currency
    points: Decimal = strawberry.field(description="Signed: positive when points came in.")


@strawberry.type(description="A rate an entry used.")
class EntryRate:
    currency_code: str
    rate: Decimal


def _detail_decimal(details: dict[str, Any], key: str) -> Decimal | None:
    value = details.get(key)
    if not isinstance(value, str):
        return None
    try:
        return micro_value(decimal_to_micro(value))
    except ValueError:
        return None


def _detail_text(details: dict[str, Any], key: str) -> str | None:
    value = details.get(key)
    return value if isinstance(value, str) else None


@strawberry.type(description="An entry of the ledger (entries are never changed).")
class Entry(relay.Node):
    id: relay.NodeID[int]
    kind: EntryKind
    recorded_at: datetime = strawberry.field(description="When the hub wrote the entry.")
    effective_at: datetime = strawberry.field(description="When the entry took effect.")
    row: strawberry.Private[EntryRow]
    party: strawberry.Private[bool]
    """The caller is the member, the entry's merchant or initiator, or an operator."""
    own_currencies: strawberry.Private[frozenset[int] | None] = None
    """For an issuer that is not a party: its currencies, the only legs it sees."""

    @classmethod
    def from_row(
        cls, row: EntryRow, *, party: bool, own_currencies: frozenset[int] | None = None
    ) -> Entry:
        return cls(
            id=row.id,
            kind=EntryKind(row.kind),
            recorded_at=row.recorded_at,
            effective_at=row.effective_at,
            row=row,
            party=party,
            own_currencies=None if party else own_currencies,
        )

    def _currency_code(self) -> str | None:
        details = self.row.details
        code = details.get("currency", details.get("from"))
        return code if isinstance(code, str) else None

    async def _visible_movements(self, info: Info) -> list[Movement]:
        moved = await info.context.loaders.movements.load(self.id)
        if self.own_currencies is None:
            return moved
        return [m for m in moved if m.currency_id in self.own_currencies]

    async def _main_currency(self, info: Info) -> Currency | None:
        if self.own_currencies is None:
            return await currency_by_code(info, self._currency_code())
        visible = await self._visible_movements(info)
        return await currency_by_id(info, visible[0].currency_id) if visible else None

    @field(
        description="The point currency the entry is about (the source of a conversion;"
        " for an issuer that was not a party: its own currency)."
    )
    async def currency(self, info: Info) -> Currency | None:
        return await self._main_currency(info)

    @field(
        description="The signed change to the member's points in `currency`"
        " (for a conversion: the points given up)."
    )
    async def points(self, info: Info) -> Decimal | None:
        currency = await self._main_currency(info)
        if currency is None:
            return None
        for movement in await self._visible_movements(info):
            if movement.currency_id == currency.id:
                return points_value(movement.amount, currency.scale)
        raw = self.row.details.get("points")
        return points_value(int(raw), currency.scale) if isinstance(raw, int) else None

    @field(description="The changes the entry made to the member's points (that the caller sees).")
    async def movements(self, info: Info) -> list[PointsMovement]:
        out: list[PointsMovement] = []
        for movement in await self._visible_movements(info):
            currency = await currency_by_id(info, movement.currency_id)
            if currency is not None:
                out.append(
                    PointsMovement(
                        currency=currency, points=points_value(movement.amount, currency.scale)
                    )
                )
        return out

    @field(
        description="The value moved, in the settlement currency (6 places); for an issuer"
        " that was not a party, the value of its own legs at the entry's rate."
    )
    async def value(self, info: Info) -> Decimal | None:
        details = self.row.details
        if self.own_currencies is None:
            found = _detail_decimal(details, "value")
            return found if found is not None else _detail_decimal(details, "amount")
        currency = await self._main_currency(info)
        if currency is None:
            return None
        rate_text = self.row.rates.get(currency.code)
        amount = sum(
            abs(m.amount)
            for m in await self._visible_movements(info)
            if m.currency_id == currency.id
        )
        if not isinstance(rate_text, str):
            return None
        return micro_value(value_micro(amount, Decimal(rate_text), currency.scale))

    @field(description="The merchant the entry is booked to, if any.")
    async def merchant(self, info: Info) -> Merchant | None:
        return await merchant_by_id(info, self.row.merchant_id)

    @field(description="The rates the entry used (that the caller sees).")
    async def rates(self, info: Info) -> list[EntryRate]:
        own: set[str] | None = None
        if self.own_currencies is not None:
            own = set()
            for currency_id in self.own_currencies:
                currency = await currency_by_id(info, currency_id)
                if currency is not None:
                    own.add(currency.code)
        out = []
        for code, text in sorted(self.row.rates.items()):
            if own is not None and code not in own:
                continue
            try:
                out.append(EntryRate(currency_code=code, rate=rate_value(Decimal(str(text)))))
            except ArithmeticError:
                continue
        return out

    @field(description="For a reversal: the ID of the entry it undoes.")
    def reversed_entry_id(self) -> relay.GlobalID | None:
        target = self.row.reverses_entry_id
        return None if target is None else relay.GlobalID("Entry", str(target))

    @field(description="Why an adjustment or a reversal was made.")
    def reason(self) -> str | None:
        return _detail_text(self.row.details, "reason")

    @field(description="A conversion's fee (settlement currency).")
    def fee(self) -> Decimal | None:
        return _detail_decimal(self.row.details, "fee")

    @field(description="A points-plus-cash redemption's order total (parties only).")
    def order_total(self) -> Decimal | None:
        return _detail_decimal(self.row.details, "orderTotal") if self.party else None

    @field(description="Cash still due after the points (parties only).")
    def cash_due(self) -> Decimal | None:
        return _detail_decimal(self.row.details, "cashDue") if self.party else None

    @field(description="A settlement payment's external reference (parties only).")
    def external_ref(self) -> str | None:
        return _detail_text(self.row.details, "externalRef") if self.party else None

    @field(description="The merchant's free-text note on the entry (parties only).")
    def memo(self) -> str | None:
        return _detail_text(self.row.details, "memo") if self.party else None

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Entry | None]:
        ids = _int_ids(node_ids)
        if info.context.actor is None:
            return [None for _ in ids]
        out: list[Entry | None] = []
        for entry_id in ids:
            row = None if entry_id is None else await info.context.loaders.entry.load(entry_id)
            out.append(None if row is None else await visible_entry(info, row))
        return out


def is_party(actor: Actor, row: EntryRow) -> bool:
    """The caller took part in the entry (or operates the hub)."""
    if actor.role in OPERATORS:
        return True
    if actor.role == MEMBER:
        return row.member_id is not None and row.member_id == actor.member_id
    if actor.is_merchant:
        return row.merchant_id == actor.merchant_id or row.initiator == actor.initiator
    return False


async def visible_entry(info: Info, row: EntryRow) -> Entry | None:
    """The entry as the caller may see it, or ``None`` when it is not the caller's business."""
    actor = info.context.actor
    if actor is None:
        return None
    if is_party(actor, row):
        return Entry.from_row(row, party=True)
    if actor.is_merchant and row.member_id is not None:
        assert actor.merchant_id is not None
        issued = await info.context.loaders.issued_currencies.load(actor.merchant_id)
        moved = await info.context.loaders.movements.load(row.id)
        if any(m.currency_id in issued for m in moved):
            return Entry.from_row(row, party=False, own_currencies=issued)
    return None


# -- quotes ------------------------------------------------------------------------------------


@strawberry.type(description="A member's quote to convert points; executes once before it expires.")
class Quote(relay.Node):
    id: relay.NodeID[int]
    from_points: Decimal
    to_points: Decimal
    from_rate: Decimal
    to_rate: Decimal
    fee_bp: int = strawberry.field(description="The hub's fee in basis points.")
    value: Decimal = strawberry.field(description="Value of the points given up (settlement).")
    to_value: Decimal = strawberry.field(description="Value of the points received (settlement).")
    fee: Decimal = strawberry.field(description="The hub's fee (settlement).")
    created_at: datetime
    expires_at: datetime
    from_code: strawberry.Private[str]
    to_code: strawberry.Private[str]
    executed_entry_id: strawberry.Private[int | None]

    @field()
    async def from_currency(self, info: Info) -> Currency:
        currency = await currency_by_code(info, self.from_code)
        assert currency is not None
        return currency

    @field()
    async def to_currency(self, info: Info) -> Currency:
        currency = await currency_by_code(info, self.to_code)
        assert currency is not None
        return currency

    @field(description="True once the quote was executed.")
    def executed(self) -> bool:
        return self.executed_entry_id is not None

    @field(description="The conversion entry, once executed.")
    async def entry(self, info: Info) -> Entry | None:
        if self.executed_entry_id is None:
            return None
        row = await info.context.loaders.entry.load(self.executed_entry_id)
        return None if row is None else await visible_entry(info, row)

    @classmethod
    def build(
        cls,
        *,
        quote_id: int,
        from_code: str,
        to_code: str,
        from_scale: int,
        to_scale: int,
        from_amount: int,
        to_amount: int,
        from_rate: Decimal,
        to_rate: Decimal,
        fee_bp: int,
        value_micro: int,
        to_value_micro: int,
        fee_micro: int,
        created_at: datetime,
        expires_at: datetime,
        executed_entry_id: int | None,
    ) -> Quote:
        return cls(
            id=quote_id,
            from_points=points_value(from_amount, from_scale),
            to_points=points_value(to_amount, to_scale),
            from_rate=rate_value(from_rate),
            to_rate=rate_value(to_rate),
            fee_bp=fee_bp,
            value=micro_value(value_micro),
            to_value=micro_value(to_value_micro),
            fee=micro_value(fee_micro),
            created_at=created_at,
            expires_at=expires_at,
            from_code=from_code,
            to_code=to_code,
            executed_entry_id=executed_entry_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Quote | None]:
        ids = _int_ids(node_ids)
        actor = info.context.actor
        wanted = [i for i in ids if i is not None]
        if actor is None or not wanted or not (actor.role == MEMBER or actor.role in OPERATORS):
            return [None for _ in ids]
        rows = await fetch_all(info.context.pool, _QUOTES_SQL, (wanted,))
        found: dict[int, Quote] = {}
        for r in rows:
            if actor.role == MEMBER and int(r[1]) != actor.member_id:
                continue
            found[int(r[0])] = quote_from_row(r)
        return [None if i is None else found.get(i) for i in ids]


_QUOTES_SQL = """
SELECT q.id, q.member_id, f.code, t.code, f.scale, t.scale, q.from_amount, q.to_amount,
       q.from_rate, q.to_rate, q.fee_bp, q.value_micro, q.to_value_micro, q.fee_micro,
       q.created_at, q.expires_at, (SELECT e.id FROM entries e WHERE e.quote_id = q.id)
  FROM quotes q JOIN currencies f ON f.id = q.from_currency_id
  JOIN currencies t ON t.id = q.to_currency_id
 WHERE q.id = ANY(%s)
"""


def quote_from_row(r: Sequence[Any]) -> Quote:
    return Quote.build(
        quote_id=int(r[0]),
        from_code=str(r[2]),
        to_code=str(r[3]),
        from_scale=int(r[4]),
        to_scale=int(r[5]),
        from_amount=int(r[6]),
        to_amount=int(r[7]),
        from_rate=Decimal(r[8]),
        to_rate=Decimal(r[9]),
        fee_bp=int(r[10]),
        value_micro=int(r[11]),
        to_value_micro=int(r[12]),
        fee_micro=int(r[13]),
        created_at=r[14],
        expires_at=r[15],
        executed_entry_id=None if r[16] is None else int(r[16]),
    )


async def load_quote(info: Info, quote_id: int) -> Quote | None:
    """A quote by its database id, if the caller may see it."""
    found = await Quote.resolve_nodes(info=info, node_ids=[str(quote_id)])
    return found[0]


# -- lots --------------------------------------------------------------------------------------


@strawberry.type(description="Points earned together, with their remainder and expiry.")
class Lot(relay.Node):
    id: relay.NodeID[int]
    original: Decimal = strawberry.field(description="Points the lot started with.")
    remaining: Decimal = strawberry.field(description="Points left in the lot.")
    earned_at: datetime
    expires_at: datetime | None = strawberry.field(description="Null: the points never expire.")
    currency_id: strawberry.Private[int]

    @field()
    async def currency(self, info: Info) -> Currency:
        currency = await currency_by_id(info, self.currency_id)
        assert currency is not None
        return currency

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Lot | None]:
        ids = _int_ids(node_ids)
        actor = info.context.actor
        wanted = [i for i in ids if i is not None]
        if actor is None or not wanted or not (actor.role == MEMBER or actor.role in OPERATORS):
            return [None for _ in ids]
        rows = await fetch_all(
            info.context.pool,
            f"SELECT {LOT_COLUMNS}, a.member_id FROM lots l"
            "  JOIN accounts a ON a.id = l.wallet_id"
            "  JOIN currencies c ON c.id = a.asset_id"
            " WHERE l.id = ANY(%s)",
            (wanted,),
        )
        found: dict[int, Lot] = {}
        for r in rows:
            if actor.role == MEMBER and int(r[7]) != actor.member_id:
                continue
            found[int(r[0])] = lot_from_row(r)
        return [None if i is None else found.get(i) for i in ids]


LOT_COLUMNS = "l.id, a.asset_id, c.scale, l.original, l.remaining, l.earned_at, l.expires_at"


def lot_from_row(r: Sequence[Any]) -> Lot:
    scale = int(r[2])
    return Lot(
        id=int(r[0]),
        currency_id=int(r[1]),
        original=points_value(int(r[3]), scale),
        remaining=points_value(int(r[4]), scale),
        earned_at=r[5],
        expires_at=r[6],
    )


__all__ = [
    "CURRENCY_COLUMNS",
    "CURRENT_RATE_JOIN",
    "LOT_COLUMNS",
    "Currency",
    "Entry",
    "EntryKind",
    "ExpiryKind",
    "ExpiryPolicy",
    "Lot",
    "Member",
    "Merchant",
    "PointsMovement",
    "Quote",
    "RateChange",
    "currency_by_code",
    "currency_by_id",
    "is_party",
    "load_quote",
    "lot_from_row",
    "merchant_by_id",
    "quote_from_row",
    "visible_entry",
    "visible_member",
]
