"""The lots a debit reads: every overdue lot, then live lots only as far as the debit needs.

Lots are made through real earns, with the currency's expiry policy patched to hand each
lot the expiry the example draws (ties, lots that never expire and overdue lots included).
The model is the rule the hub applied when it read every open lot: expire the overdue
ones, then take points soonest-expiring first (:func:`exchange.domain.lots.allocate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.domain.errors import Refusal
from exchange.domain.expiry import ExpiryPolicy
from exchange.domain.lots import OpenLot, allocate, consumption_order
from exchange.ledger import engine
from exchange.services import clock, points, reversal
from tests.conftest import DatabaseFactory
from tests.ledger.support import Hub, build_hub

# A lot: (days from the debit until it expires, None for never; its points).
# Zero or fewer days: overdue when the debit comes.
LOT = st.tuples(st.one_of(st.none(), st.integers(-3, 3)), st.integers(1, 40))


def _expiring(expiries: Iterator[datetime | None]) -> Any:
    """Patch every currency's expiry policy to hand out ``expiries`` in turn."""

    def expires_at(self: ExpiryPolicy, earned_at: datetime) -> datetime | None:
        return next(expiries)

    return mock.patch.object(ExpiryPolicy, "expires_at", expires_at)


async def _fill(hub: Hub, lots: list[tuple[int | None, int]], now: datetime) -> int:
    """Earn ``lots`` into member 0's APT wallet; return the wallet's id."""
    stamps = [None if d is None else now + timedelta(days=d) for d, _ in lots]
    with _expiring(iter(stamps)):
        for i, (_, n) in enumerate(lots):
            await hub.earn("a", 0, "APT", n, f"lot-{i}")
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM accounts WHERE kind = 'wallet' AND member_id = %s",
            (hub.member_ids[0],),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _spend(hub: Hub, n: int) -> None:
    """Merchant b redeems ``n`` APT points of member 0 (key ``spend``)."""
    await points.redeem(
        hub.pool,
        hub.merchants["b"],
        member_id=hub.member_ids[0],
        currency_code="APT",
        points=n,
        idempotency_key="spend",
    )


async def _all_open(hub: Hub, wallet_id: int) -> list[OpenLot]:
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, remaining, expires_at FROM lots WHERE wallet_id = %s AND remaining > 0",
            (wallet_id,),
        )
        return [OpenLot(int(i), int(r), e) for i, r, e in await cur.fetchall()]


def _overdue(lot: OpenLot, now: datetime) -> bool:
    return lot.expires_at is not None and lot.expires_at <= now


def _needed(lots: list[OpenLot], points: int, now: datetime) -> list[OpenLot]:
    """The model of what a debit reads: overdue lots, then live ones until they hold ``points``."""
    out: list[OpenLot] = []
    live = 0
    for lot in consumption_order(lots):
        if _overdue(lot, now) or live < points:
            out.append(lot)
        if not _overdue(lot, now):
            live += lot.remaining
    return out


async def _debit_reads_only_what_it_needs(
    url: str, lots: list[tuple[int | None, int]], points_asked: int, skip_every: int, first: int
) -> None:
    hub = await build_hub(url, members_count=1, pool_size=2)
    try:
        base = clock.now()
        wallet = await _fill(hub, lots, base)
        now = clock.now() + timedelta(seconds=1)  # past every lot of zero days or fewer
        every = await _all_open(hub, wallet)
        skip = [lot.id for lot in every[::skip_every]] if skip_every else []
        async with hub.pool.connection() as conn, conn.transaction():
            await engine.lock_wallets(conn, [wallet])
            got = await engine.lots_for_debit(
                conn, wallet, points_asked, now, skip=skip, first=first
            )
        kept = [lot for lot in every if lot.id not in skip]
        assert got == _needed(kept, points_asked, now)

        # The redemption takes what reading every lot took, and refuses the same way.
        live = [lot for lot in every if not _overdue(lot, now)]
        available = sum(lot.remaining for lot in live)
        want = {lot.id: lot.remaining for lot in every}
        with mock.patch.object(clock, "now", return_value=now):
            if available < points_asked:
                with pytest.raises(Refusal) as refused:
                    await _spend(hub, points_asked)
                assert refused.value.code == "INSUFFICIENT_POINTS"
                assert f", {available} available" in refused.value.message
            else:
                await _spend(hub, points_asked)
                for lot in every:
                    if _overdue(lot, now):
                        want[lot.id] = 0
                for lot_id, taken in allocate(live, points_asked):
                    want[lot_id] -= taken
        have = {lot.id: lot.remaining for lot in await _all_open(hub, wallet)}
        assert have == {i: r for i, r in want.items() if r > 0}
        assert hub.verify() == []
    finally:
        await hub.pool.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lots=st.lists(LOT, min_size=1, max_size=14),
    points_asked=st.integers(1, 200),
    skip_every=st.sampled_from([0, 0, 2, 3]),
    first=st.sampled_from([1, 2, 3, 100]),
)
def test_a_debit_reads_overdue_lots_and_live_ones_only_as_far_as_it_needs(
    databases: DatabaseFactory,
    template_database: str,
    lots: list[tuple[int | None, int]],
    points_asked: int,
    skip_every: int,
    first: int,
) -> None:
    """Also with the first index scan cut short (``first``): what it misses is read after."""
    name = databases.create("exchange_test", template=template_database)
    try:
        asyncio.run(
            _debit_reads_only_what_it_needs(
                databases.url(name), lots, points_asked, skip_every, first
            )
        )
    finally:
        databases.drop(name)


async def test_a_redemption_in_a_wallet_of_many_lots_reads_the_few_it_takes(hub: Hub) -> None:
    """Three hundred lots, soonest first by expiry; 25 points are in the first three."""
    base = clock.now()
    days = [300 - i for i in range(300)]  # earned newest-expiry first: id order is not expiry order
    with _expiring(iter([base + timedelta(days=d) for d in days])):
        for i in range(300):
            await hub.earn("a", 0, "APT", 10, f"many-{i}")
    async with hub.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "SELECT id FROM accounts WHERE kind = 'wallet' AND member_id = %s",
            (hub.member_ids[0],),
        )
        row = await cur.fetchone()
        assert row is not None
        wallet = int(row[0])
        await engine.lock_wallets(conn, [wallet])
        got = await engine.lots_for_debit(conn, wallet, 25, base)
    assert [lot.expires_at for lot in got] == [base + timedelta(days=d) for d in (1, 2, 3)]
    await _spend(hub, 25)
    remaining = sorted((lot.expires_at, lot.remaining) for lot in await _all_open(hub, wallet))
    assert [r for _, r in remaining[:3]] == [5] + [10] * 2
    assert sum(r for _, r in remaining) == 3000 - 25
    assert hub.verify() == []


async def test_a_reversal_takes_its_own_lot_then_the_soonest_expiring_others(hub: Hub) -> None:
    """An earn partly spent is reversed in full: the rest comes from the soonest-expiring lots."""
    base = clock.now()
    with _expiring(iter([*(base + timedelta(days=d) for d in (5, 9, 2, 7)), None])):
        entries = [(await hub.earn("a", 0, "APT", 10, f"e-{i}")).entry_id for i in range(5)]
    # The redemption takes the lots expiring in 2 and 5 days, and 5 points of the 7-day one.
    await _spend(hub, 25)
    # Reversing the 7-day earn takes its own 5 points left, then 5 of the 9-day lot.
    await reversal.reverse(
        hub.pool, hub.merchants["a"], entry_id=entries[3], points=None, idempotency_key="rv"
    )
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT entry_id, remaining FROM lots WHERE entry_id = ANY(%s)", (entries,)
        )
        remaining = {int(e): int(r) for e, r in await cur.fetchall()}
    assert [remaining[e] for e in entries] == [0, 5, 0, 0, 10]
    assert hub.verify() == []
