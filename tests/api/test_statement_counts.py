"""SQL statements per request are bounded: a page of 100 entries costs what a page of 10 does."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from world import World, data, gql, make_world

from exchange.api.loaders import BalanceRow, Loaders
from exchange.config import Settings
from exchange.services import shared_reads
from exchange.services.tx import Pool

pytestmark = pytest.mark.anyio

HISTORY = """query ($n: Int!) { wallet { history(first: $n) { edges { cursor node {
  id kind recordedAt points value reason memo
  currency { code rate issuer { code } }
  merchant { code name }
  movements { currency { code } points }
} } pageInfo { hasNextPage } } } }"""


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.active = False


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> StatementCounter:
    counting = StatementCounter()
    original = psycopg.AsyncCursor.execute

    async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if counting.active:
            counting.statements.append(str(query))
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", execute)
    return counting


async def _count(
    counter: StatementCounter,
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any],
    headers: dict[str, str],
) -> tuple[int, dict[str, Any]]:
    counter.statements.clear()
    counter.active = True
    try:
        body = data(await gql(client, query, variables, headers))
    finally:
        counter.active = False
    return len(counter.statements), body


async def test_history_page_statements_do_not_grow_with_the_page(
    pool: Pool, settings: Settings, client: httpx.AsyncClient, counter: StatementCounter
) -> None:
    world: World = await make_world(pool, settings)
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(air, "MILES", "0.05", scale=2)
    member = await world.member(tea, "c-1")
    for i in range(60):
        await world.earn(tea, member, "TEA", 10 + i)
        await world.earn(air, member, "MILES", 100 + i)
    headers = await world.member_headers(tea, "c-1")

    small, small_body = await _count(counter, client, HISTORY, {"n": 10}, headers)
    large, large_body = await _count(counter, client, HISTORY, {"n": 100}, headers)

    assert len(small_body["wallet"]["history"]["edges"]) == 10
    assert len(large_body["wallet"]["history"]["edges"]) == 100
    assert {e["node"]["merchant"]["code"] for e in large_body["wallet"]["history"]["edges"]} == {
        "tea-house",
        "air-line",
    }
    assert large == small, counter.statements
    assert small <= 5, counter.statements


async def test_wallet_balances_are_one_statement(
    pool: Pool, settings: Settings, client: httpx.AsyncClient, counter: StatementCounter
) -> None:
    world: World = await make_world(pool, settings)
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(tea, "GOLD", "2.5")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 10)
    await world.earn(tea, member, "GOLD", 3)
    headers = await world.member_headers(tea, "c-1")

    query = "{ wallet { totalValue balances { currency { code rate } points value rate } } }"
    count, body = await _count(counter, client, query, {}, headers)
    assert body["wallet"]["totalValue"] == "7.600000"
    assert count == 1, counter.statements


async def test_customers_wallets_in_one_request_are_read_once_each(
    pool: Pool, settings: Settings, client: httpx.AsyncClient, counter: StatementCounter
) -> None:
    """A merchant reading three customers' wallets in one request: each wallet is read once
    (not once per field that shows it), in at most one statement each (reads that arrive
    while another is in the database share the next one: how many do depends on timing);
    each customer gets its own balances."""
    world: World = await make_world(pool, settings)
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(tea, "GOLD", "2.5")
    for n, ref in enumerate(("c-1", "c-2", "c-3"), start=1):
        member = await world.member(tea, ref)
        await world.earn(tea, member, "TEA", 10 * n)
    await world.earn(tea, await world.member(tea, "c-2"), "GOLD", 4)
    wallet = "wallet { totalValue balances { currency { code } points } }"
    looks = " ".join(
        f'{alias}: customer(customerRef: "{ref}") {{ {wallet} }}'
        for alias, ref in (("a", "c-1"), ("b", "c-2"), ("c", "c-3"))
    )

    before = dict(shared_reads.STATS)
    await _count(counter, client, "{ " + looks + " }", {}, tea.headers)
    reads = shared_reads.STATS["reads"] - before.get("reads", 0)
    statements = [q for q in counter.statements if "a.kind = 'wallet'" in q]
    assert reads == 3
    assert 1 <= len(statements) <= 3, counter.statements
    body = data(await gql(client, "{ " + looks + " }", {}, tea.headers))
    assert body["a"]["wallet"] == {
        "totalValue": "0.100000",
        "balances": [{"currency": {"code": "TEA"}, "points": "10"}],
    }
    assert body["b"]["wallet"]["balances"] == [
        {"currency": {"code": "GOLD"}, "points": "4"},
        {"currency": {"code": "TEA"}, "points": "20"},
    ]
    assert body["b"]["wallet"]["totalValue"] == "10.200000"
    assert body["c"]["wallet"]["totalValue"] == "0.300000"


async def test_a_wallet_reads_its_balances_only_when_its_selection_may_show_them(
    pool: Pool, settings: Settings, client: httpx.AsyncClient, counter: StatementCounter
) -> None:
    """The wallet reads its balances when it is opened, if its selection has a field that
    shows them or a fragment (read whatever the fragment holds); otherwise it reads none."""
    world: World = await make_world(pool, settings)
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 250)
    headers = await world.member_headers(tea, "c-1")
    shown = {"balances": [{"points": "250"}], "totalValue": "2.500000"}
    unit = {"settlementCurrency": settings.settlement_currency}

    def wallet_statements() -> int:
        return sum("a.kind = 'wallet'" in q for q in counter.statements)

    queries = {
        "{ wallet { settlementCurrency } }": (0, unit),
        "{ wallet { balances { points } totalValue } }": (1, shown),
        "{ wallet { totalValue } }": (1, {"totalValue": "2.500000"}),
        "{ a: wallet { balances { points } } b: wallet { totalValue } }": (1, None),
        "{ wallet { ... on Wallet { balances { points } } totalValue } }": (1, shown),
        "{ wallet { ...W } } fragment W on Wallet { balances { points } totalValue }": (1, shown),
        "{ wallet { ...S } } fragment S on Wallet { settlementCurrency }": (1, unit),
    }
    for query, (statements, expected) in queries.items():
        _, body = await _count(counter, client, query, {}, headers)
        if expected is None:  # two wallets of one member: one read for the request
            assert body == {"a": {"balances": shown["balances"]}, "b": {"totalValue": "2.500000"}}
        else:
            assert body["wallet"] == expected, query
        assert wallet_statements() == statements, (query, counter.statements)
    look = '{ customer(customerRef: "c-1") { id } }'
    member_id = data(await gql(client, look, {}, tea.headers))["customer"]["id"]
    node = "query ($id: ID!) { node(id: $id) { ... on Member { wallet { ...W } } } }"
    node += " fragment W on Wallet { totalValue }"
    _, body = await _count(counter, client, node, {"id": member_id}, tea.headers)
    assert body["node"]["wallet"] == {"totalValue": "2.500000"}
    assert wallet_statements() == 1, counter.statements


async def test_one_wallet_and_several_wallets_read_the_same_balances(
    pool: Pool, settings: Settings
) -> None:
    """One wallet is read with a scalar parameter (PostgreSQL keeps its generic plan),
    several in one batch with an array: both give each member exactly its own balances."""
    world: World = await make_world(pool, settings)
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(tea, "GOLD", "2.5")
    alice = await world.member(tea, "c-1")
    bob = await world.member(tea, "c-2")
    carol = await world.member(tea, "c-3")
    await world.earn(tea, alice, "TEA", 10)
    await world.earn(tea, alice, "GOLD", 3)
    await world.earn(tea, bob, "GOLD", 1)

    def seen(rows: list[BalanceRow]) -> list[tuple[str, int]]:
        return [(r.currency.code, r.amount) for r in rows]

    request = Loaders(pool)
    batched = await asyncio.gather(*(request.balances(m) for m in (alice, bob, carol)))
    alone = []
    for m in (alice, bob, carol):
        each = Loaders(pool)
        alone.append(await each.balances(m))

    assert [seen(rows) for rows in batched] == [[("GOLD", 3), ("TEA", 10)], [("GOLD", 1)], []]
    assert [seen(rows) for rows in alone] == [seen(rows) for rows in batched]
