"""Concurrency against real PostgreSQL: duplicates, deadlocks, races and conservation."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from exchange.domain.errors import Refusal
from exchange.services import clock, conversion, expiry, members, points, reversal
from exchange.services.actors import MEMBER, Actor
from exchange.services.tx import RETRIES
from tests.ledger.support import Hub, build_hub

pytestmark = pytest.mark.anyio


@pytest.fixture
async def big_hub(anyio_backend: str, database_url: str) -> AsyncIterator[Hub]:
    h = await build_hub(database_url, members_count=3, pool_size=40)
    try:
        yield h
    finally:
        await h.pool.close()


async def test_fifty_identical_requests_make_one_entry(big_hub: Hub) -> None:
    hub = big_hub

    async def send() -> int:
        out = await points.earn(
            hub.pool,
            hub.merchants["c"],
            member_id=hub.member_ids[0],
            currency_code="APT",
            points=70,
            idempotency_key="same-key",
        )
        return out.entry_id

    ids = await asyncio.gather(*(send() for _ in range(50)))
    assert len(set(ids)) == 1
    assert await hub.count("entries") == 1
    assert await hub.wallet(hub.member_ids[0], "APT") == 70
    assert await hub.position("c") == -700_000
    assert hub.verify() == []


async def test_fifty_identical_refused_requests_stay_one_refusal(big_hub: Hub) -> None:
    hub = big_hub

    async def send() -> str:
        try:
            await points.redeem(
                hub.pool,
                hub.merchants["a"],
                member_id=hub.member_ids[0],
                currency_code="APT",
                points=5,
                idempotency_key="poor",
            )
        except Refusal as r:
            return r.code
        return "ok"

    codes = await asyncio.gather(*(send() for _ in range(50)))
    assert set(codes) == {"INSUFFICIENT_POINTS"}
    assert await hub.count("entries") == 0
    assert await hub.count("requests") == 1


async def test_opposite_conversions_do_not_deadlock(big_hub: Hub) -> None:
    hub = big_hub
    member_ids = hub.member_ids
    for i, m in enumerate(member_ids):
        for code, shop in (("APT", "a"), ("BPT", "b")):
            await points.earn(
                hub.pool,
                hub.merchants[shop],
                member_id=m,
                currency_code=code,
                points=100_000,
                idempotency_key=f"seed-{code}-{i}",
            )
    outcomes: Counter[str] = Counter()

    async def convert(i: int) -> None:
        m = member_ids[i % len(member_ids)]
        actor = Actor(MEMBER, member_id=m)
        src, dst = ("APT", "BPT") if i % 2 else ("BPT", "APT")
        q = await conversion.create_quote(
            hub.pool,
            actor,
            from_code=src,
            to_code=dst,
            points=1_000,
            ttl_s=60,
            default_fee_bp=50,
        )
        try:
            await conversion.execute_quote(
                hub.pool, actor, quote_id=q.id, idempotency_key=f"cv-{i}"
            )
            outcomes["ok"] += 1
        except Refusal as r:
            outcomes[r.code] += 1

    await asyncio.gather(*(convert(i) for i in range(120)))
    assert outcomes["ok"] == 120, outcomes
    assert await hub.count("entries WHERE kind = 'convert'") == 120
    assert hub.verify() == []


async def test_expiry_racing_a_redemption_takes_each_point_once(
    big_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = big_hub
    start = clock.now()
    monkeypatch.setattr(clock, "now", lambda: start)  # redemptions happen before expiry
    after = start + timedelta(days=400)
    rounds = 15
    members_ = []
    for i in range(rounds):
        m, _ = await members.link_member(hub.pool, hub.merchants["a"], f"race-{i}")
        await points.earn(
            hub.pool,
            hub.merchants["a"],
            member_id=m,
            currency_code="APT",
            points=100,
            idempotency_key=f"race-earn-{i}",
        )
        members_.append(m)

    async def spend(i: int) -> int:
        try:
            await points.redeem(
                hub.pool,
                hub.merchants["b"],
                member_id=members_[i],
                currency_code="APT",
                points=60,
                idempotency_key=f"race-spend-{i}",
            )
        except Refusal:
            return 0
        return 60

    results = await asyncio.gather(
        expiry.sweep(hub.pool, now=after), *(spend(i) for i in range(rounds))
    )
    swept = results[0]
    spent = sum(results[1:])
    b = await hub.balances()
    left = sum(b.get(("wallet", "APT", m), 0) for m in members_)
    assert left == 0
    assert spent + swept.points_expired == 100 * rounds
    assert hub.verify() == []


def _zipf_index(rng: random.Random, n: int) -> int:
    weights = [1 / (k + 1) for k in range(n)]
    return rng.choices(range(n), weights=weights)[0]


async def test_load_keeps_every_sum_and_writes_no_duplicates(database_url: str) -> None:
    """32 workers, 20,000 random earn/redeem/convert/reverse operations, skewed choices."""
    hub = await build_hub(database_url, members_count=0, pool_size=34)
    try:
        await _run_load(hub, workers=32, operations=20_000)
    finally:
        await hub.pool.close()


async def _run_load(hub: Hub, *, workers: int, operations: int) -> None:
    random.Random(20261123)  # noqa: S311 - reproducible load, not security
    member_ids = []
    for i in range(60):
        m, _ = await members.link_member(hub.pool, hub.merchants["a"], f"load-{i}")
        member_ids.append(m)
    issuers = [("APT", "a"), ("BPT", "b"), ("CPT", "c")]
    shops = ["a", "b", "c"]
    earned: list[tuple[str, int]] = []  # (shop, entry id) of successful earns
    outcomes: Counter[str] = Counter()
    keys_ok: set[tuple[str, str]] = set()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(operations):
        queue.put_nowait(i)
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()
    retries_before = sum(RETRIES.values())

    async def op(i: int) -> None:
        r = random.Random(i)  # noqa: S311
        m = member_ids[_zipf_index(r, len(member_ids))]
        code, _issuer = issuers[_zipf_index(r, len(issuers))]
        shop = r.choice(shops)
        kind = r.choices(["earn", "redeem", "convert", "reverse"], weights=[5, 3, 2, 1])[0]
        key = f"op-{i}"
        if kind == "earn":
            n = r.randint(1, 500)
            out = await points.earn(
                hub.pool,
                hub.merchants[shop],
                member_id=m,
                currency_code=code,
                points=n,
                idempotency_key=key,
            )
            earned.append((shop, out.entry_id))
            keys_ok.add((f"merchant:{hub.merchant_ids[shop]}", key))
            if r.random() < 0.05:  # a retried request replays and posts nothing
                again = await points.earn(
                    hub.pool,
                    hub.merchants[shop],
                    member_id=m,
                    currency_code=code,
                    points=n,
                    idempotency_key=key,
                )
                assert again.entry_id == out.entry_id
                assert again.replayed
        elif kind == "redeem":
            await points.redeem(
                hub.pool,
                hub.merchants[shop],
                member_id=m,
                currency_code=code,
                points=r.randint(1, 300),
                idempotency_key=key,
            )
            keys_ok.add((f"merchant:{hub.merchant_ids[shop]}", key))
        elif kind == "convert":
            dst = r.choice([c for c, _ in issuers if c != code])
            actor = Actor(MEMBER, member_id=m)
            q = await conversion.create_quote(
                hub.pool,
                actor,
                from_code=code,
                to_code=dst,
                points=r.randint(50, 400),
                ttl_s=60,
                default_fee_bp=100,
            )
            await conversion.execute_quote(hub.pool, actor, quote_id=q.id, idempotency_key=key)
            keys_ok.add((f"member:{m}", key))
        elif earned:
            shop, entry = r.choice(earned)
            await reversal.reverse(
                hub.pool,
                hub.merchants[shop],
                entry_id=entry,
                points=r.choice([None, 1, 5, 20]),
                idempotency_key=key,
            )
            keys_ok.add((f"merchant:{hub.merchant_ids[shop]}", key))
        outcomes[kind] += 1

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                await op(i)
            except Refusal as refusal:
                outcomes[refusal.code] += 1

    async def sampler() -> None:
        while not stop.is_set():
            async with hub.pool.connection() as conn:
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur = await conn.execute(
                    "SELECT c.code, sum(b.amount),"
                    "       sum(b.amount) FILTER (WHERE a.kind = 'wallet'),"
                    "       sum(b.amount) FILTER (WHERE a.kind = 'outstanding')"
                    "  FROM balances b JOIN accounts a ON a.id = b.account_id"
                    "  JOIN currencies c ON c.id = a.asset_id GROUP BY c.code"
                )
                samples.append({row[0]: row[1:] for row in await cur.fetchall()})
            await asyncio.sleep(0.2)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(worker() for _ in range(workers)))
    stop.set()
    await sampling

    assert sum(outcomes.values()) == operations
    assert outcomes["earn"] > 0
    assert outcomes["redeem"] > 0
    assert outcomes["convert"] > 0
    assert outcomes["reverse"] > 0
    assert len(samples) >= 3
    for sample in samples:
        for code, (total, wallets, outstanding) in sample.items():
            assert total == 0, (code, sample)
            if wallets is not None:
                assert wallets == -outstanding, (code, sample)
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT initiator, idempotency_key FROM entries WHERE initiator NOT LIKE 'system:%%'"
        )
        written = [(i, k) for i, k in await cur.fetchall()]
    assert len(written) == len(set(written))
    assert set(written) == keys_ok
    assert hub.verify() == []
    print(
        f"load: {dict(outcomes)}; samples {len(samples)};"
        f" retried transactions {sum(RETRIES.values()) - retries_before}"
    )
