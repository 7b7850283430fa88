"""The express earn: one statement built on a guess, which the database checks."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from exchange.domain.errors import Refusal
from exchange.ledger import express
from exchange.services import catalog, members, merchants, points
from tests.ledger.support import Hub
from tests.ledger.test_bulk import make_debt

pytestmark = pytest.mark.anyio


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts what the express statement did: ``posted``, ``taken`` (key claimed before),
    ``stale`` (guess refused)."""
    counts: Counter[str] = Counter()
    real = express.post_earn

    async def spy(*args: Any, **kwargs: Any) -> Any:
        try:
            out = await real(*args, **kwargs)
        except express.Stale:
            counts["stale"] += 1
            raise
        counts["posted" if out is not None else "taken"] += 1
        return out

    monkeypatch.setattr(express, "post_earn", spy)
    return counts


async def test_a_known_currency_earns_in_one_statement_and_writes_the_same(
    hub: Hub, seen: Counter[str]
) -> None:
    first = await hub.earn("a", 0, "APT", 100, "x1")
    assert seen == {}  # the currency's state is not known yet: the ordinary path
    before = await hub.balances()
    second = await hub.earn("a", 0, "APT", 100, "x2")
    assert seen == {"posted": 1}
    assert second.posted is not None
    assert second.posted.draft is not None
    assert first.posted is not None
    assert first.posted.draft is not None
    # The same legs as the ordinary earn wrote, with the new entry's own key.
    assert [(g.account_id, g.amount) for g in second.posted.draft.legs] == [
        (g.account_id, g.amount) for g in first.posted.draft.legs
    ]
    after = await hub.balances()
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert sorted(moved.values()) == [-100, 100]
    assert [lot[1] for lot in await hub.lots(hub.member_ids[0], "APT")] == [100, 100]
    # A retry replays from the stored outcome.
    again = await hub.earn("a", 0, "APT", 100, "x2")
    assert (again.entry_id, again.replayed) == (second.entry_id, True)
    assert seen == {"posted": 1, "taken": 1}
    assert hub.verify() == []


async def test_a_stale_rate_is_caught_and_the_earn_takes_the_rate_in_force(
    hub: Hub, seen: Counter[str]
) -> None:
    await hub.earn("b", 0, "APT", 100, "s1")  # merchant b buys APT points at 0.01
    await catalog.set_rate(
        hub.pool, hub.merchants["a"], code="APT", rate=Decimal("0.02"), effective_at=None
    )
    out = await hub.earn("b", 0, "APT", 100, "s2")
    assert seen == {"stale": 1}  # the guess (0.01) was refused, nothing kept of it
    assert not out.replayed
    assert out.posted.draft.details["value"] == "2.000000"
    assert await hub.count("requests WHERE idempotency_key = 's2'") == 1
    assert await hub.count("entries WHERE idempotency_key = 's2'") == 1
    # The next earn guesses the new rate and goes express again.
    third = await hub.earn("b", 0, "APT", 50, "s3")
    assert seen == {"stale": 1, "posted": 1}
    assert third.posted.draft.details["value"] == "1.000000"
    assert hub.verify() == []


async def test_a_deactivated_currency_refuses_despite_a_good_guess(
    hub: Hub, seen: Counter[str]
) -> None:
    shop = hub.merchants["a"]
    await hub.earn("a", 0, "APT", 10, "d1")
    await merchants.set_currency_active(hub.pool, shop, code="APT", active=False)
    for _ in range(2):  # the refusal is stored under the key and replayed
        with pytest.raises(Refusal) as refused:
            await hub.earn("a", 0, "APT", 10, "d2")
        assert refused.value.code == "CURRENCY_INACTIVE"
    assert seen["stale"] == 1
    assert await hub.wallet(hub.member_ids[0], "APT") == 10
    await merchants.set_currency_active(hub.pool, shop, code="APT", active=True)
    await hub.earn("a", 0, "APT", 10, "d3")
    assert await hub.wallet(hub.member_ids[0], "APT") == 20
    assert hub.verify() == []


async def test_a_points_debt_fails_the_guess_and_the_earn_repays_it(
    hub: Hub, seen: Counter[str]
) -> None:
    await make_debt(hub, 1, "debt")  # its earn teaches the process the currency's state
    assert await hub.wallet(hub.member_ids[1], "APT") == -100
    await hub.earn("a", 1, "APT", 130, "repay")
    assert seen == {"stale": 1}
    assert await hub.wallet(hub.member_ids[1], "APT") == 30
    assert [lot[1] for lot in await hub.lots(hub.member_ids[1], "APT") if lot[1]] == [30]
    # The wallet was the cause: the state is still trusted for the next earn.
    await hub.earn("a", 1, "APT", 10, "after")
    assert seen == {"stale": 1, "posted": 1}
    assert await hub.wallet(hub.member_ids[1], "APT") == 40
    assert hub.verify() == []


async def test_a_first_earn_creates_the_wallet_on_the_ordinary_path(
    hub: Hub, seen: Counter[str]
) -> None:
    await hub.earn("b", 0, "BPT", 10, "learn")
    member_id, _ = await members.link_member(hub.pool, hub.merchants["b"], "newcomer")
    first = await points.earn(
        hub.pool,
        hub.merchants["b"],
        member_id=member_id,
        currency_code="BPT",
        points=25,
        idempotency_key="hello",
    )
    assert seen == {"stale": 1}  # no wallet yet: rolled back, then created
    assert not first.replayed
    assert await hub.wallet(member_id, "BPT") == 25
    assert await hub.count("requests WHERE idempotency_key = 'hello'") == 1
    await hub.earn("b", 0, "BPT", 5, "known")
    assert seen == {"stale": 1, "posted": 1}
    assert hub.verify() == []


async def test_concurrent_express_twins_write_once_and_a_reused_key_is_refused(
    hub: Hub, seen: Counter[str]
) -> None:
    await hub.earn("c", 2, "CPT", 5, "warm")
    outcomes = await asyncio.gather(*[hub.earn("c", 2, "CPT", 7, "twin") for _ in range(12)])
    assert len({o.entry_id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    assert seen["posted"] == 1
    assert await hub.wallet(hub.member_ids[2], "CPT") == 12
    with pytest.raises(Refusal) as refused:
        await hub.earn("c", 2, "CPT", 8, "twin")
    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert await hub.wallet(hub.member_ids[2], "CPT") == 12
    assert hub.verify() == []


async def test_concurrent_express_earns_and_rate_changes_add_up(
    hub: Hub, seen: Counter[str]
) -> None:
    members = range(len(hub.member_ids))
    for m in members:
        await hub.earn("b", m, "APT", 1, f"w{m}")
    rates = [Decimal("0.01"), Decimal("0.03"), Decimal("0.02")]

    async def change_rates() -> None:
        for r in rates:
            await asyncio.sleep(0.01)
            await catalog.set_rate(
                hub.pool, hub.merchants["a"], code="APT", rate=r, effective_at=None
            )

    outs, _ = await asyncio.gather(
        asyncio.gather(*[hub.earn("b", n % 3, "APT", 10, f"c{n}") for n in range(60)]),
        change_rates(),
    )
    assert seen["posted"] + seen["stale"] >= 1
    for m in members:
        assert await hub.wallet(hub.member_ids[m], "APT") == 1 + 10 * 20
    # Each entry's value is its points at the rate it recorded, which was the rate in force
    # at the entry's time.
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT e.id, (SELECT r.rate FROM rates r JOIN currencies c ON c.id = r.currency_id"
            "   WHERE c.code = 'APT' AND r.effective_at <= e.effective_at"
            "   ORDER BY r.effective_at DESC LIMIT 1)"
            "  FROM entries e WHERE e.idempotency_key LIKE 'c%%'"
        )
        in_force = {int(i): r for i, r in await cur.fetchall()}
    assert len(in_force) == 60
    for o in outs:
        rate = Decimal(o.posted.draft.rates["APT"])
        assert rate == in_force[o.entry_id]
        assert Decimal(o.posted.draft.details["value"]) == rate * 10
    assert hub.verify() == []
