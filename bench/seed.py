"""The bench's alliance: merchants issuing one currency each, their keys, members, tokens.

The catalogue (merchants, currencies, accounts, rates, API keys) goes through the real
services. Members and their links carry no ledger invariant, so they are inserted in bulk
with SQL: member ``i`` is ``m<i>`` to merchant 0 (the hot issuer) and to merchant
``i % merchants``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from exchange.config import Settings
from exchange.db.pool import create_pool
from exchange.domain.expiry import ExpiryPolicy
from exchange.keys import Secrets
from exchange.services import catalog
from exchange.services.actors import ADMIN, MERCHANT, Actor
from exchange.services.credentials import create_api_key, mint_member_token
from exchange.services.tx import Pool

ADMIN_ACTOR = Actor(role=ADMIN, subject="bench")
STRIPES = 32
RATE = Decimal("0.01")


def merchant_code(k: int) -> str:
    return f"bench-{k:03d}"


def currency_code(k: int) -> str:
    return f"P{k:03d}"


def customer_ref(i: int) -> str:
    return f"m{i}"


@dataclass
class Alliance:
    merchants: int
    members: int
    merchant_ids: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    member_ids: list[int] = field(default_factory=list)

    def merchant_of(self, i: int) -> int:
        """The spread merchant of member ``i``."""
        return i % self.merchants


async def seed(url: str, secrets: Secrets, *, merchants: int, members: int) -> Alliance:
    """Create the catalogue, one merchant API key each, and ``members`` linked members."""
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        alliance = Alliance(merchants=merchants, members=members)
        async with pool.connection() as conn:
            await catalog.bootstrap(conn, "CNY", STRIPES)
        for k in range(merchants):
            merchant = await catalog.create_merchant(
                pool, ADMIN_ACTOR, code=merchant_code(k), name=f"Bench {k}", stripes=STRIPES
            )
            actor = Actor(role=MERCHANT, merchant_id=merchant.id)
            await catalog.register_currency(
                pool,
                actor,
                code=currency_code(k),
                name=f"Bench points {k}",
                scale=0,
                rate=RATE,
                expiry=ExpiryPolicy("days", 365),
                stripes=STRIPES,
            )
            _info, key = await create_api_key(
                pool,
                ADMIN_ACTOR,
                pepper=secrets.api_key_pepper,
                role=MERCHANT,
                merchant_id=merchant.id,
                label="bench",
            )
            alliance.merchant_ids.append(merchant.id)
            alliance.keys.append(key)
        async with pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO members (created_at) SELECT now() FROM generate_series(1, %s)"
                " RETURNING id",
                (members,),
            )
            alliance.member_ids = sorted(int(r[0]) for r in await cur.fetchall())
            refs = [customer_ref(i) for i in range(members)]
            ids = alliance.member_ids
            hot = [alliance.merchant_ids[0]] * members
            spread = [alliance.merchant_ids[alliance.merchant_of(i)] for i in range(members)]
            await conn.execute(
                "INSERT INTO member_links (merchant_id, customer_ref, member_id)"
                " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[])"
                " ON CONFLICT DO NOTHING",
                (hot + spread, refs + refs, ids + ids),
            )
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute("ANALYZE")
        return alliance
    finally:
        await pool.close()


async def member_tokens(
    url: str, secrets: Secrets, settings: Settings, alliance: Alliance, count: int
) -> list[str]:
    """Access tokens (an hour) of the first ``count`` members, minted by merchant 0."""
    pool: Pool = await create_pool(url, min_size=1, max_size=2)
    actor = Actor(role=MERCHANT, merchant_id=alliance.merchant_ids[0])
    try:
        tokens = []
        for i in range(min(count, alliance.members)):
            issued = await mint_member_token(
                pool, actor, customer_ref(i), 3600, secrets=secrets, settings=settings
            )
            tokens.append(issued.token)
        return tokens
    finally:
        await pool.close()
