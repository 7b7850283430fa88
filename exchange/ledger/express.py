"""The express earn: claim the key, check a guess, write the entry: one statement, one commit.

The ordinary earn (:mod:`exchange.ledger.claims`) reads the currency's state and locks the
wallet before it builds the entry, then writes: two round trips inside a transaction. The
express earn builds the entry first, from what the process last saw (the currency's state,
the member's wallet id; see :mod:`exchange.ledger.facts`), and sends it in one
autocommitted statement that

1. claims the idempotency key (a twin waits here for the first to commit, then finds the
   key taken and writes nothing);
2. checks the guess under lock: the wallet's balance row is locked and must not be
   negative (a points debt changes the lot the earn opens), and the currency's state at the
   entry's time must equal the guess (active, the rate the value was computed with, issuer
   active, no exposure limit);
3. writes the entry, its postings and its lot only when both hold.

A claimed key with a failed guess raises ``EX007`` (``exchange_refuse_stale``), which rolls
the whole statement back, claim included: the caller forgets its guess and takes the
ordinary path. The database's own rules (zero sum, no negative wallet, asset match) apply
to the express entry exactly as to any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import psycopg

from exchange.ledger.engine import ENTRY_ROWS, Conn, EntryDraft, Posted, checked_params, posted_from
from exchange.ledger.facts import STATE_COLUMNS

STALE = "EX007"

_EXPRESS = f"""
WITH claim AS (
    INSERT INTO requests (initiator, idempotency_key, operation, fingerprint)
    VALUES (%(initiator)s, %(key)s, %(operation)s, %(fingerprint)s)
    ON CONFLICT DO NOTHING RETURNING 1
), ok AS (
    SELECT b.account_id
      FROM balances b
     WHERE b.account_id = %(wallet)s AND b.stripe = 0 AND b.amount >= 0
       AND EXISTS (SELECT FROM claim)
       AND EXISTS (
           SELECT FROM currencies c JOIN merchants m ON m.id = c.issuer_id
            WHERE c.id = %(currency)s
              AND ROW({STATE_COLUMNS}) IS NOT DISTINCT FROM
                  ROW(true, %(rate)s::numeric, true, NULL::bigint))
       FOR UPDATE OF b
), e AS (
    INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, merchant_id, member_id,
                         rates, details, effective_at)
    SELECT %(kind)s::text, %(initiator)s::text, %(key)s::text, %(fingerprint)s::bytea,
           %(merchant)s::bigint, %(member)s::bigint, %(rates)s::jsonb, %(details)s::jsonb,
           %(at)s::timestamptz
      FROM ok
    RETURNING id, recorded_at
), {ENTRY_ROWS}
SELECT c.n, e.id, e.recorded_at, ARRAY(SELECT id FROM l ORDER BY id),
       CASE WHEN c.n = 1 AND e.id IS NULL THEN exchange_refuse_stale(%(operation)s) END
  FROM (SELECT count(*) AS n FROM claim) AS c LEFT JOIN e ON true
"""


class Stale(Exception):
    """The guess an express entry was built on no longer holds; nothing was written."""


@dataclass(frozen=True)
class Guess:
    """What an express earn assumes: the wallet, and the currency's rate (active, issuer
    active, no exposure limit)."""

    wallet_id: int
    currency_id: int
    rate: Decimal


async def post_earn(conn: Conn, draft: EntryDraft, operation: str, guess: Guess) -> Posted | None:
    """Claim ``draft``'s key and write it if ``guess`` holds, in one statement.

    ``conn`` must be in autocommit mode: the statement is its own transaction. Returns the
    written entry, or ``None`` when the key was claimed before (nothing was written; read
    the earlier outcome). Raises :class:`Stale` when the guess failed.
    """
    assert conn.autocommit, "the express statement commits itself"
    assert not draft.lot_moves
    assert not any(lot.repays_debt for lot in draft.new_lots)
    params = checked_params(draft)
    params.update(
        operation=operation,
        wallet=guess.wallet_id,
        currency=guess.currency_id,
        rate=guess.rate,
    )
    try:
        cur = await conn.execute(_EXPRESS, params)
    except psycopg.Error as exc:
        if exc.sqlstate == STALE:
            raise Stale(str(exc)) from exc
        raise
    row = await cur.fetchone()
    assert row is not None
    if not row[0]:
        return None
    return posted_from(row[1:4], draft)
