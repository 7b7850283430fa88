"""Member and merchant queries over HTTP with real credentials: balances, lots, history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from world import World, codes, data, gql, make_world

from exchange.config import Settings
from exchange.domain.expiry import ExpiryPolicy
from exchange.services.tx import Pool

pytestmark = pytest.mark.anyio

WALLET = """
{ wallet {
    settlementCurrency totalValue
    balances { currency { code scale rate issuer { code } } points rate value }
} }
"""

HISTORY = """
query ($first: Int!, $after: String, $filter: HistoryFilter) {
  wallet { history(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id kind points value currency { code } merchant { code }
                          movements { currency { code } points } } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  } }
}
"""


@pytest.fixture
async def world(pool: Pool, settings: Settings) -> World:
    return await make_world(pool, settings)


async def _history_pages(
    client: httpx.AsyncClient, headers: dict[str, str], first: int, **filters: Any
) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    for _ in range(50):
        body = await gql(
            client,
            HISTORY,
            {"first": first, "after": after, "filter": filters or None},
            headers,
        )
        page = data(body)["wallet"]["history"]
        nodes += [edge["node"] for edge in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]
    raise AssertionError("history never ended")


async def test_balances_are_valued_at_current_rates(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(air, "MILES", "0.0375", scale=2)
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 1234)
    await world.earn(air, member, "MILES", 1050)  # 10.50 miles
    await world.link(air, "air-7", member)

    wallet = data(await gql(client, WALLET, headers=await world.member_headers(tea, "c-1")))[
        "wallet"
    ]

    assert wallet["settlementCurrency"] == "CNY"
    by_code = {b["currency"]["code"]: b for b in wallet["balances"]}
    assert by_code["TEA"] == {
        "currency": {"code": "TEA", "scale": 0, "rate": "0.01", "issuer": {"code": "tea-house"}},
        "points": "1234",
        "rate": "0.01",
        "value": "12.340000",
    }
    assert by_code["MILES"]["points"] == "10.50"
    assert by_code["MILES"]["value"] == "0.393750"  # 10.50 × 0.0375
    assert wallet["totalValue"] == "12.733750"
    assert Decimal(wallet["totalValue"]) == sum(Decimal(b["value"]) for b in wallet["balances"])


async def test_a_rate_change_revalues_the_balance(world: World, client: httpx.AsyncClient) -> None:
    from exchange.services.catalog import set_rate

    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 1000)
    headers = await world.member_headers(tea, "c-1")
    assert data(await gql(client, WALLET, headers=headers))["wallet"]["totalValue"] == "10.000000"

    await set_rate(world.pool, tea.actor, code="TEA", rate=Decimal("0.02"))
    wallet = data(await gql(client, WALLET, headers=headers))["wallet"]
    assert wallet["totalValue"] == "20.000000"
    assert wallet["balances"][0]["rate"] == "0.02"
    assert wallet["balances"][0]["currency"]["rate"] == "0.02"  # no node kept from before


async def test_expiring_soon_lists_points_within_the_window(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01", expiry=ExpiryPolicy("days", 10))
    await world.currency(tea, "GOLD", "1", expiry=ExpiryPolicy("days", 90))
    await world.currency(tea, "KEEP", "1")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 300)
    await world.earn(tea, member, "GOLD", 7)
    await world.earn(tea, member, "KEEP", 9)
    headers = await world.member_headers(tea, "c-1")
    query = """query ($d: Int!) {
      wallet { expiringSoon(withinDays: $d) { currency { code } points expiresAt } } }"""

    soon = data(await gql(client, query, {"d": 30}, headers))["wallet"]["expiringSoon"]
    assert [(e["currency"]["code"], e["points"]) for e in soon] == [("TEA", "300")]
    expires = datetime.fromisoformat(soon[0]["expiresAt"])
    assert expires.tzinfo is not None
    assert timedelta(days=9) < expires - datetime.now(UTC) <= timedelta(days=10)

    later = data(await gql(client, query, {"d": 100}, headers))["wallet"]["expiringSoon"]
    assert [e["currency"]["code"] for e in later] == ["TEA", "GOLD"]
    assert data(await gql(client, query, {"d": 5}, headers))["wallet"]["expiringSoon"] == []
    assert codes(await gql(client, query, {"d": -1}, headers)) == ["INVALID_ARGUMENT"]


async def test_lots_page_soonest_expiring_first(world: World, client: httpx.AsyncClient) -> None:
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01", expiry=ExpiryPolicy("days", 30))
    await world.currency(tea, "KEEP", "0.01")
    member = await world.member(tea, "c-1")
    for n in (10, 20, 30):
        await world.earn(tea, member, "KEEP", n)
        await world.earn(tea, member, "TEA", n)
    await world.redeem(tea, member, "TEA", 15)  # empties the first TEA lot, half of the second
    headers = await world.member_headers(tea, "c-1")
    query = """query ($first: Int!, $after: String, $c: String) {
      wallet { lots(first: $first, after: $after, currency: $c) {
        edges { cursor node { id currency { code } original remaining earnedAt expiresAt } }
        pageInfo { hasNextPage endCursor } } } }"""

    seen: list[dict[str, Any]] = []
    after = None
    while True:
        page = data(await gql(client, query, {"first": 2, "after": after}, headers))["wallet"][
            "lots"
        ]
        seen += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [(lot["currency"]["code"], lot["original"], lot["remaining"]) for lot in seen] == [
        ("TEA", "20", "15"),
        ("TEA", "30", "30"),
        ("KEEP", "10", "10"),
        ("KEEP", "20", "20"),
        ("KEEP", "30", "30"),
    ]
    assert all(lot["expiresAt"] is None for lot in seen[2:])
    assert len({lot["id"] for lot in seen}) == 5

    only = data(await gql(client, query, {"first": 10, "c": "KEEP"}, headers))["wallet"]["lots"]
    assert [edge["node"]["original"] for edge in only["edges"]] == ["10", "20", "30"]


async def test_history_pages_newest_first_and_cursors_survive_new_entries(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    member = await world.member(tea, "c-1")
    for n in range(1, 26):
        await world.earn(tea, member, "TEA", n)
    headers = await world.member_headers(tea, "c-1")

    nodes = await _history_pages(client, headers, 10)
    assert [node["points"] for node in nodes] == [str(n) for n in range(25, 0, -1)]
    assert len({node["id"] for node in nodes}) == 25
    assert nodes[0]["value"] == "0.250000"
    assert nodes[0]["merchant"] == {"code": "tea-house"}
    assert nodes[0]["movements"] == [{"currency": {"code": "TEA"}, "points": "25"}]

    first = data(await gql(client, HISTORY, {"first": 10}, headers))["wallet"]["history"]
    for n in range(3):
        await world.earn(tea, member, "TEA", 100 + n)  # newer entries do not shift the pages
    second = data(
        await gql(client, HISTORY, {"first": 10, "after": first["pageInfo"]["endCursor"]}, headers)
    )["wallet"]["history"]
    assert [edge["node"]["points"] for edge in second["edges"]] == [
        str(n) for n in range(15, 5, -1)
    ]


async def test_history_filters(world: World, client: httpx.AsyncClient) -> None:
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(air, "MILES", "0.05")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 100)
    await world.earn(air, member, "MILES", 40)
    await world.redeem(tea, member, "TEA", 30)
    middle = datetime.now(UTC)
    await world.redeem(air, member, "TEA", 20)  # TEA accepted at the airline
    headers = await world.member_headers(tea, "c-1")

    redeems = await _history_pages(client, headers, 10, kinds=["REDEEM"])
    assert [(n["kind"], n["points"], n["merchant"]["code"]) for n in redeems] == [
        ("REDEEM", "-20", "air-line"),
        ("REDEEM", "-30", "tea-house"),
    ]
    tea_only = await _history_pages(client, headers, 2, currency="TEA")
    assert [n["points"] for n in tea_only] == ["-20", "-30", "100"]
    miles = await _history_pages(client, headers, 10, currency="MILES")
    assert [n["points"] for n in miles] == ["40"]
    recent = await _history_pages(client, headers, 10, since=middle.isoformat())
    assert [n["points"] for n in recent] == ["-20"]
    earlier = await _history_pages(client, headers, 10, until=middle.isoformat())
    assert [n["points"] for n in earlier] == ["-30", "40", "100"]
    assert await _history_pages(client, headers, 10, currency="NOPE") == []

    naive = await gql(
        client, HISTORY, {"first": 5, "filter": {"since": "2026-01-01T00:00:00"}}, headers
    )
    assert codes(naive) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_page_size_and_cursor_are_checked(world: World, client: httpx.AsyncClient) -> None:
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 5)
    headers = await world.member_headers(tea, "c-1")

    too_many = await gql(client, HISTORY, {"first": 101}, headers)
    assert codes(too_many) == ["INVALID_ARGUMENT"]
    for bad in ("garbage!", "WyJsb3QiLCIiLDFd", "eyJhIjoxfQ", "W10"):
        body = await gql(client, HISTORY, {"first": 5, "after": bad}, headers)
        assert codes(body) == ["INVALID_ARGUMENT"], bad
    default = data(
        await gql(client, "{ wallet { history { edges { cursor } } } }", headers=headers)
    )
    assert len(default["wallet"]["history"]["edges"]) == 1


async def test_roles_are_enforced(world: World, client: httpx.AsyncClient) -> None:
    tea = await world.shop("tea-house")
    await world.member(tea, "c-1")
    member_headers = await world.member_headers(tea, "c-1")

    assert codes(await gql(client, "{ wallet { totalValue } }", headers=tea.headers)) == [
        "FORBIDDEN"
    ]
    body = await gql(client, '{ customer(customerRef: "c-1") { id } }', headers=member_headers)
    assert codes(body) == ["FORBIDDEN"]
    assert codes(await gql(client, "{ viewer { role } }")) == ["UNAUTHENTICATED"]
    assert data(await gql(client, "{ hubVersion __typename }"))["__typename"] == "Query"
    viewer = data(
        await gql(
            client, "{ viewer { role merchant { code } member { id } } }", headers=tea.headers
        )
    )
    assert viewer["viewer"] == {
        "role": "MERCHANT",
        "merchant": {"code": "tea-house"},
        "member": None,
    }
    admin = data(await gql(client, "{ viewer { role } }", headers=world.operator_headers()))
    assert admin["viewer"]["role"] == "ADMIN"


async def test_invalid_credentials_are_401(client: httpx.AsyncClient, world: World) -> None:
    for header in ("Bearer not-a-token", "Bearer exk_live_nope", "Basic abc"):
        body = await gql(client, "{ hubVersion }", headers={"Authorization": header}, status=401)
        assert codes(body) == ["UNAUTHENTICATED"]


async def test_merchant_sees_all_balances_but_only_its_part_of_the_history(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    cafe = await world.shop("cafe")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(air, "MILES", "0.05")
    member = await world.member(tea, "c-1")
    await world.link(air, "air-7", member)
    await world.earn(tea, member, "TEA", 100, memo="welcome")  # tea's own
    await world.earn(air, member, "MILES", 40)  # air's own
    await world.redeem(air, member, "TEA", 10)  # at air, in tea's currency: both see it
    await world.link(cafe, "cafe-1", member)
    await world.redeem(cafe, member, "MILES", 5)  # cafe, in air's currency: tea does not see it

    query = """query ($ref: String!) { customer(customerRef: $ref) {
      customerRef
      wallet { totalValue balances { currency { code } points }
               history { nodes { kind points merchant { code } memo } } } } }"""
    tea_view = data(await gql(client, query, {"ref": "c-1"}, tea.headers))["customer"]
    assert tea_view["customerRef"] == "c-1"
    assert {b["currency"]["code"]: b["points"] for b in tea_view["wallet"]["balances"]} == {
        "TEA": "90",
        "MILES": "35",
    }
    assert tea_view["wallet"]["totalValue"] == "2.650000"
    assert [
        (n["kind"], n["points"], n["merchant"]["code"], n["memo"])
        for n in tea_view["wallet"]["history"]["nodes"]
    ] == [("REDEEM", "-10", "air-line", None), ("EARN", "100", "tea-house", "welcome")]

    air_view = data(await gql(client, query, {"ref": "air-7"}, air.headers))["customer"]
    assert [
        (n["merchant"]["code"], n["points"], n["memo"])
        for n in air_view["wallet"]["history"]["nodes"]
    ] == [
        ("cafe", "-5", None),
        ("air-line", "-10", None),
        ("air-line", "40", None),
    ]
    # A reference is the merchant's own: another merchant's reference finds nobody.
    assert data(await gql(client, query, {"ref": "air-7"}, tea.headers))["customer"] is None
    assert data(await gql(client, query, {"ref": "nobody"}, tea.headers))["customer"] is None


async def test_rate_history_pages_newest_first(world: World, client: httpx.AsyncClient) -> None:
    from exchange.services.catalog import set_rate

    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 1)
    now = datetime.now(UTC)
    await set_rate(world.pool, tea.actor, code="TEA", rate=Decimal("0.012"))
    await set_rate(
        world.pool,
        tea.actor,
        code="TEA",
        rate=Decimal("0.02"),
        effective_at=now + timedelta(days=7),
    )
    headers = await world.member_headers(tea, "c-1")
    query = """query ($after: String) { wallet { balances { currency {
      rate rateHistory(first: 2, after: $after) {
        nodes { rate inForce effectiveAt } pageInfo { hasNextPage endCursor } } } } } }"""

    currency = data(await gql(client, query, {}, headers))["wallet"]["balances"][0]["currency"]
    assert currency["rate"] == "0.012"
    page = currency["rateHistory"]
    assert [(n["rate"], n["inForce"]) for n in page["nodes"]] == [("0.02", False), ("0.012", True)]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = data(await gql(client, query, {"after": page["pageInfo"]["endCursor"]}, headers))
    last = rest["wallet"]["balances"][0]["currency"]["rateHistory"]
    assert [(n["rate"], n["inForce"]) for n in last["nodes"]] == [("0.01", False)]
    assert last["pageInfo"]["hasNextPage"] is False
