"""Quotes and conversions between point currencies (spec operation 3).

A member asks for a quote; the quote locks both rates and the hub's fee for a short
time (``Settings.quote_ttl_s``) and executes at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from exchange.domain import errors
from exchange.domain.conversion import convert as convert_amounts
from exchange.domain.entries import Leg
from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.domain.lots import credit_split
from exchange.domain.money import AmountError, micro_to_decimal, rate_to_text
from exchange.ledger import engine
from exchange.ledger.accounts import currency_by_id, settlement_asset, wallet
from exchange.ledger.engine import Conn, EntryDraft, NewLot
from exchange.services import clock
from exchange.services.actors import MEMBER, Actor
from exchange.services.points import check_exposure, check_points_field, plan_debit, usable_currency
from exchange.services.tx import Claim, Outcome, Pool, idempotent, transaction


@dataclass(frozen=True)
class Quote:
    id: int
    member_id: int
    from_currency: str
    to_currency: str
    from_amount: int
    to_amount: int
    from_rate: Decimal
    to_rate: Decimal
    fee_bp: int
    value_micro: int
    to_value_micro: int
    fee_micro: int
    created_at: datetime
    expires_at: datetime
    executed_entry_id: int | None


async def current_fee_bp(conn: Conn, default: int) -> int:
    cur = await conn.execute("SELECT value FROM hub_settings WHERE name = 'conversion_fee_bp'")
    row = await cur.fetchone()
    return default if row is None else int(row[0])


async def create_quote(
    pool: Pool,
    actor: Actor,
    *,
    from_code: str,
    to_code: str,
    points: int,
    ttl_s: int,
    default_fee_bp: int,
) -> Quote:
    """Quote converting ``points`` of one currency into another for member ``actor``."""
    if actor.role != MEMBER or actor.member_id is None:
        raise Forbidden("only a member converts points")
    member_id = actor.member_id
    check_points_field(points)
    if from_code == to_code:
        raise Refusal("SAME_CURRENCY", "choose two different currencies", "toCurrency")

    async def work(conn: Conn) -> Quote:
        now = clock.now()
        source = await usable_currency(conn, from_code, now, issuing=False)
        target = await usable_currency(conn, to_code, now, issuing=True)
        if target.id == source.id:
            raise Refusal("SAME_CURRENCY", "choose two different currencies", "toCurrency")
        assert source.rate is not None
        assert target.rate is not None
        fee_bp = await current_fee_bp(conn, default_fee_bp)
        try:
            c = convert_amounts(
                points,
                from_rate=source.rate,
                from_scale=source.scale,
                to_rate=target.rate,
                to_scale=target.scale,
                fee_bp=fee_bp,
            )
        except AmountError as exc:
            raise Refusal(exc.code, exc.message, "points") from exc
        expires = now + timedelta(seconds=ttl_s)
        cur = await conn.execute(
            "INSERT INTO quotes (member_id, from_currency_id, to_currency_id, from_amount,"
            " to_amount, from_rate, to_rate, fee_bp, value_micro, to_value_micro, fee_micro,"
            " created_at, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                member_id,
                source.id,
                target.id,
                c.from_amount,
                c.to_amount,
                source.rate,
                target.rate,
                fee_bp,
                c.value_micro,
                c.to_value_micro,
                c.fee_micro,
                now,
                expires,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        return Quote(
            id=int(row[0]),
            member_id=member_id,
            from_currency=source.code,
            to_currency=target.code,
            from_amount=c.from_amount,
            to_amount=c.to_amount,
            from_rate=source.rate,
            to_rate=target.rate,
            fee_bp=fee_bp,
            value_micro=c.value_micro,
            to_value_micro=c.to_value_micro,
            fee_micro=c.fee_micro,
            created_at=now,
            expires_at=expires,
            executed_entry_id=None,
        )

    return await transaction(pool, work)


_QUOTE_SQL = """
SELECT q.id, q.member_id, f.code, t.code, q.from_amount, q.to_amount, q.from_rate, q.to_rate,
       q.fee_bp, q.value_micro, q.to_value_micro, q.fee_micro, q.created_at, q.expires_at,
       (SELECT e.id FROM entries e WHERE e.quote_id = q.id),
       q.from_currency_id, q.to_currency_id
  FROM quotes q JOIN currencies f ON f.id = q.from_currency_id
  JOIN currencies t ON t.id = q.to_currency_id
 WHERE q.id = %s AND q.member_id = %s
"""


async def load_quote(
    conn: Conn, quote_id: int, member_id: int, *, lock: bool = False
) -> tuple[Quote, int, int] | None:
    if lock:
        await conn.execute(
            "SELECT 1 FROM quotes WHERE id = %s AND member_id = %s FOR UPDATE",
            (quote_id, member_id),
        )
    cur = await conn.execute(_QUOTE_SQL, (quote_id, member_id))
    r = await cur.fetchone()
    if r is None:
        return None
    quote = Quote(
        id=int(r[0]),
        member_id=int(r[1]),
        from_currency=r[2],
        to_currency=r[3],
        from_amount=int(r[4]),
        to_amount=int(r[5]),
        from_rate=Decimal(r[6]),
        to_rate=Decimal(r[7]),
        fee_bp=int(r[8]),
        value_micro=int(r[9]),
        to_value_micro=int(r[10]),
        fee_micro=int(r[11]),
        created_at=r[12],
        expires_at=r[13],
        executed_entry_id=None if r[14] is None else int(r[14]),
    )
    return quote, int(r[15]), int(r[16])


async def execute_quote(
    pool: Pool, actor: Actor, *, quote_id: int, idempotency_key: str
) -> Outcome:
    """Execute a member's quote: once, before it expires, at its locked rates and fee."""
    if actor.role != MEMBER or actor.member_id is None:
        raise Forbidden("only a member converts points")
    member_id = actor.member_id

    async def body(conn: Conn, claim: Claim) -> int:
        now = clock.now()
        found = await load_quote(conn, quote_id, member_id, lock=True)
        if found is None:
            raise NotFound("quote", "quoteId")
        quote, source_id, target_id = found
        if quote.executed_entry_id is not None:
            raise Refusal(errors.QUOTE_USED, "this quote was already executed", "quoteId")
        if now >= quote.expires_at:
            raise Refusal(errors.QUOTE_EXPIRED, "the quote expired; ask for a new one", "quoteId")
        source = await currency_by_id(conn, source_id, now)
        target = await currency_by_id(conn, target_id, now)
        assert source is not None
        assert target is not None
        if not (target.active and target.issuer_active):
            raise Refusal(errors.CURRENCY_INACTIVE, f"{target.code} is not issuing points")
        await check_exposure(conn, target, quote.to_value_micro, now)
        wx = await wallet(conn, member_id, source.id, create=False)
        if wx is None:
            raise Refusal(errors.INSUFFICIENT_POINTS, f"no {source.code} points", "quoteId")
        wy = await wallet(conn, member_id, target.id, create=True)
        assert wy is not None
        balances = await engine.lock_wallets(conn, [wx, wy])
        n, m = quote.from_amount, quote.to_amount
        moves = await plan_debit(conn, wx, balances[wx], member_id, source, n, now)
        repay, _ = credit_split(balances[wy], m)
        asset = await settlement_asset(conn)
        legs = [
            Leg(wx, source.id, -n),
            Leg(source.outstanding_id, source.id, n),
            Leg(target.outstanding_id, target.id, -m),
            Leg(wy, target.id, m),
            Leg(source.issuer_settlement_id, asset.id, -quote.value_micro),
            Leg(target.issuer_settlement_id, asset.id, quote.to_value_micro),
        ]
        if quote.fee_micro:
            legs.append(Leg(asset.fees_id, asset.id, quote.fee_micro))
        posted = await engine.post(
            conn,
            EntryDraft(
                kind="convert",
                initiator=claim.initiator,
                idempotency_key=claim.key,
                fingerprint=claim.fingerprint,
                effective_at=now,
                legs=legs,
                member_id=member_id,
                merchant_id=None,
                quote_id=quote.id,
                rates={
                    source.code: rate_to_text(quote.from_rate),
                    target.code: rate_to_text(quote.to_rate),
                },
                details={
                    "from": source.code,
                    "to": target.code,
                    "points": n,
                    "received": m,
                    "value": micro_to_decimal(quote.value_micro),
                    "receivedValue": micro_to_decimal(quote.to_value_micro),
                    "fee": micro_to_decimal(quote.fee_micro),
                    "feeBp": quote.fee_bp,
                },
                new_lots=[NewLot(wy, m, target.expiry.expires_at(now), repays_debt=repay)],
                lot_moves=moves,
            ),
        )
        return posted.entry_id

    return await idempotent(
        pool,
        initiator=actor.initiator,
        key=idempotency_key,
        operation="convert",
        request={"quote": quote_id},
        body=body,
    )
