"""``node``/``nodes`` apply each caller's visibility: another tenant's ID is like a missing one."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import httpx
import pytest
from world import World, codes, data, gql, make_world

from exchange.config import Settings
from exchange.services.conversion import create_quote
from exchange.services.tx import Pool

pytestmark = pytest.mark.anyio

NODE = """query ($id: ID!) { node(id: $id) { __typename id
  ... on Entry { kind points memo orderTotal }
  ... on Member { customerRef wallet { balances { points } } }
  ... on Lot { remaining }
  ... on Quote { fromPoints toPoints executed fromCurrency { code } }
  ... on Currency { code rate }
  ... on Merchant { code }
} }"""


def gid(type_name: str, key: int | str) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


async def node(client: httpx.AsyncClient, headers: dict[str, str], id_: str) -> Any:
    body = await gql(client, NODE, {"id": id_}, headers)
    assert "errors" not in body, body
    return body["data"]["node"]


@pytest.fixture
async def world(pool: Pool, settings: Settings) -> World:
    return await make_world(pool, settings)


async def test_foreign_ids_resolve_like_missing_ones(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(air, "MILES", "0.05")
    alice = await world.member(tea, "alice")
    bob = await world.member(air, "bob")
    tea_entry = await world.earn(tea, alice, "TEA", 100, memo="first visit")
    air_entry = await world.earn(air, bob, "MILES", 50)

    # The owner sees its objects.
    seen = await node(client, tea.headers, gid("Entry", tea_entry))
    assert seen == {
        "__typename": "Entry",
        "id": gid("Entry", tea_entry),
        "kind": "EARN",
        "points": "100",
        "memo": "first visit",
        "orderTotal": None,
    }
    member = await node(client, tea.headers, gid("Member", alice))
    assert member["customerRef"] == "alice"
    assert member["wallet"]["balances"] == [{"points": "100"}]

    # Another merchant: exactly like an ID that does not exist.
    for foreign, missing in (
        (gid("Entry", tea_entry), gid("Entry", 999_999)),
        (gid("Member", alice), gid("Member", 999_999)),
    ):
        foreign_body = await gql(client, NODE, {"id": foreign}, air.headers)
        missing_body = await gql(client, NODE, {"id": missing}, air.headers)
        assert foreign_body["data"] == missing_body["data"] == {"node": None}
        assert "errors" not in foreign_body
        assert "errors" not in missing_body
        assert await node(client, air.headers, foreign) is None

    # A member sees its own entries and nothing of another member.
    alice_headers = await world.member_headers(tea, "alice")
    assert (await node(client, alice_headers, gid("Entry", tea_entry)))["points"] == "100"
    assert await node(client, alice_headers, gid("Entry", air_entry)) is None
    assert await node(client, alice_headers, gid("Member", bob)) is None
    assert (await node(client, alice_headers, gid("Member", alice)))["customerRef"] is None

    # nodes() keeps the order and answers null where a node is not visible.
    body = await gql(
        client,
        "query ($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }",
        {"ids": [gid("Entry", air_entry), gid("Entry", tea_entry), gid("Merchant", air.id)]},
        tea.headers,
    )
    assert data(body)["nodes"] == [
        None,
        {"__typename": "Entry", "id": gid("Entry", tea_entry)},
        {"__typename": "Merchant", "id": gid("Merchant", air.id)},
    ]

    # Operators see everything.
    admin = world.operator_headers()
    assert (await node(client, admin, gid("Entry", air_entry)))["points"] == "50"


async def test_catalogue_nodes_are_public_to_callers(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    await world.currency(tea, "TEA", "0.01")
    currency_id = await _currency_id(world, "TEA")
    found = await node(client, air.headers, gid("Currency", currency_id))
    assert found == {
        "__typename": "Currency",
        "id": gid("Currency", currency_id),
        "code": "TEA",
        "rate": "0.01",
    }
    assert (await node(client, air.headers, gid("Merchant", tea.id)))["code"] == "tea-house"
    # Without credentials, node answers nothing at all.
    assert codes(await gql(client, NODE, {"id": gid("Merchant", tea.id)})) == ["UNAUTHENTICATED"]


async def test_odd_ids_are_null_or_refused(world: World, client: httpx.AsyncClient) -> None:
    tea = await world.shop("tea-house")
    for odd in (
        gid("Nope", 1),
        gid("Query", 1),
        gid("Entry", "x"),
        gid("Entry", -3),
        gid("Entry", 2**70),
    ):
        assert await node(client, tea.headers, odd) is None, odd
    body = await gql(client, NODE, {"id": "%%%not-base64"}, tea.headers)
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"]


async def test_issuer_sees_entries_in_its_currency(world: World, client: httpx.AsyncClient) -> None:
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    cafe = await world.shop("cafe")
    await world.currency(air, "MILES", "0.05")
    alice = await world.member(tea, "alice")
    bought = await world.earn(tea, alice, "MILES", 40, memo="tea's note")  # tea buys air's points

    issuer_view = await node(client, air.headers, gid("Entry", bought))
    assert issuer_view["points"] == "40"
    assert issuer_view["memo"] is None  # the note is the awarding merchant's
    assert (await node(client, tea.headers, gid("Entry", bought)))["memo"] == "tea's note"
    assert await node(client, cafe.headers, gid("Entry", bought)) is None
    # The issuer is not linked to alice, so it cannot look her up.
    assert await node(client, air.headers, gid("Member", alice)) is None


async def test_lots_and_quotes_belong_to_their_member(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(tea, "GOLD", "1")
    alice = await world.member(tea, "alice")
    bob = await world.member(tea, "bob")
    await world.earn(tea, alice, "TEA", 1000)
    await world.earn(tea, bob, "TEA", 10)
    alice_headers = await world.member_headers(tea, "alice")
    bob_headers = await world.member_headers(tea, "bob")

    lots = data(
        await gql(client, "{ wallet { lots { nodes { id remaining } } } }", headers=alice_headers)
    )
    lot_id = lots["wallet"]["lots"]["nodes"][0]["id"]
    assert (await node(client, alice_headers, lot_id))["remaining"] == "1000"
    assert await node(client, bob_headers, lot_id) is None
    assert await node(client, tea.headers, lot_id) is None

    from exchange.services.actors import MEMBER, Actor

    quote = await create_quote(
        world.pool,
        Actor(role=MEMBER, member_id=alice),
        from_code="TEA",
        to_code="GOLD",
        points=500,
        ttl_s=30,
        default_fee_bp=100,
    )
    qid = gid("Quote", quote.id)
    mine = await node(client, alice_headers, qid)
    assert mine["fromPoints"] == "500"
    assert mine["toPoints"] == str(quote.to_amount)
    assert mine["executed"] is False
    assert mine["fromCurrency"] == {"code": "TEA"}
    assert Decimal(mine["toPoints"]) <= Decimal("4.95")
    assert await node(client, bob_headers, qid) is None
    assert await node(client, tea.headers, qid) is None


async def _currency_id(world: World, code: str) -> int:
    async with world.pool.connection() as conn:
        cur = await conn.execute("SELECT id FROM currencies WHERE code = %s", (code,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_an_issuer_sees_only_its_own_legs(world: World, client: httpx.AsyncClient) -> None:
    from exchange.services.actors import MEMBER, Actor
    from exchange.services.conversion import execute_quote

    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(air, "MILES", "0.05")
    alice = await world.member(tea, "alice")
    await world.link(air, "air-alice", alice)
    await world.earn(tea, alice, "TEA", 1000)
    member = Actor(role=MEMBER, member_id=alice)
    quote = await create_quote(
        world.pool,
        member,
        from_code="TEA",
        to_code="MILES",
        points=1000,
        ttl_s=30,
        default_fee_bp=100,
    )
    outcome = await execute_quote(world.pool, member, quote_id=quote.id, idempotency_key="cv-1")
    query = """query ($id: ID!) { node(id: $id) { ... on Entry {
      kind currency { code } points value movements { currency { code } points }
      rates { currencyCode rate } } } }"""
    entry_id = gid("Entry", outcome.entry_id)

    own = data(await gql(client, query, {"id": entry_id}, await world.member_headers(tea, "alice")))
    assert own["node"]["movements"] == [
        {"currency": {"code": "TEA"}, "points": "-1000"},
        {"currency": {"code": "MILES"}, "points": str(quote.to_amount)},
    ]
    assert own["node"]["value"] == "10.000000"

    as_target = data(await gql(client, query, {"id": entry_id}, air.headers))["node"]
    assert as_target == {
        "kind": "CONVERT",
        "currency": {"code": "MILES"},
        "points": str(quote.to_amount),
        "value": f"{Decimal(quote.to_amount) * Decimal('0.05'):.6f}",
        "movements": [{"currency": {"code": "MILES"}, "points": str(quote.to_amount)}],
        "rates": [{"currencyCode": "MILES", "rate": "0.05"}],
    }
    as_source = data(await gql(client, query, {"id": entry_id}, tea.headers))["node"]
    assert as_source["movements"] == [{"currency": {"code": "TEA"}, "points": "-1000"}]
    assert as_source["value"] == "10.000000"

    history = """{ customer(customerRef: "air-alice") { wallet { history { nodes {
      kind movements { currency { code } points } } } } } }"""
    nodes = data(await gql(client, history, headers=air.headers))["customer"]["wallet"]["history"][
        "nodes"
    ]
    assert nodes == [
        {
            "kind": "CONVERT",
            "movements": [{"currency": {"code": "MILES"}, "points": str(quote.to_amount)}],
        }
    ]
