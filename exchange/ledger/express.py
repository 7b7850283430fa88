"""The express earn: claim the key, check a guess, write the entry: one statement, one commit.

The ordinary earn (:mod:`exchange.ledger.claims`) reads the currency's state and locks the
wallet before it builds the entry, then writes: two round trips inside a transaction. The
express earn builds the entry first, on the currency's state as this process last saw it
(see :mod:`exchange.ledger.facts`), with account ``0`` standing for the member's wallet,
and sends it in one autocommitted statement that

1. claims the idempotency key (a twin waits here for the first to commit, then finds the
   key taken and writes nothing);
2. checks the guess: the currency's state at the entry's time must equal it (active, the
   rate the value was computed with, issuer active, no exposure limit);
3. finds and locks the member's wallet in the currency, which must exist and must not be
   negative (a points debt changes the lot an earn opens);
4. writes the entry, its postings and its lot, the wallet in place of account ``0``, only
   when all of that holds.

A claimed key that fails a check raises ``EX007`` (``exchange_refuse_stale``), which rolls
the whole statement back, claim included: the caller takes the ordinary path (and forgets
its guess when the state was the cause). The database's own rules (zero sum, no negative
wallet, asset match) apply to the express entry as to any other.

:func:`post_earns` does the same for several earns in one statement (concurrent requests of
one process, gathered by :mod:`exchange.services.express_batches`): it checks every guess
first (without locks, in the statement's snapshot), claims the keys of the earns that pass
in ``(initiator, key)`` order, locks their wallets in ascending account id and writes them;
an earn that failed its check is answered as stale (its key unclaimed) and takes the
ordinary path on its own. Only a wallet that went into debt between the check and its lock
refuses the whole statement (``EX007``); its earns are then tried again alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import psycopg

from exchange.domain.canonical import compact
from exchange.domain.entries import merge_legs
from exchange.ledger.engine import (
    Conn,
    EntryDraft,
    Posted,
    checked_legs,
    checked_params,
    entry_rows,
    posted_from,
)
from exchange.ledger.facts import STATE_COLUMNS

STALE = "EX007"
_JSON = compact()
"""The items of a shared earn statement as one JSON document."""
WALLET = 0
"""The account id standing for the member's wallet in an express draft."""

_EXPRESS = f"""
WITH claim AS (
    INSERT INTO requests (initiator, idempotency_key, operation, fingerprint)
    VALUES (%(initiator)s, %(key)s, %(operation)s, %(fingerprint)s)
    ON CONFLICT DO NOTHING RETURNING 1
), st AS (
    SELECT ROW({STATE_COLUMNS}) IS NOT DISTINCT FROM
           ROW(true, %(rate)s::numeric, true, NULL::bigint) AS fresh
      FROM currencies c JOIN merchants m ON m.id = c.issuer_id
     WHERE c.id = %(currency)s
), w AS (
    SELECT b.account_id
      FROM accounts a JOIN balances b ON b.account_id = a.id AND b.stripe = 0
     WHERE a.kind = 'wallet' AND a.asset_id = %(currency)s AND a.member_id = %(member)s
       AND b.amount >= 0
       AND EXISTS (SELECT FROM claim) AND (SELECT fresh FROM st)
       FOR UPDATE OF b
), e AS (
    INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, merchant_id, member_id,
                         rates, details, effective_at)
    SELECT %(kind)s::text, %(initiator)s::text, %(key)s::text, %(fingerprint)s::bytea,
           %(merchant)s::bigint, %(member)s::bigint, %(rates)s::jsonb, %(details)s::jsonb,
           %(at)s::timestamptz
      FROM w
    RETURNING id, recorded_at
), {entry_rows("w")}
SELECT c.n, e.id, e.recorded_at, ARRAY(SELECT id FROM l ORDER BY id), w.account_id,
       CASE WHEN c.n = 1 AND e.id IS NULL THEN exchange_refuse_stale(
           CASE WHEN (SELECT fresh FROM st) THEN 'wallet' ELSE 'state' END) END
  FROM (SELECT count(*) AS n FROM claim) AS c LEFT JOIN e ON true LEFT JOIN w ON true
"""


class Stale(Exception):
    """The guess an express entry was built on did not hold; nothing was written."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause
        """``state`` (the currency's), ``wallet`` (missing or in debt) or ``batch`` (some
        earn of a :func:`post_earns` statement: each must be tried alone)."""
        self.state = cause == "state"
        """True when the currency's state was the cause."""


@dataclass(frozen=True)
class Guess:
    """What an express earn assumes of its currency: active, issuer active, no exposure
    limit, and this rate in force."""

    currency_id: int
    rate: Decimal


async def post_earn(conn: Conn, draft: EntryDraft, operation: str, guess: Guess) -> Posted | None:
    """Claim ``draft``'s key and write it if ``guess`` holds, in one statement.

    ``draft`` names the member's wallet as account :data:`WALLET`. ``conn`` must be in
    autocommit mode: the statement is its own transaction. Returns the written entry (its
    draft naming the real wallet), or ``None`` when the key was claimed before (nothing was
    written; read the earlier outcome). Raises :class:`Stale` when the guess failed.
    """
    assert conn.autocommit, "the express statement commits itself"
    assert not draft.lot_moves
    assert not any(lot.repays_debt for lot in draft.new_lots)
    params = checked_params(draft)
    params.update(operation=operation, currency=guess.currency_id, rate=guess.rate)
    try:
        cur = await conn.execute(_EXPRESS, params)
    except psycopg.Error as exc:
        if exc.sqlstate == STALE:
            diag = exc.diag.message_primary or ""
            raise Stale("wallet" if diag.endswith("wallet") else "state") from exc
        raise
    row = await cur.fetchone()
    assert row is not None
    if not row[0]:
        return None
    return posted_from(row[1:4], _naming_wallet(draft, int(row[4])))


def _naming_wallet(draft: EntryDraft, wallet_id: int) -> EntryDraft:
    """``draft`` with the wallet's real account id in place of :data:`WALLET` (legs in
    ascending account id, as written)."""
    return replace(
        draft,
        legs=merge_legs(
            replace(g, account_id=wallet_id) if g.account_id == WALLET else g for g in draft.legs
        ),
        new_lots=[
            replace(lot, wallet_id=wallet_id) if lot.wallet_id == WALLET else lot
            for lot in draft.new_lots
        ],
    )


_EXPRESS_MANY = """
WITH i AS (
    SELECT t.*
      FROM jsonb_to_recordset(%(items)s::jsonb)
           AS t(ord int, initiator text, key text, fp text, merchant bigint, member bigint,
                currency int, rate numeric, at timestamptz, rates jsonb, details jsonb,
                legs jsonb, points bigint, expires_at timestamptz)
), chk AS MATERIALIZED (
    SELECT i.ord,
           coalesce(ROW(c.active,
                        (SELECT r.rate FROM rates r
                          WHERE r.currency_id = c.id AND r.effective_at <= i.at
                          ORDER BY r.effective_at DESC LIMIT 1),
                        m.status = 'active', m.exposure_limit_micro)
                    IS NOT DISTINCT FROM ROW(true, i.rate, true, NULL::bigint), false) AS fresh,
           coalesce((SELECT b.amount >= 0 FROM accounts a
                        JOIN balances b ON b.account_id = a.id AND b.stripe = 0
                       WHERE a.kind = 'wallet' AND a.asset_id = i.currency
                         AND a.member_id = i.member), false) AS wallet
      FROM i
      LEFT JOIN currencies c ON c.id = i.currency
      LEFT JOIN merchants m ON m.id = c.issuer_id
), claim AS (
    INSERT INTO requests (initiator, idempotency_key, operation, fingerprint)
    SELECT i.initiator, i.key, %(operation)s, decode(i.fp, 'hex')
      FROM i JOIN chk ON chk.ord = i.ord
     WHERE chk.fresh AND chk.wallet
     ORDER BY i.initiator, i.key
    ON CONFLICT DO NOTHING RETURNING initiator, idempotency_key
), ci AS MATERIALIZED (
    SELECT i.* FROM i JOIN claim c ON c.initiator = i.initiator AND c.idempotency_key = i.key
), w AS (
    SELECT ci.ord, b.account_id
      FROM ci
      JOIN accounts a ON a.kind = 'wallet' AND a.asset_id = ci.currency
                     AND a.member_id = ci.member
      JOIN balances b ON b.account_id = a.id AND b.stripe = 0
     WHERE b.amount >= 0
     ORDER BY b.account_id
       FOR UPDATE OF b
), e AS (
    INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, merchant_id, member_id,
                         rates, details, effective_at)
    SELECT %(kind)s::text, ci.initiator, ci.key, decode(ci.fp, 'hex'), ci.merchant, ci.member,
           ci.rates, ci.details, ci.at
      FROM ci JOIN w ON w.ord = ci.ord
     ORDER BY ci.ord
    RETURNING id, initiator, idempotency_key, recorded_at
), ew AS MATERIALIZED (
    SELECT e.id, e.recorded_at, ci.ord, ci.legs, ci.points, ci.at, ci.expires_at,
           w.account_id AS wallet
      FROM e JOIN ci ON ci.initiator = e.initiator AND ci.key = e.idempotency_key
      JOIN w ON w.ord = ci.ord
), p AS (
    INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)
    SELECT ew.id, row_number() OVER (PARTITION BY ew.id ORDER BY x.account_id, x.asset_id),
           x.account_id, x.asset_id, x.amount
      FROM ew, LATERAL (
           SELECT coalesce(nullif(t.account_id, 0), ew.wallet) AS account_id, t.asset_id,
                  t.amount
             FROM jsonb_to_recordset(ew.legs) AS t(account_id bigint, asset_id int,
                                                  amount bigint)) AS x
     ORDER BY 1, 2
), l AS (
    INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at, expires_at)
    SELECT ew.wallet, ew.id, ew.points, ew.points, ew.at, ew.expires_at FROM ew ORDER BY ew.id
    RETURNING id, entry_id
)
SELECT i.ord, c.idempotency_key IS NOT NULL, ew.id, ew.recorded_at, l.id, ew.wallet,
       chk.fresh, chk.wallet,
       CASE WHEN (SELECT count(*) FROM ci) <> (SELECT count(*) FROM ew)
            THEN exchange_refuse_stale('batch') END
  FROM i
  JOIN chk ON chk.ord = i.ord
  LEFT JOIN claim c ON c.initiator = i.initiator AND c.idempotency_key = i.key
  LEFT JOIN ew ON ew.ord = i.ord
  LEFT JOIN l ON l.entry_id = ew.id
 ORDER BY i.ord
"""
"""Several express earns in one statement; one row per earn, in the order given.

The wallet check is a scalar subquery, looked up by index per earn. Written as ``EXISTS``
the planner (which guesses 100 rows for ``jsonb_to_recordset``) hashed every wallet of the
hub instead, on every call: a cost that grew with the number of wallets.
"""


def _express_item(ord_: int, draft: EntryDraft, guess: Guess) -> dict[str, object]:
    legs = checked_legs(draft)  # refuses an unbalanced draft before anything is sent
    assert not draft.lot_moves
    (lot,) = draft.new_lots
    assert lot.wallet_id == WALLET
    assert not lot.repays_debt
    return {
        "ord": ord_,
        "initiator": draft.initiator,
        "key": draft.idempotency_key,
        "fp": draft.fingerprint.hex(),
        "merchant": draft.merchant_id,
        "member": draft.member_id,
        "currency": guess.currency_id,
        "rate": str(guess.rate),
        "at": draft.effective_at.isoformat(),
        "rates": draft.rates,
        "details": draft.details,
        "legs": [
            {"account_id": g.account_id, "asset_id": g.asset_id, "amount": g.amount} for g in legs
        ],
        "points": lot.amount,
        "expires_at": None if lot.expires_at is None else lot.expires_at.isoformat(),
    }


async def post_earns(
    conn: Conn, drafts: Sequence[EntryDraft], guesses: Sequence[Guess], operation: str
) -> list[Posted | Stale | None]:
    """:func:`post_earn` for several earns in one statement.

    The drafts must have distinct ``(initiator, key)`` and one ``kind``, each opening
    exactly one lot in the wallet :data:`WALLET` and moving no other lot. One result per
    draft, in order: the written entry; ``None`` when its key was claimed before; a
    :class:`Stale` when its guess failed (its key is left unclaimed, nothing is written for
    it). The guesses are checked before any key is claimed; a wallet that went into debt
    between that check and its lock (a reversal committed meanwhile) refuses the whole
    statement: :class:`Stale` (cause ``"batch"``) is raised and nothing is written.
    """
    assert conn.autocommit, "the express statement commits itself"
    assert len(drafts) == len(guesses)
    assert drafts
    assert len({(d.initiator, d.idempotency_key) for d in drafts}) == len(drafts)
    assert all(d.kind == drafts[0].kind for d in drafts)
    items = [_express_item(n, d, g) for n, (d, g) in enumerate(zip(drafts, guesses, strict=True))]
    params = {
        "items": _JSON(items),
        "operation": operation,
        "kind": drafts[0].kind,
    }
    try:
        cur = await conn.execute(_EXPRESS_MANY, params)
    except psycopg.Error as exc:
        if exc.sqlstate == STALE:
            raise Stale("batch") from exc
        raise
    out: list[Posted | Stale | None] = []
    for draft, row in zip(drafts, await cur.fetchall(), strict=True):
        claimed, fresh, wallet_ok = row[1], row[6], row[7]
        if not fresh:
            out.append(Stale("state"))
        elif not wallet_ok:
            out.append(Stale("wallet"))
        elif not claimed:
            out.append(None)
        else:
            out.append(
                Posted(
                    entry_id=int(row[2]),
                    recorded_at=row[3],
                    lot_ids=(int(row[4]),),
                    draft=_naming_wallet(draft, int(row[5])),
                )
            )
    return out
