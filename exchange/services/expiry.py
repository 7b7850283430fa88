"""Expiry (spec operation 4): a lot past its expiry loses what is left of it.

The sweeper picks lots whose expiry has passed, locks their wallet, re-reads the lot and
posts one ``expire`` entry per lot under the key ``lot:<id>`` of the ``system:expiry``
initiator, so a lot expires at most once however often or concurrently the sweep runs.
Redemptions and conversions expire a wallet's overdue lots inline, under the same key,
before they spend, so an expiry racing a redemption never spends a point twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from exchange.domain.entries import Leg
from exchange.domain.lots import OpenLot
from exchange.ledger import engine
from exchange.ledger.accounts import currency_by_id
from exchange.ledger.engine import Conn, EntryDraft
from exchange.ledger.idempotency import fingerprint
from exchange.services import clock
from exchange.services.actors import SYSTEM_EXPIRY
from exchange.services.tx import Pool, transaction


@dataclass(frozen=True)
class SweepResult:
    lots_expired: int
    points_expired: int


def lot_key(lot_id: int) -> str:
    return f"lot:{lot_id}"


async def expire_locked_lot(
    conn: Conn, *, wallet_id: int, member_id: int, currency_id: int, lot: OpenLot, now: datetime
) -> int | None:
    """Post the expiry of ``lot`` (its wallet must be locked by the caller)."""
    if lot.remaining <= 0 or lot.expires_at is None or lot.expires_at > now:
        return None
    currency = await currency_by_id(conn, currency_id, now)
    assert currency is not None
    key = lot_key(lot.id)
    draft = EntryDraft(
        kind="expire",
        initiator=SYSTEM_EXPIRY.initiator,
        idempotency_key=key,
        fingerprint=fingerprint("expire", {"lot": lot.id}),
        effective_at=lot.expires_at,
        legs=[
            Leg(wallet_id, currency_id, -lot.remaining),
            Leg(currency.outstanding_id, currency_id, lot.remaining),
        ],
        member_id=member_id,
        merchant_id=currency.issuer_id,
        details={"currency": currency.code, "points": lot.remaining, "lot": lot.id},
        lot_moves=[(lot.id, -lot.remaining)],
    )
    posted = await engine.post(conn, draft)
    return posted.entry_id


async def expire_overdue(
    conn: Conn,
    *,
    wallet_id: int,
    member_id: int,
    currency_id: int,
    lots: list[OpenLot],
    now: datetime,
) -> list[OpenLot]:
    """Expire the overdue lots among ``lots`` (wallet locked); return the live ones."""
    live: list[OpenLot] = []
    for lot in lots:
        if lot.overdue(now):
            await expire_locked_lot(
                conn,
                wallet_id=wallet_id,
                member_id=member_id,
                currency_id=currency_id,
                lot=lot,
                now=now,
            )
        else:
            live.append(lot)
    return live


async def sweep(pool: Pool, *, now: datetime | None = None, limit: int = 1000) -> SweepResult:
    """Expire up to ``limit`` overdue lots, soonest-expired first within each wallet, one
    short transaction per wallet. A wallet left with overdue lots is swept by the next run
    (or by its next debit, which expires them all)."""
    at = now or clock.now()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT l.wallet_id, a.member_id, a.asset_id FROM lots l"
            "  JOIN accounts a ON a.id = l.wallet_id"
            " WHERE l.remaining > 0 AND l.expires_at <= %s LIMIT %s",
            (at, limit),
        )
        wallets = [(int(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
    lots_expired = 0
    points_expired = 0
    for wallet_id, member_id, currency_id in wallets:
        if lots_expired >= limit:
            break

        async def work(
            conn: Conn,
            w: int = wallet_id,
            m: int = member_id,
            c: int = currency_id,
            budget: int = limit - lots_expired,
        ) -> tuple[int, int]:
            await engine.lock_wallets(conn, [w])
            count = points = 0
            for lot in await engine.overdue_lots(conn, w, at, limit=budget):
                await expire_locked_lot(
                    conn, wallet_id=w, member_id=m, currency_id=c, lot=lot, now=at
                )
                count += 1
                points += lot.remaining
            return count, points

        n, p = await transaction(pool, work)
        lots_expired += n
        points_expired += p
    return SweepResult(lots_expired, points_expired)
