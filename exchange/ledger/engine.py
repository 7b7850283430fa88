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
    draft: EntryDraft | None = None
    """What was written (the entry's row is ``draft`` plus ``entry_id`` and ``recorded_at``)."""


def entry_rows(wallet: str | None = None) -> str:
    """The rows of entry ``e`` (a CTE returning ``id``), taken from parameter ``doc`` (see
    :func:`checked_params`): postings, new lots (CTE ``l`` returns their ids) and lot moves.

    ``wallet``: a CTE with one row whose ``account_id`` stands in for account ``0`` in the
    postings and lots (a wallet the statement itself found); the postings are then numbered
    again in ascending account id, the order :func:`checked_params` gives them.
    """
    legs = (
        "jsonb_to_recordset(d.doc->'postings')"
        " AS t(seq smallint, account_id bigint, asset_id int, amount bigint)"
    )
    if wallet is None:
        postings = f"""SELECT e.id, t.seq, t.account_id, t.asset_id, t.amount
      FROM e, d, {legs}
     ORDER BY t.seq"""
        holder, sources = "t.wallet_id", "e, d"
    else:
        postings = f"""SELECT e.id, row_number() OVER (ORDER BY x.account_id, x.asset_id),
           x.account_id, x.asset_id, x.amount
      FROM e, (SELECT coalesce(nullif(t.account_id, 0), {wallet}.account_id) AS account_id,
                      t.asset_id, t.amount
                 FROM d, {wallet}, {legs}) AS x
     ORDER BY 2"""
        holder = f"coalesce(nullif(t.wallet_id, 0), {wallet}.account_id)"
        sources = f"e, d, {wallet}"
    return f"""
d AS (
    SELECT %(doc)s::jsonb AS doc
), p AS (
    INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)
    {postings}
), l AS (
    INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at, expires_at)
    SELECT {holder}, e.id, t.amount, t.amount, %(at)s, t.expires_at
      FROM {sources}, jsonb_to_recordset(d.doc->'lots')
           AS t(ord int, wallet_id bigint, amount bigint, expires_at timestamptz)
     ORDER BY t.ord
    RETURNING id
), m AS (
    INSERT INTO lot_moves (entry_id, lot_id, amount)
    SELECT e.id, t.lot_id, t.amount
      FROM e, d, jsonb_to_recordset(d.doc->'moves') AS t(lot_id bigint, amount bigint)
)
"""


_POST = f"""
WITH e AS (
    INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, merchant_id, member_id,
                         reverses_entry_id, quote_id, rates, details, effective_at)
    VALUES (%(kind)s, %(initiator)s, %(key)s, %(fingerprint)s, %(merchant)s, %(member)s,
            %(reverses)s, %(quote)s, %(rates)s, %(details)s, %(at)s)
    RETURNING id, recorded_at
), {entry_rows()}
SELECT e.id, e.recorded_at, ARRAY(SELECT id FROM l ORDER BY id) FROM e
"""
"""One statement writes the entry, its postings (in ascending account id, the lock order of
hot balance rows: the triggers run at the end of the statement in insertion order), the
lots it opens and the moves of existing lots. The rows travel as one JSON document (one
parameter), which is cheaper to send than nine arrays."""

_INSERT_LOT_MOVES = """
INSERT INTO lot_moves (entry_id, lot_id, amount)
SELECT %s, t.lot_id, t.amount FROM unnest(%s::bigint[], %s::bigint[]) AS t(lot_id, amount)
"""


def checked_legs(draft: EntryDraft) -> list[Leg]:
    """``draft``'s legs merged per account in ascending account id, once checked to sum to
    zero per asset."""
    legs = merge_legs(draft.legs)
    bad = imbalances(legs)
    if bad:
        raise UnbalancedEntry(f"{draft.kind} entry does not balance: {bad}")
    if not legs:
        raise UnbalancedEntry(f"{draft.kind} entry has no postings")
    return legs


def checked_params(draft: EntryDraft) -> dict[str, Any]:
    """The parameters of :data:`_POST` for ``draft``, once the draft is checked."""
    legs = checked_legs(draft)
    moves = [(lot_id, amount) for lot_id, amount in draft.lot_moves if amount != 0]
    return {
        "kind": draft.kind,
        "initiator": draft.initiator,
        "key": draft.idempotency_key,
        "fingerprint": draft.fingerprint,
        "merchant": draft.merchant_id,
        "member": draft.member_id,
        "reverses": draft.reverses_entry_id,
        "quote": draft.quote_id,
        "rates": json.dumps(draft.rates, sort_keys=True),
        "details": json.dumps(draft.details, sort_keys=True),
        "at": draft.effective_at,
        "doc": json.dumps(
            {
                "postings": [
                    {
                        "seq": i,
                        "account_id": g.account_id,
                        "asset_id": g.asset_id,
                        "amount": g.amount,
                    }
                    for i, g in enumerate(legs, 1)
                ],
                "lots": [
                    {
                        "ord": i,
                        "wallet_id": lot.wallet_id,
                        "amount": lot.amount,
                        "expires_at": None
                        if lot.expires_at is None
                        else lot.expires_at.isoformat(),
                    }
                    for i, lot in enumerate(draft.new_lots, 1)
                ],
                "moves": [{"lot_id": lot_id, "amount": amount} for lot_id, amount in moves],
            }
        ),
    }


def posted_from(row: Any, draft: EntryDraft) -> Posted:
    assert row is not None
    lot_ids = tuple(int(i) for i in row[2])
    assert len(lot_ids) == len(draft.new_lots)
    return Posted(entry_id=int(row[0]), recorded_at=row[1], lot_ids=lot_ids, draft=draft)


async def post(conn: Conn, draft: EntryDraft) -> Posted:
    """Write ``draft`` in the caller's transaction and return the new entry's id.

    One round trip in the common case; a second one only when a new lot starts by repaying
    a points debt (its move needs the new lot's id).
    """
    cur = await conn.execute(_POST, checked_params(draft))
    posted = posted_from(await cur.fetchone(), draft)
    repays = [
        (lot_id, -lot.repays_debt)
        for lot_id, lot in zip(posted.lot_ids, draft.new_lots, strict=True)
        if lot.repays_debt
    ]
    if repays:
        await conn.execute(
            _INSERT_LOT_MOVES,
            (posted.entry_id, [m[0] for m in repays], [m[1] for m in repays]),
        )
    return posted


class PendingPost:
    """An entry sent to the database whose result is read later (see :func:`post_queued`)."""

    def __init__(self, draft: EntryDraft, cursor: Any = None, posted: Posted | None = None):
        self.draft = draft
        self._cursor = cursor
        self._posted = posted

    async def result(self) -> Posted:
        """The written entry; in pipeline mode, call it once the pipeline has synced."""
        if self._posted is None:
            self._posted = posted_from(await self._cursor.fetchone(), self.draft)
        return self._posted


async def post_queued(conn: Conn, draft: EntryDraft) -> PendingPost:
    """:func:`post`, without waiting for the answer when ``conn`` is in pipeline mode.

    The statement is queued with what follows it (the ``COMMIT``), so writing an entry and
    committing cost one round trip together. A draft whose new lot repays a points debt
    needs the lot's id for a second statement, so it is posted (and waited for) at once.
    """
    if any(lot.repays_debt for lot in draft.new_lots):
        return PendingPost(draft, posted=await post(conn, draft))
    cur = await conn.execute(_POST, checked_params(draft))
    return PendingPost(draft, cursor=cur)


async def lock_member_wallet(conn: Conn, member_id: int, asset_id: int) -> tuple[int, int] | None:
    """Find and lock a member's wallet in one statement: ``(account id, balance)``, or ``None``
    when the member has no wallet in that asset."""
    cur = await conn.execute(
        "SELECT b.account_id, b.amount FROM accounts a"
        "  JOIN balances b ON b.account_id = a.id AND b.stripe = 0"
        " WHERE a.kind = 'wallet' AND a.asset_id = %s AND a.member_id = %s"
        " FOR UPDATE OF b",
        (asset_id, member_id),
    )
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


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


_LOT = "SELECT id, remaining, expires_at FROM lots"

# The live points before each lot in consumption order (soonest-expiring first, lots that
# never expire last, ties by id: the order of ``ix_lots_open``). Overdue lots sort first and
# count nothing, so they are always read; live lots are read only while the ones before them
# hold fewer than the points asked. The index scan stops after ``first`` lots (``NULL``: it
# does not stop).
_LOTS_FOR_DEBIT = (
    "SELECT id, remaining, expires_at FROM ("
    "  SELECT id, remaining, expires_at,"
    "         coalesce(sum(remaining) FILTER (WHERE expires_at IS NULL OR expires_at > %(now)s)"
    "           OVER (ORDER BY expires_at NULLS LAST, id"
    "                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before"
    "    FROM (SELECT id, remaining, expires_at FROM lots"
    "           WHERE wallet_id = %(wallet)s AND remaining > 0"
    "             AND id <> ALL(%(skip)s::bigint[])"
    "           ORDER BY expires_at NULLS LAST, id LIMIT %(first)s) l) s"
    " WHERE before < %(points)s"
    " ORDER BY expires_at NULLS LAST, id"
)


async def lots_for_debit(
    conn: Conn,
    wallet_id: int,
    points: int,
    now: datetime,
    skip: Sequence[int] = (),
    first: int = 100,
) -> list[OpenLot]:
    """The lots a debit of ``points`` needs to see (call with the wallet locked).

    Every overdue lot (``expires_at <= now``), then the live lots in consumption order up to
    and including the one that brings them to ``points``; all live lots when they hold fewer.
    ``skip``: lot ids left out. The first ``first`` lots in that order are read; only when
    they are all needed and still fall short are the rest read, so a debit in a wallet of
    thousands of lots reads a few of them, in the database as on the wire.
    """
    params: dict[str, Any] = {
        "wallet": wallet_id,
        "points": points,
        "now": now,
        "skip": list(skip),
        "first": first,
    }
    lots = await _lots(conn, _LOTS_FOR_DEBIT, params)
    if len(lots) == first and _live(lots, now) < points:
        params["first"] = None
        lots = await _lots(conn, _LOTS_FOR_DEBIT, params)
    return lots


def _live(lots: list[OpenLot], now: datetime) -> int:
    return sum(lot.remaining for lot in lots if not lot.overdue(now))


async def _lots(conn: Conn, sql: str, params: Any) -> list[OpenLot]:
    cur = await conn.execute(sql, params)
    return [OpenLot(int(r[0]), int(r[1]), r[2]) for r in await cur.fetchall()]


async def overdue_lots(
    conn: Conn, wallet_id: int, now: datetime, limit: int | None = None
) -> list[OpenLot]:
    """The wallet's lots with points left whose expiry has come, soonest-expired first; at
    most ``limit`` of them (``None``: all). Call with the wallet locked."""
    return await _lots(
        conn,
        _LOT + " WHERE wallet_id = %s AND remaining > 0 AND expires_at <= %s"
        " ORDER BY expires_at, id LIMIT %s",
        (wallet_id, now, limit),
    )


async def entry_lots(conn: Conn, entry_id: int, wallet_id: int) -> list[OpenLot]:
    """The lots entry ``entry_id`` opened in the wallet that still hold points."""
    return await _lots(
        conn,
        _LOT + " WHERE entry_id = %s AND wallet_id = %s AND remaining > 0",
        (entry_id, wallet_id),
    )


async def account_balance(conn: Conn, account_id: int) -> int:
    cur = await conn.execute(
        "SELECT coalesce(sum(amount), 0) FROM balances WHERE account_id = %s", (account_id,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
