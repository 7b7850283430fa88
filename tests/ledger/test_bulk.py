"""Bulk earns: the same ledger as earning one by one, per-item outcomes, replays, races."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from exchange.domain.errors import Forbidden, Refusal
from exchange.services import bulk, clock, members, points, reversal
from exchange.services.bulk import EarnItem, EarnResult, earn_many
from exchange.services.tx import RETRIES
from tests.ledger.support import Hub, build_hub, totals

pytestmark = pytest.mark.anyio

CNY = 1_000_000


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """One instant for every operation, so lots' expiry dates compare exactly."""
    now = clock.now()
    monkeypatch.setattr(clock, "now", lambda: now)
    return now


@pytest.fixture
async def wide_hub(anyio_backend: str, database_url: str) -> AsyncIterator[Hub]:
    h = await build_hub(database_url, members_count=6, pool_size=12)
    try:
        yield h
    finally:
        await h.pool.close()


def code(result: EarnResult) -> str | None:
    """The refusal code of a result (``None`` for an entry)."""
    return None if result.refusal is None else result.refusal.code


def item(hub: Hub, member: int, code: str, n: int, key: str, **details: Any) -> EarnItem:
    return EarnItem(hub.member_ids[member], code, n, key, details or None)


async def single(hub: Hub, shop: str, it: EarnItem) -> int:
    out = await points.earn(
        hub.pool,
        hub.merchants[shop],
        member_id=it.member_id,
        currency_code=it.currency_code,
        points=it.points,
        idempotency_key=it.idempotency_key,
        details=dict(it.details) if it.details else None,
    )
    return out.entry_id


async def entry_view(hub: Hub, entry_id: int, mirror: int) -> tuple[Any, ...]:
    """An entry as owners and amounts (members folded by ``mirror``), without ids or keys."""
    names = {v: k for k, v in hub.merchant_ids.items()}
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, merchant_id, member_id, rates, details FROM entries WHERE id = %s",
            (entry_id,),
        )
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute(
            "SELECT p.seq, a.kind, a.member_id, a.merchant_id, c.code, p.amount FROM postings p"
            "  JOIN accounts a ON a.id = p.account_id JOIN currencies c ON c.id = p.asset_id"
            " WHERE p.entry_id = %s ORDER BY p.seq",
            (entry_id,),
        )
        legs = await cur.fetchall()
        cur = await conn.execute(
            "SELECT original, remaining, earned_at, expires_at FROM lots WHERE entry_id = %s",
            (entry_id,),
        )
        lots = await cur.fetchall()

    def owner(member: int | None, merchant: int | None) -> str:
        if member is not None:
            return f"m{hub.member_ids.index(member) % mirror}"
        return names.get(merchant, "hub") if merchant is not None else "hub"

    kind, merchant, member, rates, details = row
    return (
        kind,
        names[merchant],
        owner(member, None),
        rates,
        details,
        [(s, k, owner(m, mm), c, int(a)) for s, k, m, mm, c, a in legs],
        [(int(o), int(r), e, x) for o, r, e, x in lots],
    )


def folded(balances: dict[tuple[str, str, int | None], int], hub: Hub, side: range) -> Any:
    """Wallet balances of the members in ``side``, keyed by their position in it."""
    out = {}
    for i, m in enumerate(side):
        for (kind, code, owner), amount in balances.items():
            if kind == "wallet" and owner == hub.member_ids[m]:
                out[(i, code)] = amount
    return out


def delta(
    before: dict[tuple[str, str, int | None], int], after: dict[tuple[str, str, int | None], int]
) -> dict[Any, int]:
    """How the non-wallet accounts moved between two snapshots."""
    moved = {k: v - before.get(k, 0) for k, v in after.items() if k[0] != "wallet"}
    return {k: v for k, v in moved.items() if v}


async def make_debt(hub: Hub, member: int, key: str) -> None:
    """Leave ``member`` with a points debt of 100 APT (an earn spent, then reversed)."""
    e = await points.earn(
        hub.pool,
        hub.merchants["a"],
        member_id=hub.member_ids[member],
        currency_code="APT",
        points=100,
        idempotency_key=f"{key}-earn",
    )
    await points.redeem(
        hub.pool,
        hub.merchants["b"],
        member_id=hub.member_ids[member],
        currency_code="APT",
        points=100,
        idempotency_key=f"{key}-spend",
    )
    await reversal.reverse(
        hub.pool,
        hub.merchants["a"],
        entry_id=e.entry_id,
        points=None,
        idempotency_key=f"{key}-refund",
    )


async def test_a_bulk_call_writes_what_one_by_one_earns_write(
    wide_hub: Hub, frozen: datetime
) -> None:
    hub = wide_hub
    for member in (2, 5):
        await make_debt(hub, member, f"debt{member}")

    def plan(base: int, prefix: str) -> list[EarnItem]:
        return [
            item(hub, base + 0, "APT", 1000, f"{prefix}1"),
            item(hub, base + 1, "APT", 250, f"{prefix}2", reason="welcome"),
            item(hub, base + 0, "APT", 7, f"{prefix}3"),  # same wallet again
            item(hub, base + 0, "CPT", 40, f"{prefix}4"),  # partner earn: A buys CPT from C
            item(hub, base + 2, "APT", 30, f"{prefix}5"),  # repays 30 of a 100 debt
            item(hub, base + 2, "APT", 100, f"{prefix}6"),  # repays the rest, keeps 30
            item(hub, base + 1, "BPT", 12345, f"{prefix}7"),  # partner, scale 2
        ]

    before = await hub.balances()
    results = await earn_many(hub.pool, hub.merchants["a"], plan(0, "bulk-"))
    assert all(r.ok and not r.replayed for r in results)
    after_bulk = await hub.balances()
    single_ids = [await single(hub, "a", it) for it in plan(3, "one-")]
    after_single = await hub.balances()

    assert folded(after_bulk, hub, range(3)) == folded(after_single, hub, range(3, 6))
    assert folded(after_bulk, hub, range(3)) == {
        (0, "APT"): 1007,
        (0, "CPT"): 40,
        (1, "APT"): 250,
        (1, "BPT"): 12345,
        (2, "APT"): 30,
    }
    assert delta(before, after_bulk) == delta(after_bulk, after_single) != {}
    for bulk_result, single_id in zip(results, single_ids, strict=True):
        assert bulk_result.entry_id is not None
        assert await entry_view(hub, bulk_result.entry_id, 3) == await entry_view(hub, single_id, 3)
    for i in range(3):
        for code in ("APT", "BPT", "CPT"):
            assert await hub.lots(hub.member_ids[i], code) == await hub.lots(
                hub.member_ids[i + 3], code
            )
    assert [r for _, r, _ in await hub.lots(hub.member_ids[2], "APT")] == [0, 0, 30]
    assert set(totals(after_single).values()) == {0}
    assert hub.verify() == []


async def test_existing_wallets_are_found_and_locked_in_one_statement(
    wide_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When every wallet of a call exists, one statement finds them and reads their locked
    balances (a debt is repaid from it); one missing wallet sends the whole call the long
    way: create it, then lock every wallet."""
    hub = wide_hub
    await make_debt(hub, 2, "debt")
    for member in (0, 1):
        await single(hub, "a", item(hub, member, "APT", 5, f"seed{member}"))
    created: list[list[tuple[int, int]]] = []
    create = bulk._wallets

    async def creating(conn: Any, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
        created.append(pairs)
        return await create(conn, pairs)

    monkeypatch.setattr(bulk, "_wallets", creating)
    existing = [
        item(hub, 2, "APT", 30, "x1"),  # repays 30 of the 100 debt
        item(hub, 0, "APT", 7, "x2"),
        item(hub, 2, "APT", 100, "x3"),  # repays the other 70, keeps 30
        item(hub, 1, "APT", 9, "x4"),
    ]
    assert all(r.ok for r in await earn_many(hub.pool, hub.merchants["a"], existing))
    assert created == []
    assert await hub.wallet(hub.member_ids[2], "APT") == 30
    assert [r for _, r, _ in await hub.lots(hub.member_ids[2], "APT")] == [0, 0, 30]

    mixed = [item(hub, 0, "APT", 1, "y1"), item(hub, 3, "APT", 2, "y2")]
    assert all(r.ok for r in await earn_many(hub.pool, hub.merchants["a"], mixed))
    assert len(created) == 1
    assert await hub.wallet(hub.member_ids[0], "APT") == 13
    assert await hub.wallet(hub.member_ids[3], "APT") == 2
    assert set(totals(await hub.balances()).values()) == {0}
    assert hub.verify() == []


async def test_replays_per_item_and_across_single_and_bulk(hub: Hub) -> None:
    items = [item(hub, i % 3, "APT", 10 + i, f"k{i}") for i in range(20)]
    first = await earn_many(hub.pool, hub.merchants["a"], items)
    assert all(r.ok and not r.replayed for r in first)
    entries = await hub.count("entries")
    again = await earn_many(hub.pool, hub.merchants["a"], list(reversed(items)))
    assert [r.entry_id for r in again] == [r.entry_id for r in reversed(first)]
    assert all(r.replayed for r in again)
    assert await hub.count("entries") == entries

    # A single earn under a bulk item's key replays it, and the other way round.
    assert await single(hub, "a", items[3]) == first[3].entry_id
    lone = item(hub, 1, "APT", 77, "lone")
    lone_id = await single(hub, "a", lone)
    mixed = await earn_many(hub.pool, hub.merchants["a"], [lone, item(hub, 1, "APT", 5, "new")])
    assert mixed[0] == EarnResult("lone", entry_id=lone_id, replayed=True)
    assert mixed[1].ok
    assert not mixed[1].replayed

    # Keys belong to the merchant: another merchant's same key is a new request.
    other = await earn_many(hub.pool, hub.merchants["b"], [item(hub, 0, "BPT", 10, "k0")])
    assert other[0].ok
    assert not other[0].replayed

    # The same key with a different request is refused and writes nothing.
    changed = await earn_many(
        hub.pool, hub.merchants["a"], [item(hub, 0, "APT", 999, "k0"), item(hub, 0, "APT", 1, "z")]
    )
    assert code(changed[0]) == "IDEMPOTENCY_KEY_REUSED"
    assert changed[1].ok
    with pytest.raises(Refusal) as exc:
        await single(hub, "a", item(hub, 0, "APT", 999, "k1"))
    assert exc.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert await hub.wallet(hub.member_ids[0], "APT") == sum(10 + i for i in range(0, 20, 3)) + 1
    assert hub.verify() == []


async def test_repeated_keys_inside_one_call_act_as_sent_one_after_the_other(hub: Hub) -> None:
    results = await earn_many(
        hub.pool,
        hub.merchants["a"],
        [
            item(hub, 0, "APT", 5, "dup"),
            item(hub, 0, "APT", 5, "dup"),
            item(hub, 0, "APT", 6, "dup"),
            item(hub, 0, "NOPE", 5, "nope"),
            item(hub, 0, "NOPE", 5, "nope"),
        ],
    )
    assert results[0].ok
    assert not results[0].replayed
    assert results[1] == EarnResult("dup", entry_id=results[0].entry_id, replayed=True)
    assert code(results[2]) == "IDEMPOTENCY_KEY_REUSED"
    assert code(results[3]) == "UNKNOWN_CURRENCY"
    assert results[4].replayed
    assert code(results[4]) == "UNKNOWN_CURRENCY"
    assert await hub.count("entries") == 1
    assert await hub.wallet(hub.member_ids[0], "APT") == 5


async def test_one_items_refusal_leaves_the_others_alone(hub: Hub) -> None:
    async with hub.pool.connection() as conn:
        await conn.execute(
            "UPDATE merchants SET exposure_limit_micro = %s WHERE id = %s",
            (10 * CNY, hub.merchant_ids["a"]),
        )
        await conn.execute("UPDATE currencies SET active = false WHERE code = 'CPT'")
    m0 = hub.member_ids[0]
    items = [
        item(hub, 0, "APT", 600, "ok1"),  # 6.00 of A's 10.00 limit
        item(hub, 0, "NOPE", 5, "unknown"),
        item(hub, 0, "APT", 0, "zero"),
        item(hub, 0, "APT", 10**16, "huge"),
        item(hub, 0, "APT", 5, "bad key!"),
        EarnItem(m0 + 10_000, "APT", 5, "ghost"),
        item(hub, 1, "APT", 500, "over"),  # 6.00 + 5.00 > 10.00
        item(hub, 1, "APT", 400, "ok2"),  # exactly 10.00
        item(hub, 2, "CPT", 5, "inactive"),
    ]
    results = await earn_many(hub.pool, hub.merchants["a"], items)
    codes = [code(r) for r in results]
    assert codes == [
        None,
        "UNKNOWN_CURRENCY",
        "INVALID_AMOUNT",
        "INVALID_AMOUNT",
        "INVALID_IDEMPOTENCY_KEY",
        "NOT_FOUND",
        "EXPOSURE_LIMIT",
        None,
        "CURRENCY_INACTIVE",
    ]
    assert [r.idempotency_key for r in results] == [i.idempotency_key for i in items]
    assert await hub.count("entries") == 2
    assert await hub.wallet(m0, "APT") == 600
    assert await hub.wallet(hub.member_ids[1], "APT") == 400
    # Refusals decided after the claim are recorded under their keys, as for one earn;
    # malformed input is not.
    assert await hub.count("requests") == 5
    with pytest.raises(Refusal) as exc:
        await single(hub, "a", items[6])
    assert exc.value.code == "EXPOSURE_LIMIT"
    async with hub.pool.connection() as conn:
        await conn.execute("UPDATE currencies SET active = true WHERE code = 'CPT'")
    again = await earn_many(hub.pool, hub.merchants["a"], [items[8], items[2]])
    assert again[0].replayed
    assert code(again[0]) == "CURRENCY_INACTIVE"
    assert code(again[1]) == "INVALID_AMOUNT"
    assert hub.verify() == []


async def test_limits_and_callers(hub: Hub) -> None:
    assert await earn_many(hub.pool, hub.merchants["a"], []) == []
    too_many = [item(hub, 0, "APT", 1, f"k{i}") for i in range(bulk.MAX_ITEMS + 1)]
    with pytest.raises(Refusal) as exc:
        await earn_many(hub.pool, hub.merchants["a"], too_many)
    assert exc.value.field == "items"
    with pytest.raises(Forbidden):
        await earn_many(hub.pool, hub.member(0), too_many[:1])
    assert await hub.count("requests") == 0


async def test_a_full_call_of_a_thousand_earns(wide_hub: Hub) -> None:
    hub = wide_hub
    items = [
        item(hub, i % 6, ("APT", "BPT", "CPT")[i % 3], 1 + i % 50, f"big-{i}")
        for i in range(bulk.MAX_ITEMS)
    ]
    results = await earn_many(hub.pool, hub.merchants["b"], items)
    assert all(r.ok for r in results)
    assert len({r.entry_id for r in results}) == bulk.MAX_ITEMS
    assert await hub.count("entries") == bulk.MAX_ITEMS
    assert await hub.count("lots") == bulk.MAX_ITEMS
    expected: Counter[tuple[int, str]] = Counter()
    for it in items:
        expected[(it.member_id, it.currency_code)] += it.points
    for (member_id, code), n in expected.items():
        assert await hub.wallet(member_id, code) == n
    assert set(totals(await hub.balances()).values()) == {0}
    assert hub.verify() == []


async def test_concurrent_calls_with_overlapping_keys_write_each_key_once(wide_hub: Hub) -> None:
    hub = wide_hub
    deadlocks = RETRIES["deadlock"]
    items = [item(hub, i % 6, "APT", 1 + i % 7, f"race-{i}") for i in range(300)]
    calls = [
        items[:200],
        list(reversed(items[100:])),
        items[50:250],
        items[::2],
    ]
    singles = [item(hub, i % 6, "APT", 3, f"solo-{i}") for i in range(40)]

    async def solo(it: EarnItem) -> int:
        return await single(hub, "a", it)

    shared = items[:40:3]
    outcome = await asyncio.gather(
        *(earn_many(hub.pool, hub.merchants["a"], c) for c in calls),
        *(solo(it) for it in singles),
        *(solo(it) for it in shared),
    )
    by_key: dict[str, set[int | None]] = {}
    for results in outcome[: len(calls)]:
        assert isinstance(results, list)
        for r in results:
            assert r.ok
            by_key.setdefault(r.idempotency_key, set()).add(r.entry_id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert set(by_key) == {it.idempotency_key for it in items}
    for it, entry_id in zip(shared, outcome[-len(shared) :], strict=True):
        assert by_key[it.idempotency_key] == {entry_id}
    assert await hub.count("entries") == len(items) + len(singles)
    expected: Counter[int] = Counter()
    for it in [*items, *singles]:
        expected[it.member_id] += it.points
    for member_id, n in expected.items():
        assert await hub.wallet(member_id, "APT") == n
    assert RETRIES["deadlock"] == deadlocks
    assert hub.verify() == []


async def test_concurrent_bulk_and_single_writers_take_balance_rows_in_one_order(
    anyio_backend: str, database_url: str
) -> None:
    """Calls on disjoint wallets but the same hot accounts (every stripe) never deadlock."""
    hub = await build_hub(database_url, members_count=20, pool_size=12)
    try:
        deadlocks = RETRIES["deadlock"]
        expected: Counter[tuple[int, str]] = Counter()
        for rnd in range(5):
            calls = [
                [
                    item(hub, 4 * c + i % 4, ("APT", "CPT")[i % 2], 1 + i % 5, f"r{rnd}-{c}-{i}")
                    for i in range(101 + 7 * c)
                ]
                for c in range(4)
            ]
            singles = [
                item(hub, 16 + i % 4, ("CPT", "APT")[i % 2], 2, f"r{rnd}-s{i}") for i in range(8)
            ]
            outcome = await asyncio.gather(
                *(earn_many(hub.pool, hub.merchants["a"], c) for c in calls),
                *(single(hub, "a", it) for it in singles),
            )
            for results in outcome[: len(calls)]:
                assert isinstance(results, list)
                assert all(r.ok for r in results)
            for it in [*(it for c in calls for it in c), *singles]:
                expected[(it.member_id, it.currency_code)] += it.points
        for (member_id, currency), n in expected.items():
            assert await hub.wallet(member_id, currency) == n
        assert RETRIES["deadlock"] == deadlocks
        assert set(totals(await hub.balances()).values()) == {0}
        assert hub.verify() == []
    finally:
        await hub.pool.close()


BATCH = """
mutation($input: AwardPointsBatchInput!) {
  awardPointsBatch(input: $input) {
    awarded refused
    results { idempotencyKey entryId points replayed userErrors { code field message } }
    userErrors { code field message }
  }
}"""


async def test_the_award_points_batch_mutation(hub: Hub) -> None:
    """``awardPointsBatch`` through GraphQL: per-item results in input order, replays."""
    import strawberry

    from exchange.api.context import Context
    from exchange.api.loaders import Loaders
    from exchange.api.mutations.bulk import BulkMutation
    from exchange.api.queries import Query
    from exchange.api.schema import NODE_TYPES, config
    from exchange.config import Settings

    schema = strawberry.Schema(
        query=Query, mutation=BulkMutation, types=NODE_TYPES, config=config(True)
    )

    async def call(actor_shop: str, items: list[dict[str, Any]]) -> Any:
        context = Context(
            request=None,
            response=None,
            actor=hub.merchants[actor_shop],
            pool=hub.pool,
            settings=Settings(),
            secrets=None,
            loaders=Loaders(hub.pool),
        )
        result = await schema.execute(
            BATCH, variable_values={"input": {"items": items}}, context_value=context
        )
        assert result.errors is None, result.errors
        assert result.data is not None
        return result.data["awardPointsBatch"]

    def award(ref: str, currency: str, points: str, key: str, **more: str) -> dict[str, Any]:
        return {
            "customerRef": ref,
            "currency": currency,
            "points": points,
            "idempotencyKey": key,
            **more,
        }

    items = [
        award("cust-0", "APT", "100", "g1", reason="welcome"),
        award("nobody", "APT", "5", "g2"),
        award("cust-1", "NOPE", "5", "g3"),
        award("cust-1", "APT", "0", "g4"),
        award("cust-1", "APT", "1.5", "g5"),
        award("cust-1", "BPT", "1.25", "g6"),  # partner earn, scale 2
        award("cust-2", "APT", "7", "bad key"),
    ]
    out = await call("a", items)
    assert [r["idempotencyKey"] for r in out["results"]] == [i["idempotencyKey"] for i in items]
    assert [[e["code"] for e in r["userErrors"]] for r in out["results"]] == [
        [],
        ["NOT_FOUND"],
        ["UNKNOWN_CURRENCY"],
        ["INVALID_AMOUNT"],
        ["INVALID_AMOUNT"],
        [],
        ["INVALID_IDEMPOTENCY_KEY"],
    ]
    assert (out["awarded"], out["refused"]) == (2, 5)
    assert out["results"][5]["points"] == "1.25"
    assert await hub.wallet(hub.member_ids[0], "APT") == 100
    assert await hub.wallet(hub.member_ids[1], "BPT") == 125
    first = out["results"][0]["entryId"]
    again = await call("a", items[:1])
    assert again["results"][0]["entryId"] == first
    assert again["results"][0]["replayed"] is True
    # The same key, request and reason through the single mutation's service replays it.
    outcome = await points.earn(
        hub.pool,
        hub.merchants["a"],
        member_id=hub.member_ids[0],
        currency_code="APT",
        points=100,
        idempotency_key="g1",
        details={"reason": "welcome"},
    )
    assert outcome.replayed
    # A reference beyond ASCII, with quotes and a backslash, finds its member.
    odd = 'Zoë "客户" \\ 7'
    linked, _ = await members.link_member(hub.pool, hub.merchants["a"], odd)
    both = await call("a", [award(odd, "APT", "3", "u1"), award("cust-1", "APT", "2", "u2")])
    assert [r["userErrors"] for r in both["results"]] == [[], []]
    assert await hub.wallet(linked, "APT") == 3
    too_many = await call("a", [award("cust-0", "APT", "1", f"m{i}") for i in range(1001)])
    assert too_many["results"] == []
    assert [e["code"] for e in too_many["userErrors"]] == ["INVALID_INPUT"]
    assert await hub.count("entries") == 4
    assert hub.verify() == []
