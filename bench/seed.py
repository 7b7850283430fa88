"""The bench's alliance: merchants issuing one currency each, their keys, members, points.

The catalogue (merchants, currencies, accounts, rates, API keys) goes through the real
services. Members and their links carry no ledger invariant, so they are inserted in bulk
with SQL: member ``i`` is customer ``m<i>`` of the first :data:`BATCH_MERCHANTS` merchants
(merchant 0 is the hot issuer) and of merchant ``i % merchants``.

Points reach wallets only through :func:`exchange.services.bulk.earn_many` (the real
posting path, triggers included): :func:`award` spreads a plan of earns over calls of up
to 1,000 items, two calls at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from bench.pg import BenchError
from exchange.config import Settings
from exchange.db.pool import create_pool
from exchange.domain.expiry import ExpiryPolicy
from exchange.finance.chain import seal
from exchange.keys import Secrets
from exchange.services import catalog
from exchange.services.actors import ADMIN, MERCHANT, Actor
from exchange.services.bulk import MAX_ITEMS, EarnItem, earn_many
from exchange.services.credentials import create_api_key, mint_member_token
from exchange.services.tx import Pool

ADMIN_ACTOR = Actor(role=ADMIN, subject="bench")
STRIPES = 32
RATE = Decimal("0.01")
BATCH_MERCHANTS = 4
"""Merchants linked to every member (merchant 0 is the hot issuer; 0-3 send batches)."""
LOADERS = 2
"""Bulk calls in flight while loading points (one per core)."""


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

    def spread_merchant(self, i: int) -> int:
        """The merchant of member ``i`` when traffic is spread over every issuer."""
        return i % self.merchants

    def linked(self, k: int, i: int) -> bool:
        return k < BATCH_MERCHANTS or self.spread_merchant(i) == k


async def seed(url: str, secrets: Secrets, *, merchants: int, members: int) -> Alliance:
    """Create the catalogue, one merchant API key each, and ``members`` linked members."""
    if merchants < BATCH_MERCHANTS:
        raise BenchError(f"the bench needs at least {BATCH_MERCHANTS} merchants")
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
            links = [
                (alliance.merchant_ids[k], customer_ref(i), alliance.member_ids[i])
                for i in range(members)
                for k in range(merchants)
                if alliance.linked(k, i)
            ]
            await conn.execute(
                "INSERT INTO member_links (merchant_id, customer_ref, member_id)"
                " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[])",
                ([m for m, _, _ in links], [r for _, r, _ in links], [i for _, _, i in links]),
            )
        return alliance
    finally:
        await pool.close()


Plan = Iterable[tuple[int, int, int]]
"""Earns to make: ``(merchant index, member index, points)``, each in the merchant's currency."""


async def award(
    url: str,
    alliance: Alliance,
    plan: Plan,
    *,
    tag: str,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Make every earn of ``plan`` through the bulk service; returns the number made."""
    calls: dict[int, list[EarnItem]] = defaultdict(list)
    queue: asyncio.Queue[tuple[int, list[EarnItem]]] = asyncio.Queue(maxsize=2 * LOADERS)
    made = 0
    pool = await create_pool(url, min_size=LOADERS, max_size=LOADERS)

    async def loader() -> None:
        nonlocal made
        while True:
            k, items = await queue.get()
            if not items:
                return
            actor = Actor(role=MERCHANT, merchant_id=alliance.merchant_ids[k])
            results = await earn_many(pool, actor, items)
            refused = [r for r in results if not r.ok]
            if refused:
                raise BenchError(f"a bulk earn was refused while loading: {refused[0]}")
            made += len(items)
            if progress is not None:
                progress(made)

    workers = [asyncio.ensure_future(loader()) for _ in range(LOADERS)]
    try:
        for n, (k, i, points) in enumerate(plan):
            batch = calls[k]
            batch.append(EarnItem(alliance.member_ids[i], currency_code(k), points, f"{tag}-{n}"))
            if len(batch) == MAX_ITEMS:
                await queue.put((k, batch))
                calls[k] = []
        for k, batch in calls.items():
            if batch:
                await queue.put((k, batch))
        for _ in workers:
            await queue.put((0, []))
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await pool.close()
    return made


def wallet_plan(alliance: Alliance) -> Plan:
    """One earn into every wallet the scenarios use (so no request creates a wallet)."""
    for k in range(alliance.merchants):
        for i in range(alliance.members):
            if alliance.linked(k, i):
                yield k, i, 100


async def seal_chain(url: str) -> None:
    """Seal the hash chain over every committed entry (as the hub's sealer would)."""
    pool: Pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await seal(pool, sealed_by="bench")
    finally:
        await pool.close()


async def settle_in(url: str) -> float:
    """Seal the hash chain over what was loaded and refresh planner statistics; seconds."""
    started = time.perf_counter()
    pool: Pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await seal(pool, sealed_by="bench")
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            await conn.execute("VACUUM ANALYZE")
    finally:
        await pool.close()
    return time.perf_counter() - started


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
