"""The cached fixed facts and the two-round-trip earn that uses them."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from exchange.db.pool import create_pool
from exchange.domain.errors import NotFound, Refusal
from exchange.domain.expiry import ExpiryPolicy
from exchange.ledger.facts import Bounded, facts_of
from exchange.services import catalog, members, merchants, points
from tests.ledger.support import STRIPES, Hub

pytestmark = pytest.mark.anyio


def test_bounded_forgets_the_least_recently_used() -> None:
    cache: Bounded[str, int] = Bounded(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c"), len(cache)) == (1, 3, 2)


async def test_facts_are_kept_per_database(hub: Hub) -> None:
    facts = facts_of(hub.pool)
    assert facts_of(hub.pool) is facts
    async with hub.pool.connection() as conn:
        apt = await facts.currency(conn, "APT")
    assert apt is not None
    assert apt.scale == 0
    assert facts.cached_currency("APT") is apt
    other = await create_pool(hub.url, min_size=1, max_size=1)
    try:
        assert facts_of(other) is not facts
    finally:
        await other.close()


async def test_an_unknown_currency_is_refused_then_found_once_registered(hub: Hub) -> None:
    member = hub.member_ids[0]
    with pytest.raises(Refusal) as refused:
        await points.earn(
            hub.pool,
            hub.merchants["a"],
            member_id=member,
            currency_code="NEW",
            points=5,
            idempotency_key="n1",
        )
    assert refused.value.code == "UNKNOWN_CURRENCY"
    assert facts_of(hub.pool).cached_currency("NEW") is None  # refusals are not cached
    await catalog.register_currency(
        hub.pool,
        hub.merchants["a"],
        code="NEW",
        name="New",
        scale=0,
        rate=Decimal("0.01"),
        expiry=ExpiryPolicy("never"),
        stripes=STRIPES,
    )
    # The first key keeps its refusal; a new key earns.
    with pytest.raises(Refusal):
        await points.earn(
            hub.pool,
            hub.merchants["a"],
            member_id=member,
            currency_code="NEW",
            points=5,
            idempotency_key="n1",
        )
    done = await points.earn(
        hub.pool,
        hub.merchants["a"],
        member_id=member,
        currency_code="NEW",
        points=5,
        idempotency_key="n2",
    )
    assert done.posted is not None
    assert done.posted.draft is not None
    assert await hub.wallet(member, "NEW") == 5
    assert hub.verify() == []


async def test_the_fast_earn_sees_rate_and_activity_changes_at_once(hub: Hub) -> None:
    member, shop = hub.member_ids[0], hub.merchants["a"]
    first = await points.earn(
        hub.pool, shop, member_id=member, currency_code="APT", points=100, idempotency_key="r1"
    )
    assert first.posted is not None
    assert first.posted.draft is not None
    assert first.posted.draft.details["value"] == "1.000000"
    await merchants.set_currency_active(hub.pool, shop, code="APT", active=False)
    with pytest.raises(Refusal) as refused:
        await points.earn(
            hub.pool, shop, member_id=member, currency_code="APT", points=1, idempotency_key="r2"
        )
    assert refused.value.code == "CURRENCY_INACTIVE"
    await merchants.set_currency_active(hub.pool, shop, code="APT", active=True)
    await catalog.set_rate(hub.pool, shop, code="APT", rate=Decimal("0.03"), effective_at=None)
    third = await points.earn(
        hub.pool, shop, member_id=member, currency_code="APT", points=100, idempotency_key="r3"
    )
    assert third.posted is not None
    assert third.posted.draft is not None
    assert third.posted.draft.details["value"] == "3.000000"


async def test_a_first_earn_creates_the_wallet_and_concurrent_twins_write_once(hub: Hub) -> None:
    member_id, _ = await members.link_member(hub.pool, hub.merchants["b"], "fresh")
    shop = hub.merchants["b"]
    outcomes = await asyncio.gather(
        *[
            points.earn(
                hub.pool,
                shop,
                member_id=member_id,
                currency_code="BPT",
                points=250,
                idempotency_key="twin",
            )
            for _ in range(12)
        ]
    )
    assert len({o.entry_id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert await hub.wallet(member_id, "BPT") == 250
    assert await hub.count("entries WHERE idempotency_key = 'twin'") == 1
    assert hub.verify() == []


async def test_links_are_cached_only_once_found(hub: Hub) -> None:
    shop = hub.merchants["c"]
    with pytest.raises(NotFound):
        await members.member_by_ref(hub.pool, shop.merchant_id or 0, "later")
    member_id, _ = await members.link_member(hub.pool, shop, "later")
    assert await members.member_by_ref(hub.pool, shop.merchant_id or 0, "later") == member_id
    assert facts_of(hub.pool).link(shop.merchant_id or 0, "later") == member_id
