"""Claim an idempotency key, read a currency's state and lock a member's wallet: one statement.

The hot operations (earn, redeem) begin the same way: claim the request's key, read the
changing part of the currency (rate in force, active flags, exposure limit) and lock the
member's wallet in that currency. Doing all three in one statement costs one round trip.
The wallet is locked only once the key is claimed (its scan waits for the claim), so a
request that replays an earlier one, or waits for a concurrent twin, never holds a wallet
lock while it waits for a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from exchange.ledger import idempotency
from exchange.ledger.accounts import Currency
from exchange.ledger.engine import Conn
from exchange.ledger.facts import STATE_COLUMNS, CurrencyFacts, currency_from_state

_CLAIM_AND_LOCK = f"""
WITH claim AS (
    INSERT INTO requests (initiator, idempotency_key, operation, fingerprint)
    VALUES (%(initiator)s, %(key)s, %(operation)s, %(fingerprint)s)
    ON CONFLICT DO NOTHING RETURNING 1
), w AS (
    SELECT b.account_id, b.amount
      FROM accounts a JOIN balances b ON b.account_id = a.id AND b.stripe = 0
     WHERE a.kind = 'wallet' AND a.asset_id = %(currency)s AND a.member_id = %(member)s
       AND EXISTS (SELECT FROM claim)
       FOR UPDATE OF b
)
SELECT (SELECT count(*) FROM claim), {STATE_COLUMNS}, w.account_id, w.amount
  FROM currencies c JOIN merchants m ON m.id = c.issuer_id LEFT JOIN w ON true
 WHERE c.id = %(currency)s
"""


@dataclass(frozen=True)
class Claimed:
    """What :func:`claim_and_lock_wallet` found once it held the key."""

    currency: Currency
    """The currency with its state at the requested time."""
    wallet: tuple[int, int] | None
    """``(account id, balance)`` of the member's wallet, locked; ``None``: no wallet yet."""


async def claim_and_lock_wallet(
    conn: Conn,
    *,
    initiator: str,
    key: str,
    operation: str,
    digest: bytes,
    facts: CurrencyFacts,
    member_id: int,
    at: datetime,
) -> tuple[idempotency.Prior | None, Claimed | None]:
    """Claim ``key``; then read ``facts``' currency state at ``at`` and lock the wallet.

    Returns the earlier outcome when the key was taken (and nothing else), else what was
    found with the key held.
    """
    cur = await conn.execute(
        _CLAIM_AND_LOCK,
        {
            "initiator": initiator,
            "key": key,
            "operation": operation,
            "fingerprint": digest,
            "currency": facts.id,
            "member": member_id,
            "at": at,
        },
    )
    row = await cur.fetchone()
    assert row is not None, "the currency of cached facts exists"
    if not row[0]:
        return await idempotency.prior(conn, initiator, key, operation, digest), None
    wallet = None if row[5] is None else (int(row[5]), int(row[6]))
    return None, Claimed(currency_from_state(facts, row, 1), wallet)
