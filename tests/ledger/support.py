"""Test support: a bootstrapped hub with three merchants, their currencies and members."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from exchange.db.pool import create_pool
from exchange.domain.expiry import ExpiryPolicy
from exchange.ledger.verify import verify
from exchange.services import catalog, members, points
from exchange.services.actors import ADMIN, MEMBER, MERCHANT, Actor

STRIPES = 4


@dataclass
class Hub:
    url: str
    pool: AsyncConnectionPool[Any]
    admin: Actor = field(default_factory=lambda: Actor(ADMIN))
    merchants: dict[str, Actor] = field(default_factory=dict)
    merchant_ids: dict[str, int] = field(default_factory=dict)
    member_ids: list[int] = field(default_factory=list)

    def member(self, i: int = 0) -> Actor:
        return Actor(MEMBER, member_id=self.member_ids[i], merchant_id=self.merchant_ids["a"])

    async def earn(
        self,
        shop: str,
        member: int,
        code: str,
        n: int,
        key: str,
        details: dict[str, Any] | None = None,
    ) -> points.Outcome:
        """Merchant ``shop`` awards ``n`` points of ``code`` to member number ``member``."""
        return await points.earn(
            self.pool,
            self.merchants[shop],
            member_id=self.member_ids[member],
            currency_code=code,
            points=n,
            idempotency_key=key,
            details=details,
        )

    async def balances(self) -> dict[tuple[str, str, int | None], int]:
        """``(kind, currency code, member or merchant id) -> balance``."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT a.kind, c.code, coalesce(a.member_id, a.merchant_id), sum(b.amount)"
                "  FROM balances b JOIN accounts a ON a.id = b.account_id"
                "  JOIN currencies c ON c.id = a.asset_id GROUP BY 1, 2, 3"
            )
            return {(k, c, o): int(s) for k, c, o, s in await cur.fetchall()}

    async def wallet(self, member_id: int, code: str) -> int:
        return (await self.balances()).get(("wallet", code, member_id), 0)

    async def position(self, merchant: str) -> int:
        return (await self.balances()).get(("settlement", "CNY", self.merchant_ids[merchant]), 0)

    async def count(self, table: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"SELECT count(*) FROM {table}")
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

    async def lots(self, member_id: int, code: str) -> list[tuple[int, int, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT l.original, l.remaining, l.expires_at FROM lots l"
                "  JOIN accounts a ON a.id = l.wallet_id JOIN currencies c ON c.id = a.asset_id"
                " WHERE a.member_id = %s AND c.code = %s ORDER BY l.id",
                (member_id, code),
            )
            return [(int(o), int(r), e) for o, r, e in await cur.fetchall()]

    def verify(self) -> list[str]:
        with psycopg.connect(self.url) as conn:
            report = verify(conn)
        return [f"{v.check}: {v.message}" for v in report.violations or []]


CURRENCIES = {
    # code: (merchant, scale, rate, expiry)
    "APT": ("a", 0, Decimal("0.01"), ExpiryPolicy("days", 365)),
    "BPT": ("b", 2, Decimal("0.005"), ExpiryPolicy("never")),
    "CPT": ("c", 0, Decimal("0.02"), ExpiryPolicy("months_end", 12)),
}


async def build_hub(url: str, *, members_count: int = 3, pool_size: int = 4) -> Hub:
    pool = await create_pool(url, min_size=1, max_size=pool_size)
    async with pool.connection() as conn:
        await catalog.bootstrap(conn, "CNY", STRIPES)
    hub = Hub(url=url, pool=pool)
    for code in ("a", "b", "c"):
        m = await catalog.create_merchant(
            pool, hub.admin, code=f"shop-{code}", name=f"Shop {code.upper()}", stripes=STRIPES
        )
        hub.merchants[code] = Actor(MERCHANT, merchant_id=m.id)
        hub.merchant_ids[code] = m.id
    for code, (owner, scale, rate, expiry) in CURRENCIES.items():
        await catalog.register_currency(
            pool,
            hub.merchants[owner],
            code=code,
            name=f"{code} points",
            scale=scale,
            rate=rate,
            expiry=expiry,
            stripes=STRIPES,
        )
    for i in range(members_count):
        member_id, _ = await members.link_member(pool, hub.merchants["a"], f"cust-{i}")
        for other in ("b", "c"):
            await members.link_member(pool, hub.merchants[other], f"x-{i}", member_id=member_id)
        hub.member_ids.append(member_id)
    return hub


def totals(balances: dict[tuple[str, str, int | None], int]) -> dict[str, int]:
    """Sum of every account per asset (zero for every asset in a sound ledger)."""
    out: dict[str, int] = defaultdict(int)
    for (_, code, _), amount in balances.items():
        out[code] += amount
    return dict(out)
