"""Plain JSON POSTs answered without Strawberry's view give the view's answer, byte for byte.

``ExchangeGraphQL._post`` answers a POST of ``application/json`` with a plain body itself;
everything else goes through Strawberry's view. Each request here is sent twice to one
app, once with the lean answer on and once with it off, and the two responses (status,
every header in order, body) must be equal; a count of the view's calls shows which way
each request went.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from world import World, make_world

from exchange.api.graphql_app import ExchangeGraphQL
from exchange.app import create_app
from exchange.config import Settings
from exchange.services.tx import Pool

pytestmark = pytest.mark.anyio

EARN = """mutation ($input: AwardPointsInput!) { awardPoints(input: $input) {
  entry { id points } replayed userErrors { code field message } } }"""


@dataclasses.dataclass
class Both:
    client: httpx.AsyncClient
    view: ExchangeGraphQL
    runs: list[str]

    async def post(self, *, lean: bool, **kwargs: Any) -> httpx.Response:
        self.view.lean_posts = lean
        return await self.client.post("/graphql", **kwargs)

    async def same(self, **kwargs: Any) -> tuple[httpx.Response, int]:
        """Send a request both ways; return the response and the view's calls it took
        with the lean answer on (the responses are checked to be equal)."""
        off = await self.post(lean=False, **kwargs)
        before = len(self.runs)
        on = await self.post(lean=True, **kwargs)
        took = len(self.runs) - before
        assert on.status_code == off.status_code
        assert _headers(on) == _headers(off)
        assert _body(on) == _body(off)
        return on, took


def _headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The headers in order, the length checked against the body and left out (the
    remaining budget, which each request lowers, can change the body's length)."""
    raw = list(response.headers.raw)
    lengths = [value for name, value in raw if name.lower() == b"content-length"]
    assert lengths == [str(len(response.content)).encode()]
    return [(name, value) for name, value in raw if name.lower() != b"content-length"]


def _body(response: httpx.Response) -> bytes:
    """The body's bytes, with the remaining cost budget (lowered by each request) masked."""
    return re.sub(rb'"remaining":\d+', b'"remaining":_', response.content)


@contextlib.asynccontextmanager
async def both(settings: Settings, database_url: str) -> AsyncIterator[Both]:
    app = create_app(settings, database_url)
    view = app.graphql.app  # type: ignore[attr-defined]
    assert isinstance(view, ExchangeGraphQL)
    runs: list[str] = []
    run = view.run

    async def counted(request: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(request.method)
        return await run(request, *args, **kwargs)

    view.run = counted  # type: ignore[method-assign]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            yield Both(client, view, runs)


@pytest.fixture
async def world(pool: Pool, settings: Settings) -> World:
    world = await make_world(pool, settings)
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    await world.member(tea, "c-1")
    return world


def _earn(points: str, key: str) -> dict[str, Any]:
    return {
        "query": EARN,
        "variables": {
            "input": {
                "customerRef": "c-1",
                "currency": "TEA",
                "points": points,
                "reason": "visit",
                "idempotencyKey": key,
            }
        },
    }


async def test_plain_posts_answer_as_the_view_does(
    settings: Settings, database_url: str, world: World
) -> None:
    tea = world.shops["tea-house"]
    member = await world.member_headers(tea, "c-1")
    async with both(settings, database_url) as b:
        # The first earn goes through the view only; both then replay it.
        first = await b.post(lean=False, json=_earn("25", "k-1"), headers=tea.headers)
        earned = first.json()["data"]["awardPoints"]
        assert earned["entry"]["points"] == "25"
        assert earned["replayed"] is False
        plain: list[dict[str, Any]] = [
            {"json": {"query": "{ hubVersion }"}},
            {"json": {"query": "{ hubVersion }", "variables": None, "operationName": None}},
            {"json": _earn("25", "k-1"), "headers": tea.headers},
            {"json": _earn("-5", "k-2"), "headers": tea.headers},  # a typed user error
            {"json": _earn("25", "k-1") | {"extensions": {}}, "headers": tea.headers},
            {"json": {"query": "{ wallet { totalValue } }"}, "headers": member},
            {"json": {"query": "{ nope }"}},  # a validation error
            {"json": {"query": "{"}},  # a syntax error
            {"json": {"query": "query A { hubVersion } query B { hubVersion }"}},
            {"json": {"query": "query A { hubVersion }", "operationName": "B"}},
            {"json": {"query": ""}},
            {"json": {"query": "{ hubVersion }"}, "headers": {"Authorization": "Bearer nope"}},
            {
                "content": json.dumps({"query": "{ hubVersion }"}).encode(),
                "headers": {"Content-Type": "application/json; charset=utf-8"},
            },
        ]
        for request in plain:
            response, took = await b.same(**request)
            assert took == 0, request
        assert response.status_code == 200
        assert response.json()["data"] == {"hubVersion": response.json()["data"]["hubVersion"]}
        replay = (await b.same(json=_earn("25", "k-1"), headers=tea.headers))[0].json()
        assert replay["data"]["awardPoints"]["replayed"] is True
        assert replay["data"]["awardPoints"]["entry"] == earned["entry"]
        refused = (await b.same(json=_earn("-5", "k-3"), headers=tea.headers))[0].json()
        assert refused["data"]["awardPoints"]["userErrors"][0]["code"] == "INVALID_AMOUNT"
        unauthenticated = (
            await b.same(json={"query": "{ hubVersion }"}, headers={"Authorization": "Bearer nope"})
        )[0]
        assert unauthenticated.status_code == 401

        others: list[dict[str, Any]] = [
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            {"json": [{"query": "{ hubVersion }"}]},  # a batch
            {"json": "{ hubVersion }"},
            {"json": {"query": 5}},
            {"json": {"query": "{ hubVersion }", "variables": [1]}},
            {"json": {"query": "{ hubVersion }", "extensions": "x"}},
            {"json": {"query": "{ hubVersion }", "operationName": 7}},
            {"json": {"query": "{ hubVersion @include(if: true) }"}},
            {"json": {"variables": {}}},
            {
                "content": b'{"query": "{ hubVersion }"}',
                "headers": {"Content-Type": "text/plain"},
            },
            {"content": b'{"query": "{ hubVersion }"}'},  # no content type
            {
                "content": b'{"query": "{ hubVersion }"}',
                "headers": {"Content-Type": "Application/JSON"},  # the view refuses it
            },
        ]
        for request in others:
            _response, took = await b.same(**request)
            assert took == 1, request
        text = (await b.same(json="{ hubVersion }"))[0]
        assert (text.status_code, text.text) == (400, "The request must be a JSON object.")
        included = (await b.same(json={"query": "{ hubVersion @include(if: false) }"}))[0]
        assert included.json()["data"] == {}
        # An unauthenticated odd body is still refused before its body is looked at.
        odd = await b.same(
            content=b"{",
            headers={"Content-Type": "application/json", "Authorization": "Bearer nope"},
        )
        assert odd[0].status_code == 401


async def test_a_lean_answer_carries_the_status_and_headers_set_while_executing(
    settings: Settings, database_url: str, world: World
) -> None:
    tea = world.shops["tea-house"]
    query = {"query": "{ viewer { merchant { code } } }"}  # costs 2
    limited = dataclasses.replace(settings, cost_budget_per_minute=10)
    async with both(limited, database_url) as b:
        for _ in range(5):
            assert (await b.post(lean=False, json=query, headers=tea.headers)).status_code == 200
        response, took = await b.same(json=query, headers=tea.headers)
        assert took == 0
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
