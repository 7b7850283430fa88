"""Reversals (spec operation 5): undo an earlier entry in whole or in part.

A reversal negates the original postings at the original amounts and rates. A partial
reversal of ``k`` of the original ``n`` points takes the same share of every posting,
computed cumulatively (``share(done + k) − share(done)``) so that reversals in parts add
up exactly to the original and never exceed it.

Wallets: points taken back come from the lots the original opened first, then from the
wallet's other lots soonest-expiring first, and the rest becomes a points debt that later
credits repay first. Points given back (reversing a redemption or a conversion's source)
repay a debt first, then return to the very lots they came from, with their expiry.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.domain import errors
from exchange.domain.entries import Leg, imbalances
from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.domain.lots import OpenLot, allocate, credit_split
from exchange.domain.money import scale_amount
from exchange.ledger import engine
from exchange.ledger.engine import Conn, EntryDraft
from exchange.services import clock
from exchange.services.actors import ADMIN, Actor
from exchange.services.expiry import expire_overdue
from exchange.services.points import check_points_field
from exchange.services.tx import Claim, Outcome, Pool, idempotent

REVERSIBLE = ("earn", "redeem", "convert", "adjust")


@dataclass(frozen=True)
class Original:
    id: int
    kind: str
    initiator: str
    member_id: int | None
    merchant_id: int | None
    points: int
    rates: dict[str, str]
    details: dict[str, Any]
    legs: list[Leg]


async def _load_original(conn: Conn, entry_id: int) -> Original | None:
    cur = await conn.execute(
        "SELECT id, kind, initiator, member_id, merchant_id, rates, details FROM entries"
        " WHERE id = %s FOR NO KEY UPDATE",
        (entry_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT account_id, asset_id, amount FROM postings WHERE entry_id = %s ORDER BY seq",
        (entry_id,),
    )
    legs = [Leg(int(a), int(s), int(m)) for a, s, m in await cur.fetchall()]
    details = dict(row[6])
    return Original(
        id=int(row[0]),
        kind=str(row[1]),
        initiator=str(row[2]),
        member_id=None if row[3] is None else int(row[3]),
        merchant_id=None if row[4] is None else int(row[4]),
        points=abs(int(details.get("points", 0))),
        rates=dict(row[5]),
        details=details,
        legs=legs,
    )


def reversal_legs(original: list[Leg], whole: int, done: int, k: int) -> list[Leg]:
    """The share ``k`` (after ``done``) of ``whole`` of the original legs, negated."""
    legs = [
        Leg(
            leg.account_id,
            leg.asset_id,
            -(scale_amount(leg.amount, done + k, whole) - scale_amount(leg.amount, done, whole)),
        )
        for leg in original
    ]
    for asset, total in imbalances(legs).items():
        # Independent rounding may leave a micro-unit over; the largest leg absorbs it.
        i = max(
            (i for i, leg in enumerate(legs) if leg.asset_id == asset),
            key=lambda i: abs(legs[i].amount),
        )
        legs[i] = Leg(legs[i].account_id, asset, legs[i].amount - total)
    return [leg for leg in legs if leg.amount != 0]


async def _wallet_ids(conn: Conn, account_ids: list[int]) -> dict[int, int]:
    """Wallet accounts among ``account_ids`` → their currency."""
    cur = await conn.execute(
        "SELECT id, asset_id FROM accounts WHERE id = ANY(%s) AND kind = 'wallet'",
        (account_ids,),
    )
    return {int(r[0]): int(r[1]) for r in await cur.fetchall()}


async def _take_back(
    conn: Conn, original_id: int, wallet_id: int, amount: int, now: datetime
) -> list[tuple[int, int]]:
    """Lot moves taking ``amount`` points back: the original's own lots first, then the
    wallet's other lots soonest-expiring first (overdue lots already expired)."""
    own = await engine.entry_lots(conn, original_id, wallet_id)
    taken = allocate(own, amount)
    left = amount - sum(t for _, t in taken)
    if left > 0:
        others = await engine.lots_for_debit(
            conn, wallet_id, left, now, skip=[lot.id for lot in own]
        )
        taken += allocate(others, left)
    return [(lot_id, -t) for lot_id, t in taken]


async def _give_back(
    conn: Conn, original_id: int, wallet_id: int, amount: int
) -> list[tuple[int, int]]:
    """Lot moves returning ``amount`` points to the lots the original consumed."""
    cur = await conn.execute(
        "SELECT m.lot_id, sum(m.amount) FROM lot_moves m JOIN lots l ON l.id = m.lot_id"
        " WHERE l.wallet_id = %s AND (m.entry_id = %s OR (m.amount > 0 AND m.entry_id IN"
        "       (SELECT id FROM entries WHERE reverses_entry_id = %s)))"
        " GROUP BY m.lot_id",
        (wallet_id, original_id, original_id),
    )
    restorable = {int(lot): -int(total) for lot, total in await cur.fetchall() if int(total) < 0}
    cur = await conn.execute(
        "SELECT id, remaining, expires_at FROM lots WHERE id = ANY(%s)", (list(restorable),)
    )
    lots = [OpenLot(int(r[0]), restorable[int(r[0])], r[2]) for r in await cur.fetchall()]
    return [(lot_id, t) for lot_id, t in allocate(lots, amount)]


async def reverse(
    pool: Pool,
    actor: Actor,
    *,
    entry_id: int,
    points: int | None,
    idempotency_key: str,
    reason: str = "",
) -> Outcome:
    """Reverse ``points`` of entry ``entry_id`` (``None``: all that is not yet reversed)."""
    if actor.role != ADMIN and not actor.is_merchant:
        raise Forbidden("only the merchant that made an entry, or the hub, reverses it")
    if points is not None:
        check_points_field(points)
    reason = reason.strip()
    if len(reason) > 500 or not reason.isprintable():
        raise Refusal("INVALID_REASON", "a reason of at most 500 printable characters", "reason")
    request = {"entry": entry_id, "points": points, "reason": reason}

    async def body(conn: Conn, claim: Claim) -> int:
        now = clock.now()
        original = await _load_original(conn, entry_id)
        if original is None or (actor.role != ADMIN and original.initiator != actor.initiator):
            raise NotFound("entry", "entryId")
        if original.kind not in REVERSIBLE:
            raise Refusal(errors.NOT_REVERSIBLE, f"a {original.kind} entry cannot be reversed")
        cur = await conn.execute(
            "SELECT coalesce(sum((details->>'points')::bigint), 0) FROM entries"
            " WHERE reverses_entry_id = %s",
            (entry_id,),
        )
        row = await cur.fetchone()
        done = int(row[0]) if row else 0
        whole = original.points
        k = whole - done if points is None else points
        if k <= 0 or done + k > whole:
            raise Refusal(
                errors.REVERSAL_EXCEEDS_ORIGINAL,
                f"{whole - done} of {whole} points are left to reverse",
                "points",
            )
        legs = reversal_legs(original.legs, whole, done, k)
        wallets = await _wallet_ids(conn, [leg.account_id for leg in legs])
        balances = await engine.lock_wallets(conn, list(wallets))
        moves: dict[int, int] = defaultdict(int)
        assert original.member_id is not None
        for leg in legs:
            if leg.account_id not in wallets:
                continue
            w = leg.account_id
            await expire_overdue(
                conn,
                wallet_id=w,
                member_id=original.member_id,
                currency_id=wallets[w],
                lots=await engine.overdue_lots(conn, w, now),
                now=now,
            )
            if leg.amount < 0:
                planned = await _take_back(conn, entry_id, w, -leg.amount, now)
            else:
                balance = await engine.account_balance(conn, w)
                _, into_lots = credit_split(balance, leg.amount)
                planned = await _give_back(conn, entry_id, w, into_lots)
            for lot_id, amount in planned:
                moves[lot_id] += amount
        del balances
        posted = await engine.post(
            conn,
            EntryDraft(
                kind="reverse",
                initiator=claim.initiator,
                idempotency_key=claim.key,
                fingerprint=claim.fingerprint,
                effective_at=now,
                legs=legs,
                merchant_id=original.merchant_id,
                member_id=original.member_id,
                reverses_entry_id=original.id,
                rates=original.rates,
                details={
                    "reversedKind": original.kind,
                    "points": k,
                    "of": whole,
                    "reason": reason,
                    **{
                        name: original.details[name]
                        for name in ("currency", "from", "to")
                        if name in original.details
                    },
                },
                lot_moves=list(moves.items()),
            ),
        )
        return posted.entry_id

    return await idempotent(
        pool,
        initiator=actor.initiator,
        key=idempotency_key,
        operation="reverse",
        request=request,
        body=body,
    )
