"""The posting engine: the one way an entry reaches the ledger.

Every operation builds an :class:`EntryDraft` and hands it to :func:`post` inside its
transaction. ``post`` checks the draft (zero sum per asset, no zero legs), writes the entry,
its postings (the database moves balances and checks the zero sum again at commit), the
lots it opens and the lot moves it makes.

Lock protocol (deadlock-free by construction): a transaction first locks the wallet rows
it touches, in ascending account id (:func:`lock_wallets`); then it inserts its postings in
ascending account id, which updates one stripe of each hot account in that order. No
transaction waits for a wallet while holding a stripe.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from exchange.domain.entries import Leg, imbalances, merge_legs
from exchange.domain.lots import OpenLot

Conn = AsyncConnection[Any]


class UnbalancedEntry(AssertionError):
    """A drafted entry does not sum to zero: a bug in the operation that built it."""


@dataclass(frozen=True)
class NewLot:
    wallet_id: int
    amount: int
    expires_at: datetime | None
    repays_debt: int = 0
    """Part of ``amount`` that went to repay a points debt (the lot starts with the rest)."""


@dataclass
class EntryDraft:
    kind: str
    initiator: str
    idempotency_key: str
    fingerprint: bytes
    effective_at: datetime
    legs: list[Leg]
    merchant_id: int | None = None
    member_id: int | None = None
    reverses_entry_id: int | None = None
    quote_id: int | None = None
    rates: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    new_lots: list[NewLot] = field(default_factory=list)
    lot_moves: list[tuple[int, int]] = field(default_factory=list)
    """``(lot_id, amount)``: negative consumes, positive restores."""


@dataclass(frozen=True)
class Posted:
    entry_id: int
    recorded_at: datetime
    lot_ids: tuple[int, ...]


_INSERT_ENTRY = """
INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, merchant_id, member_id,
                     reverses_entry_id, quote_id, rates, details, effective_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING id, recorded_at
"""

_INSERT_POSTINGS = """
INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)
SELECT %s, t.seq, t.account_id, t.asset_id, t.amount
  FROM unnest(%s::smallint[], %s::bigint[], %s::int[], %s::bigint[])
       AS t(seq, account_id, asset_id, amount)
"""

_INSERT_LOT_MOVES = """
INSERT INTO lot_moves (entry_id, lot_id, amount)
SELECT %s, t.lot_id, t.amount FROM unnest(%s::bigint[], %s::bigint[]) AS t(lot_id, amount)
"""

_INSERT_LOT = """
INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
"""


async def post(conn: Conn, draft: EntryDraft) -> Posted:
    """Write ``draft`` in the caller's transaction and return the new entry's id."""
    legs = merge_legs(draft.legs)
    bad = imbalances(legs)
    if bad:
        raise UnbalancedEntry(f"{draft.kind} entry does not balance: {bad}")
    if not legs:
        raise UnbalancedEntry(f"{draft.kind} entry has no postings")
    cur = await conn.execute(
        _INSERT_ENTRY,
        (
            draft.kind,
            draft.initiator,
            draft.idempotency_key,
            draft.fingerprint,
            draft.merchant_id,
            draft.member_id,
            draft.reverses_entry_id,
            draft.quote_id,
            json.dumps(draft.rates, sort_keys=True),
            json.dumps(draft.details, sort_keys=True),
            draft.effective_at,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    entry_id, recorded_at = int(row[0]), row[1]
    await conn.execute(
        _INSERT_POSTINGS,
        (
            entry_id,
            list(range(1, len(legs) + 1)),
            [leg.account_id for leg in legs],
            [leg.asset_id for leg in legs],
            [leg.amount for leg in legs],
        ),
    )
    moves = list(draft.lot_moves)
    lot_ids: list[int] = []
    for lot in draft.new_lots:
        cur = await conn.execute(
            _INSERT_LOT,
            (lot.wallet_id, entry_id, lot.amount, lot.amount, draft.effective_at, lot.expires_at),
        )
        lot_row = await cur.fetchone()
        assert lot_row is not None
        lot_ids.append(int(lot_row[0]))
        if lot.repays_debt:
            moves.append((int(lot_row[0]), -lot.repays_debt))
    moves = [(lot_id, amount) for lot_id, amount in moves if amount != 0]
    if moves:
        await conn.execute(
            _INSERT_LOT_MOVES,
            (entry_id, [m[0] for m in moves], [m[1] for m in moves]),
        )
    return Posted(entry_id=entry_id, recorded_at=recorded_at, lot_ids=tuple(lot_ids))


async def lock_wallets(conn: Conn, wallet_ids: Sequence[int]) -> dict[int, int]:
    """Lock wallet balance rows in ascending id order; return their balances."""
    ids = sorted(set(wallet_ids))
    cur = await conn.execute(
        "SELECT account_id, amount FROM balances WHERE account_id = ANY(%s) AND stripe = 0"
        " ORDER BY account_id FOR UPDATE",
        (ids,),
    )
    found = {int(r[0]): int(r[1]) for r in await cur.fetchall()}
    missing = set(ids) - set(found)
    if missing:
        raise LookupError(f"no balance row for wallets {sorted(missing)}")
    return found


async def open_lots(conn: Conn, wallet_id: int) -> list[OpenLot]:
    """The wallet's lots with points left (call with the wallet locked)."""
    cur = await conn.execute(
        "SELECT id, remaining, expires_at FROM lots WHERE wallet_id = %s AND remaining > 0"
        " ORDER BY expires_at NULLS LAST, id",
        (wallet_id,),
    )
    return [OpenLot(int(r[0]), int(r[1]), r[2]) for r in await cur.fetchall()]


async def account_balance(conn: Conn, account_id: int) -> int:
    cur = await conn.execute(
        "SELECT coalesce(sum(amount), 0) FROM balances WHERE account_id = %s", (account_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
