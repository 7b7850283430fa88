"""Limits and production hardening: depth, aliases, tokens, cost, budget, masking, introspection."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from graphql import parse
from hypothesis import given, settings
from hypothesis import strategies as st
from world import World, codes, data, gql, make_world

from exchange.api import limits
from exchange.api.schema import build_schema
from exchange.config import Settings
from exchange.services.tx import Pool

pytestmark = pytest.mark.anyio

HISTORY = """query ($n: Int!) { wallet { history(first: $n) {
  edges { node { kind currency { code issuer { code } } merchant { code } } } } } }"""


@pytest.fixture
async def world(pool: Pool, settings: Settings) -> World:
    return await make_world(pool, settings)


@pytest.fixture
async def member_headers(world: World) -> dict[str, str]:
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 10)
    return await world.member_headers(tea, "c-1")


@pytest.fixture
def limited(settings: Settings, database_url: str, make_client: Any) -> Callable[..., Any]:
    """``limited(**overrides)``: a client of an app with other settings, same database."""

    def open_client(**overrides: Any) -> Any:
        return make_client(dataclasses.replace(settings, **overrides), database_url)

    return open_client


async def test_depth_limit(limited: Callable[..., Any], member_headers: dict[str, str]) -> None:
    async with limited(max_depth=4) as client:
        five = "{ wallet { history { edges { node { id } } } } }"
        body = await gql(client, five, headers=member_headers)
        assert codes(body) == ["QUERY_TOO_DEEP"]
        assert body["data"] is None
        four = "{ wallet { history { nodes { id } } } }"
        assert "errors" not in await gql(client, four, headers=member_headers)
        fragment = (
            "query { ...F } fragment F on Query { wallet { history { edges { node { id } } } } }"
        )
        assert codes(await gql(client, fragment, headers=member_headers)) == ["QUERY_TOO_DEEP"]


async def test_alias_limit(limited: Callable[..., Any]) -> None:
    async with limited(max_aliases=3) as client:
        three = "{ a: hubVersion b: hubVersion c: hubVersion }"
        assert data(await gql(client, three))["c"]
        four = "{ a: hubVersion b: hubVersion c: hubVersion d: hubVersion }"
        body = await gql(client, four)
        assert codes(body) == ["TOO_MANY_ALIASES"]


async def test_token_limit(limited: Callable[..., Any]) -> None:
    async with limited(max_tokens=20) as client:
        assert data(await gql(client, "{ hubVersion }"))
        body = await gql(client, "{ " + "hubVersion " * 30 + "}")
        assert codes(body) == ["QUERY_TOO_LARGE"]


async def test_cost_limit_reads_variables(
    limited: Callable[..., Any], member_headers: dict[str, str]
) -> None:
    async with limited(max_cost=200) as client:
        small = await gql(client, HISTORY, {"n": 10}, member_headers)
        assert "errors" not in small
        # history: 2 + n + n × (currency 1 + issuer 1 + merchant 1); wallet 1
        assert small["extensions"]["cost"]["requested"] == 1 + 2 + 10 + 10 * 3
        assert small["extensions"]["cost"]["limit"] == 200
        big = await gql(client, HISTORY, {"n": 60}, member_headers)
        assert codes(big) == ["QUERY_TOO_COSTLY"]
        assert big["data"] is None
        assert big["extensions"]["cost"]["requested"] == 1 + 2 + 60 + 60 * 3


async def test_cost_is_reported_on_every_response(client: httpx.AsyncClient) -> None:
    for query in ("{ hubVersion }", "{ nope }", "{ viewer { role } }", "{"):
        body = await gql(client, query)
        assert body["extensions"]["cost"]["limit"] == 1000, query


async def test_budget_per_credential(
    limited: Callable[..., Any], world: World, member_headers: dict[str, str]
) -> None:
    other = await world.shop("air-line")
    tea = world.shops["tea-house"]
    async with limited(cost_budget_per_minute=10) as client:
        query = "{ viewer { merchant { code } } }"  # costs 2
        for _ in range(5):
            assert "errors" not in await gql(client, query, headers=tea.headers)
        response = await client.post("/graphql", json={"query": query}, headers=tea.headers)
        body = response.json()
        assert codes(body) == ["RATE_LIMITED"]
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        # Another credential has its own budget.
        assert "errors" not in await gql(client, query, headers=other.headers)


def test_budget_refills_over_time() -> None:
    now = [0.0]
    budget = limits.CostBudget(60, clock=lambda: now[0])
    assert budget.take("k", 60)[0]
    allowed, _left, wait = budget.take("k", 5)
    assert not allowed
    assert wait == pytest.approx(5.0)
    now[0] += 5.0
    assert budget.take("k", 5)[0]
    assert budget.take("other", 60)[0]


async def test_introspection_only_in_development(
    client: httpx.AsyncClient, limited: Callable[..., Any]
) -> None:
    query = "{ __schema { queryType { name } } }"
    refused = await gql(client, query)
    assert set(codes(refused)) == {"GRAPHQL_VALIDATION_FAILED"}
    assert refused["data"] is None
    assert set(codes(await gql(client, '{ __type(name: "Query") { name } }'))) == {
        "GRAPHQL_VALIDATION_FAILED"
    }
    async with limited(mode="development") as dev:
        assert data(await gql(dev, query))["__schema"]["queryType"]["name"] == "Query"
        page = await dev.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert "graphiql" in page.text.lower()
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 404


async def test_no_field_suggestions_in_production(
    client: httpx.AsyncClient, limited: Callable[..., Any]
) -> None:
    body = await gql(client, "{ hubVersio }")
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "Did you mean" not in body["errors"][0]["message"]
    async with limited(mode="development") as dev:
        assert "Did you mean" in (await gql(dev, "{ hubVersio }"))["errors"][0]["message"]


async def test_internal_errors_are_masked(
    client: httpx.AsyncClient, member_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.errors.UndefinedTable('relation "secret_table" does not exist: SELECT 1')

    monkeypatch.setattr("exchange.api.wallet.fetch_all", broken)
    response = await client.post(
        "/graphql",
        json={"query": "{ wallet { totalValue history { edges { cursor } } } }"},
        headers=member_headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["errors"] == [
        {
            "message": "Internal error.",
            "locations": [{"line": 1, "column": 23}],
            "path": ["wallet", "history"],
            "extensions": {"code": "INTERNAL"},
        }
    ]
    text = response.text
    assert "secret_table" not in text
    assert "SELECT" not in text
    assert "Traceback" not in text


async def test_get_and_batching_are_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "{ hubVersion }"})
    assert response.status_code in (400, 404, 405)
    batch = await client.post("/graphql", json=[{"query": "{ hubVersion }"}] * 2)
    assert batch.status_code == 400


async def test_validation_cache_hits_with_the_limits_on(
    client: httpx.AsyncClient, member_headers: dict[str, str]
) -> None:
    settings = Settings()
    first = limits.validation_rules(settings.max_depth, settings.max_aliases, False)
    assert limits.validation_rules(settings.max_depth, settings.max_aliases, False) is first
    query = "{ wallet { totalValue } __typename }"
    before = (limits.VALIDATED.hits, limits.VALIDATED.misses)
    for _ in range(5):
        assert "errors" not in await gql(client, query, headers=member_headers)
    hits, misses = limits.VALIDATED.hits - before[0], limits.VALIDATED.misses - before[1]
    assert misses <= 1
    assert hits >= 4
    assert build_schema(settings) is build_schema(dataclasses.replace(settings, port=9))


# -- the cost, remembered per operation and the variables it reads -----------------------------

COSTED_QUERY = """query ($n: Int!, $m: Int!, $ids: [ID!]!, $note: String) {
  a: wallet { history(first: $n) { edges { node { kind currency { code } } } } }
  b: wallet { lots(first: $m, currency: $note) { edges { node { id } } } }
  nodes(ids: $ids) { id }
}"""


@given(
    calls=st.lists(
        st.fixed_dictionaries(
            {
                "n": st.one_of(st.integers(-5, 150), st.none(), st.text(max_size=2)),
                "m": st.one_of(st.integers(-5, 150), st.booleans()),
                "ids": st.one_of(st.lists(st.just("x"), max_size=5), st.just("x")),
                "note": st.text(max_size=3),
            }
        ),
        min_size=1,
        max_size=6,
    )
)
@settings(max_examples=60, deadline=None)
def test_a_remembered_cost_is_the_cost_of_those_variables(calls: list[dict[str, Any]]) -> None:
    """Whatever variables came before, the cost given is the one computed for these (an
    integer `first`, a list's length); variables the cost never reads share one entry."""
    schema = build_schema(Settings())._schema
    document = parse(COSTED_QUERY)
    for variables in calls:
        expected = limits.operation_cost(schema, document, None, variables)
        assert limits.requested_cost(schema, document, COSTED_QUERY, None, variables) == expected


def test_an_operation_is_costed_once_whatever_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = build_schema(Settings())._schema
    query = "mutation ($input: AwardPointsInput!) { awardPoints(input: $input) { points } }"
    document = parse(query)
    walks = []
    walk = limits.operation_cost

    def counted(*args: Any) -> int:
        walks.append(args)
        return walk(*args)

    monkeypatch.setattr(limits, "operation_cost", counted)
    costs = {
        limits.requested_cost(
            schema, document, query, None, {"input": {"idempotencyKey": f"k-{i}", "points": "1"}}
        )
        for i in range(20)
    }
    assert costs == {walk(schema, document, None, {})}
    assert len(walks) <= 1
