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
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

import psycopg

from exchange.domain.entries import merge_legs
from exchange.ledger.engine import Conn, EntryDraft, Posted, checked_params, entry_rows, posted_from
from exchange.ledger.facts import STATE_COLUMNS

STALE = "EX007"
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
        self.state = cause != "wallet"
        """True when the currency's state was the cause (else the wallet: missing or in
        debt)."""


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
