"""Finance test support: the ledger tests' hub (merchants a, b, c; APT, BPT, CPT) plus the
operations, batch closes and reads the finance tests share."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from exchange.finance import batches, chain, reports
from exchange.finance.checks import finance_violations
from exchange.keys import Secrets, SigningKey
from exchange.ledger import idempotency
from exchange.services import clock, conversion, points
from exchange.services.actors import FINANCE, Actor
from exchange.services.points import post_earn, usable_currency
from exchange.services.tx import Claim
from tests.ledger.support import Hub

FINANCE_ACTOR = Actor(FINANCE, subject="tests")
MINOR_UNIT = 2


def make_secrets() -> Secrets:
    return Secrets(jwt_keys=(SigningKey.generate(),), api_key_pepper=b"p" * 32)


@dataclass
class Finance:
    """A hub with merchants ``a``, ``b``, ``c`` (codes ``shop-a``...) and its finance desk."""

    hub: Hub
    secrets: Secrets = field(default_factory=make_secrets)
    _keys: Any = field(default_factory=lambda: itertools.count(1))

    def key(self, prefix: str) -> str:
        return f"{prefix}-{next(self._keys)}"

    @property
    def pool(self) -> Any:
        return self.hub.pool

    def code(self, shop: str) -> str:
        return f"shop-{shop}"

    async def earn(self, shop: str, currency: str, n: int, member: int = 0) -> int:
        out = await points.earn(
            self.pool,
            self.hub.merchants[shop],
            member_id=self.hub.member_ids[member],
            currency_code=currency,
            points=n,
            idempotency_key=self.key("earn"),
        )
        return out.entry_id

    async def redeem(self, shop: str, currency: str, n: int, member: int = 0) -> int:
        out = await points.redeem(
            self.pool,
            self.hub.merchants[shop],
            member_id=self.hub.member_ids[member],
            currency_code=currency,
            points=n,
            idempotency_key=self.key("redeem"),
        )
        return out.entry_id

    async def convert(self, source: str, target: str, n: int, member: int = 0) -> int:
        actor = self.hub.member(member)
        quote = await conversion.create_quote(
            self.pool,
            actor,
            from_code=source,
            to_code=target,
            points=n,
            ttl_s=30,
            default_fee_bp=100,
        )
        out = await conversion.execute_quote(
            self.pool, actor, quote_id=quote.id, idempotency_key=self.key("convert")
        )
        return out.entry_id

    async def close(self, cutoff: datetime | None = None, key: str | None = None) -> int:
        closed = await batches.close_batch(
            self.pool,
            FINANCE_ACTOR,
            secrets=self.secrets,
            minor_unit=MINOR_UNIT,
            idempotency_key=key or self.key("close"),
            cutoff=cutoff,
        )
        return closed.batch_id

    async def seal(self) -> chain.SealResult:
        return await chain.seal(self.pool)

    async def batch_entries(self, batch: int) -> list[int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT entry_id FROM settlement_batch_entries WHERE batch_id = %s ORDER BY 1",
                (batch,),
            )
            return [int(r[0]) for r in await cur.fetchall()]

    async def report(self, batch: int) -> reports.BatchReport:
        async with self.pool.connection() as conn:
            found = await reports.batch_report(conn, batch)
        assert found is not None
        return found

    def violations(self) -> list[str]:
        """Every violation ``exchange verify`` reports (ledger and finance checks)."""
        return self.hub.verify()

    def finance_violations(self) -> list[str]:
        with psycopg.connect(self.hub.url) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            found = finance_violations(conn)
            conn.rollback()
        return [f"{v.check}: {v.message}" for v in found]


def micro(text: str) -> int:
    """Decimal text to micro-units (``"5.25"`` -> 5_250_000)."""
    return int(Decimal(text) * 1_000_000)


@dataclass
class Scenario:
    """The worked example of ``docs/finance.md``."""

    entries: dict[str, int] = field(default_factory=dict)


async def worked_example_batch1(fin: Finance) -> Scenario:
    """Batch 1 of the worked example: A, B, C trade APT, BPT and CPT with member P."""
    s = Scenario()
    s.entries["a earns P 1000 APT"] = await fin.earn("a", "APT", 1000)
    s.entries["c awards P 500 APT"] = await fin.earn("c", "APT", 500)
    s.entries["P redeems 300 APT at b"] = await fin.redeem("b", "APT", 300)
    s.entries["b awards P 1000 CPT"] = await fin.earn("b", "CPT", 1000)
    s.entries["P converts 1200 APT to BPT"] = await fin.convert("APT", "BPT", 1200)
    s.entries["c awards P 123.45 BPT"] = await fin.earn("c", "BPT", 12345)
    return s


async def paused_partner_earn(
    fin: Finance, paused: asyncio.Event, resume: asyncio.Event, entry: list[int]
) -> None:
    """C awards 700 APT (C owes A 7.00) in a transaction that waits before committing."""
    merchant = fin.hub.merchants["c"]
    key = fin.key("paused")
    digest = idempotency.fingerprint("earn", {"paused": key})
    async with fin.pool.connection() as conn, conn.transaction():
        assert await idempotency.claim(conn, merchant.initiator, key, "earn", digest) is None
        now = clock.now()
        currency = await usable_currency(conn, "APT", now, issuing=True)
        entry.append(
            await post_earn(
                conn,
                Claim(merchant.initiator, key, digest),
                merchant_id=fin.hub.merchant_ids["c"],
                member_id=fin.hub.member_ids[0],
                currency=currency,
                points=700,
                now=now,
            )
        )
        paused.set()
        await resume.wait()
