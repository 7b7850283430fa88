"""Concurrent express earns of one process share a statement and write what each would alone."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.domain.entries import Leg
from exchange.domain.errors import Refusal
from exchange.domain.money import value_micro
from exchange.ledger import engine, express
from exchange.ledger.engine import EntryDraft
from exchange.ledger.facts import facts_of
from exchange.ledger.idempotency import fingerprint
from exchange.services import clock, express_batches, members, points
from exchange.services.express_batches import STATS
from exchange.services.points import earn_draft
from exchange.services.tx import Claim, reading
from tests.conftest import DatabaseFactory
from tests.ledger.support import CURRENCIES, Hub, build_hub
from tests.ledger.test_bulk import make_debt
from tests.reads import add_crowd, rows_read

pytestmark = pytest.mark.anyio

PAIRS = [("a", "APT"), ("b", "APT"), ("b", "BPT"), ("c", "APT"), ("c", "CPT"), ("a", "CPT")]
"""(awarding merchant, currency): issuer earns and partner earns (which owe the issuer)."""


async def _earn(hub: Hub, shop: str, member: int, code: str, n: int, key: str) -> Any:
    return await hub.earn(shop, member, code, n, key, details={"reason": "test"})


async def _warm(hub: Hub) -> None:
    """One earn per pairing and member: the process learns each currency's state and the
    settlement accounts, and every wallet exists."""
    for shop, code in PAIRS:
        for m in range(len(hub.member_ids)):
            await _earn(hub, shop, m, code, 1, f"warm-{shop}-{code}-{m}")


async def _written(hub: Hub, entry_id: int) -> dict[str, Any]:
    """What an entry wrote, without its ids, keys and times (the lot: earned at the entry's
    time, expiring as its currency's policy says)."""
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, merchant_id, member_id, rates, details - 'reason', effective_at"
            "  FROM entries WHERE id = %s",
            (entry_id,),
        )
        kind, merchant, member, rates, details, at = await cur.fetchone()  # type: ignore[misc]
        cur = await conn.execute(
            "SELECT seq, account_id, asset_id, amount FROM postings WHERE entry_id = %s"
            " ORDER BY seq",
            (entry_id,),
        )
        postings = [tuple(r) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT wallet_id, original, remaining, earned_at, expires_at FROM lots"
            " WHERE entry_id = %s",
            (entry_id,),
        )
        expiry = CURRENCIES[details["currency"]][3]
        lots = [
            (w, o, r, e == at, x == expiry.expires_at(e)) for w, o, r, e, x in await cur.fetchall()
        ]
    return {
        "kind": kind,
        "merchant": merchant,
        "member": member,
        "rates": rates,
        "details": details,
        "postings": postings,
        "lots": lots,
    }


async def test_concurrent_earns_share_a_statement_and_write_what_each_would_alone(
    hub: Hub,
) -> None:
    await _warm(hub)
    plan = [(shop, n % 3, code, 7 + n) for n, (shop, code) in enumerate(PAIRS * 5)]
    STATS.clear()
    together = await asyncio.gather(
        *[_earn(hub, s, m, c, p, f"together-{i}") for i, (s, m, c, p) in enumerate(plan)]
    )
    # They went to the database in fewer statements than earns.
    assert STATS["earns"] == len(plan)
    assert STATS["batches"] < len(plan)
    assert STATS["alone"] == 0
    alone = [await _earn(hub, s, m, c, p, f"alone-{i}") for i, (s, m, c, p) in enumerate(plan)]
    for a, b in zip(together, alone, strict=True):
        assert not a.replayed
        assert a.posted is not None
        assert a.posted.draft is not None
        assert a.posted.lot_ids
        assert await _written(hub, a.entry_id) == await _written(hub, b.entry_id)
        # The entry handed back names the real wallet, as written.
        written = await _written(hub, a.entry_id)
        assert sorted((g.account_id, g.amount) for g in a.posted.draft.legs) == sorted(
            (p[1], p[3]) for p in written["postings"]
        )
    # Retries replay the entries the batch wrote.
    again = await asyncio.gather(
        *[_earn(hub, s, m, c, p, f"together-{i}") for i, (s, m, c, p) in enumerate(plan)]
    )
    assert [o.entry_id for o in again] == [o.entry_id for o in together]
    assert all(o.replayed for o in again)
    assert hub.verify() == []


async def test_an_earn_failing_its_check_leaves_the_batch_and_the_others_are_written(
    hub: Hub,
) -> None:
    await _warm(hub)
    await make_debt(hub, 1, "debt")  # member 1 owes 100 APT: the express check fails for it
    newcomer, _ = await members.link_member(hub.pool, hub.merchants["c"], "newcomer")
    before = await hub.wallet(hub.member_ids[1], "APT")
    plan = [("a", hub.member_ids[m], "APT", 30) for m in (0, 1, 2)]
    plan += [("c", hub.member_ids[m], "CPT", 5) for m in (0, 1, 2)]
    plan += [("c", newcomer, "CPT", 7)]  # no wallet yet: the ordinary path creates it
    STATS.clear()
    outs = await asyncio.gather(
        *[
            points.earn(
                hub.pool,
                hub.merchants[s],
                member_id=m,
                currency_code=c,
                points=p,
                idempotency_key=f"mixed-{i}",
            )
            for i, (s, m, c, p) in enumerate(plan)
        ]
    )
    assert STATS["stale"] == 2  # the wallet in debt and the missing wallet
    assert STATS["alone"] == 0  # the others were written by the batch itself
    assert STATS["batches"] == 1
    assert len({o.entry_id for o in outs}) == len(plan)
    assert not any(o.replayed for o in outs)
    assert await hub.wallet(hub.member_ids[1], "APT") == before + 30
    assert await hub.wallet(newcomer, "CPT") == 7
    assert await hub.count("entries WHERE idempotency_key LIKE 'mixed-%'") == len(plan)
    assert await hub.count("requests WHERE idempotency_key LIKE 'mixed-%'") == len(plan)
    assert hub.verify() == []


async def test_a_wallet_going_into_debt_under_the_statement_sends_the_batch_alone(
    hub: Hub,
) -> None:
    await _warm(hub)
    earned = await _earn(hub, "a", 1, "APT", 40, "to-reverse")
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT w.id, c.id, o.id FROM accounts w JOIN currencies c ON c.id = w.asset_id"
            "  JOIN accounts o ON o.kind = 'outstanding' AND o.asset_id = c.id"
            " WHERE w.kind = 'wallet' AND w.member_id = %s AND c.code = 'APT'",
            (hub.member_ids[1],),
        )
        wallet_id, asset_id, outstanding_id = await cur.fetchone()  # type: ignore[misc]
    balance = await hub.wallet(hub.member_ids[1], "APT")
    others = {m: await hub.wallet(hub.member_ids[m], "APT") for m in (0, 2)}
    STATS.clear()
    async with hub.pool.connection() as holder:
        async with holder.transaction():
            # A reversal taking the wallet below zero, not yet committed: it holds the
            # wallet's balance row while the batch checks (in its snapshot, the wallet is
            # fine), claims, and waits for the lock.
            await engine.post(
                holder,
                EntryDraft(
                    kind="reverse",
                    initiator="admin",
                    idempotency_key="race",
                    fingerprint=bytes(32),
                    effective_at=clock.now(),
                    legs=[
                        Leg(wallet_id, asset_id, -(balance + 5)),
                        Leg(outstanding_id, asset_id, balance + 5),
                    ],
                    reverses_entry_id=earned.entry_id,
                ),
            )
            batch = asyncio.gather(*[_earn(hub, "a", m, "APT", 20, f"race-{m}") for m in (0, 1, 2)])
            for _ in range(200):
                await asyncio.sleep(0.01)
                if await _waiting_on_locks(hub):
                    break
            else:
                pytest.fail("the batch never waited for the wallet")
        outs = await batch
    assert STATS["alone"] == 3  # refused as a whole, each earn tried again on its own
    assert not any(o.replayed for o in outs)
    assert len({o.entry_id for o in outs}) == 3
    assert await hub.wallet(hub.member_ids[1], "APT") == -5 + 20
    for m, was in others.items():
        assert await hub.wallet(hub.member_ids[m], "APT") == was + 20
    assert await hub.count("requests WHERE idempotency_key LIKE 'race-%'") == 3
    assert await hub.count("entries WHERE idempotency_key LIKE 'race-%'") == 3


async def _waiting_on_locks(hub: Hub) -> bool:
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]) > 0


async def test_twins_never_share_a_batch_and_write_once(hub: Hub) -> None:
    await _warm(hub)
    before = await hub.wallet(hub.member_ids[0], "APT")
    STATS.clear()
    outs = await asyncio.gather(
        *[_earn(hub, "a", 0, "APT", 9, "twin") for _ in range(6)],
        *[_earn(hub, "a", m, "APT", 4, f"other-{m}") for m in (1, 2)],
    )
    twins = outs[:6]
    assert len({o.entry_id for o in twins}) == 1
    assert sum(not o.replayed for o in twins) == 1
    assert STATS["batches"] < STATS["earns"]
    assert await hub.wallet(hub.member_ids[0], "APT") == before + 9
    with pytest.raises(Refusal) as refused:
        await _earn(hub, "a", 0, "APT", 10, "twin")
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert hub.verify() == []


def _draft(hub: Hub, shop: str, member: int, code: str, n: int, key: str) -> EntryDraft:
    issuer, _scale, rate, _expiry = CURRENCIES[code]
    assert shop == issuer
    known = facts_of(hub.pool).cached_currency(code)
    assert known is not None
    currency = known.with_state(
        active=True, rate=rate, issuer_active=True, exposure_limit_micro=None
    )
    request = {"member": hub.member_ids[member], "currency": code, "points": n}
    claim = Claim(hub.merchants[shop].initiator, key, fingerprint("earn", request))
    return earn_draft(
        claim,
        merchant_id=hub.merchant_ids[shop],
        member_id=hub.member_ids[member],
        currency=currency,
        points=n,
        now=clock.now(),
        details=None,
        wallet_id=express.WALLET,
        repays_debt=0,
        settlement=None,
    )


async def test_the_statement_skips_taken_keys_and_leaves_out_a_failed_guess(
    hub: Hub,
) -> None:
    await _warm(hub)

    def g(code: str, rate: Decimal | None = None) -> express.Guess:
        known = facts_of(hub.pool).cached_currency(code)
        assert known is not None
        return express.Guess(known.id, CURRENCIES[code][2] if rate is None else rate)

    first = [_draft(hub, "a", m, "APT", 10 + m, f"s-{m}") for m in range(3)]
    async with reading(hub.pool) as conn:
        done = await express.post_earns(conn, first, [g("APT")] * 3, "earn")
    assert all(p is not None for p in done)
    # The same keys again, with one new key: only the new one is written.
    again = [*first[:2], _draft(hub, "c", 0, "CPT", 3, "s-new")]
    async with reading(hub.pool) as conn:
        out = await express.post_earns(conn, again, [g("APT"), g("APT"), g("CPT")], "earn")
    assert out[0] is None
    assert out[1] is None
    assert out[2] is not None
    entries, requests = await hub.count("entries"), await hub.count("requests")
    # A wrong rate for one earn: it is answered as stale, its key left unclaimed; the
    # other earn is written.
    mixed = [
        _draft(hub, "a", 0, "APT", 5, "w-1"),
        _draft(hub, "c", 1, "CPT", 5, "w-2"),
    ]
    async with reading(hub.pool) as conn:
        out = await express.post_earns(conn, mixed, [g("APT"), g("CPT", Decimal("0.5"))], "earn")
    assert out[0] is not None
    assert not isinstance(out[0], express.Stale)
    assert isinstance(out[1], express.Stale)
    assert out[1].state
    assert (await hub.count("entries"), await hub.count("requests")) == (entries + 1, requests + 1)
    assert await hub.count("requests WHERE idempotency_key = 'w-2'") == 0
    assert hub.verify() == []


async def test_the_statement_looks_up_its_wallets_and_reads_no_other(hub: Hub) -> None:
    """However many wallets the hub holds, a shared statement reads only those of its own
    earns (by index): a wallet check the planner turned into a hash of every wallet made
    each statement cost more as the hub grew."""
    await _warm(hub)
    known = facts_of(hub.pool).cached_currency("APT")
    assert known is not None
    async with hub.pool.connection() as conn:
        await add_crowd(
            conn,
            "INSERT INTO accounts (kind, asset_id, member_id, stripes)"
            " SELECT 'wallet', %(asset)s, m.id, 1 FROM m",
            "accounts",
            "balances",
            asset=known.id,
        )
    drafts = [_draft(hub, "a", m, "APT", 7, f"few-{m}") for m in range(3)]
    guess = express.Guess(known.id, CURRENCIES["APT"][2])
    # A connection of its own, with one transaction block around the autocommitted
    # statement, so that the rows it read can be counted before they are reported.
    async with await psycopg.AsyncConnection.connect(hub.url, autocommit=True) as conn:
        await conn.execute("BEGIN")
        out = await express.post_earns(conn, drafts, [guess] * 3, "earn")
        read = await rows_read(conn, "accounts", "balances")
        await conn.execute("COMMIT")
    assert all(p is not None and not isinstance(p, express.Stale) for p in out)
    # Three wallets checked and locked, and the accounts and stripes of the entries'
    # other legs: a few dozen rows at most, against the 3,000 wallets a hash would read.
    assert read["accounts"] + read["balances"] < 200, read
    assert hub.verify() == []


# -- property: any mix of concurrent earns and twins adds up as the same earns one by one -----

EARN = st.tuples(
    st.sampled_from(PAIRS),
    st.integers(min_value=0, max_value=2),
    st.integers(min_value=1, max_value=5_000),
    st.integers(min_value=1, max_value=3),  # copies sent at once (twins under one key)
)


async def _concurrent_run(url: str, earns: list[tuple[Any, ...]], debt: bool) -> None:
    hub = await build_hub(url)
    try:
        await _warm(hub)
        if debt:
            await make_debt(hub, 2, "debt")
        before = await hub.balances()
        calls = [
            _earn(hub, shop, m, code, n, f"p-{i}")
            for i, ((shop, code), m, n, copies) in enumerate(earns)
            for _ in range(copies)
        ]
        STATS.clear()
        outs = await asyncio.gather(*calls)
        assert STATS["earns"] >= len(earns)
        by_key: dict[str, set[int]] = defaultdict(set)
        fresh = Counter[str]()
        for o, key in zip(
            outs,
            [f"p-{i}" for i, (*_, copies) in enumerate(earns) for _ in range(copies)],
            strict=True,
        ):
            by_key[key].add(o.entry_id)
            fresh[key] += not o.replayed
        assert all(len(ids) == 1 for ids in by_key.values())
        assert all(n == 1 for n in fresh.values())
        want: Counter[tuple[str, str, int | None]] = Counter(before)
        for (shop, code), m, n, _copies in earns:
            issuer, scale, rate, _ = CURRENCIES[code]
            want[("wallet", code, hub.member_ids[m])] += n
            want[("outstanding", code, hub.merchant_ids[issuer])] -= n
            if shop != issuer:
                v = value_micro(n, rate, scale)
                want[("settlement", "CNY", hub.merchant_ids[shop])] -= v
                want[("settlement", "CNY", hub.merchant_ids[issuer])] += v
        have = await hub.balances()
        assert {k: v for k, v in have.items() if v} == {k: v for k, v in want.items() if v}
        assert await hub.count("entries WHERE idempotency_key LIKE 'p-%'") == len(earns)
        assert hub.verify() == []
    finally:
        await hub.pool.close()


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(earns=st.lists(EARN, min_size=1, max_size=30), debt=st.booleans())
def test_concurrent_earns_add_up_as_if_one_by_one(
    databases: DatabaseFactory,
    template_database: str,
    earns: list[tuple[Any, ...]],
    debt: bool,
) -> None:
    name = databases.create("exchange_test", template=template_database)
    try:
        asyncio.run(_concurrent_run(databases.url(name), earns, debt))
    finally:
        databases.drop(name)


def test_batches_have_their_own_queue_per_pool() -> None:
    class _Pool:
        pass

    a, b = _Pool(), _Pool()
    assert express_batches.batches_of(a) is express_batches.batches_of(a)  # type: ignore[arg-type]
    assert express_batches.batches_of(a) is not express_batches.batches_of(b)  # type: ignore[arg-type]
