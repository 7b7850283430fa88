"""Customers over HTTP: linking references, link codes between merchants, member sessions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from exchange.config import Settings
from exchange.services import clock
from exchange.services.tx import Pool
from tests.api.mutation_kit import LINK_CUSTOMER, START_SESSION, Hub, error_codes, make_hub

pytestmark = pytest.mark.anyio

CREATE_LINK_CODE = """
mutation { createLinkCode { linkCode expiresAt userErrors { code field message } } }
"""

VIEWER = "{ viewer { role member { id } } }"


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def test_link_is_idempotent_per_reference(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    first = await hub.data(LINK_CUSTOMER, {"input": {"customerRef": "alice"}}, tea.headers)
    again = await hub.data(LINK_CUSTOMER, {"input": {"customerRef": "alice"}}, tea.headers)
    assert first["linkCustomer"]["created"] is True
    assert again["linkCustomer"]["created"] is False
    assert first["linkCustomer"]["member"] == again["linkCustomer"]["member"]
    assert first["linkCustomer"]["member"]["customerRef"] == "alice"
    other = await hub.data(LINK_CUSTOMER, {"input": {"customerRef": "bob"}}, tea.headers)
    assert other["linkCustomer"]["member"]["id"] != first["linkCustomer"]["member"]["id"]
    assert await hub.count("members") == 2


async def test_concurrent_links_of_one_reference_make_one_member(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    results = await asyncio.gather(*(hub.link(tea, "carol") for _ in range(10)))
    assert len(set(results)) == 1
    assert await hub.count("members") == 1


async def test_link_code_links_the_same_member_at_a_second_merchant(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    books = await hub.onboard("book-shop")
    alice = await hub.link(tea, "alice")
    member = await hub.member_headers(tea, "alice")
    viewer = await hub.data(VIEWER, headers=member)
    assert viewer["viewer"] == {"role": "MEMBER", "member": {"id": alice}}
    made = (await hub.data(CREATE_LINK_CODE, headers=member))["createLinkCode"]
    code = made["linkCode"]
    assert len(code) == 14
    assert code.count("-") == 2
    stored = await hub.scalar("SELECT code_hash FROM link_codes")
    assert code.encode() not in bytes(stored)

    linked = await hub.data(
        LINK_CUSTOMER, {"input": {"customerRef": "A-77", "linkCode": code.lower()}}, books.headers
    )
    assert linked["linkCustomer"]["member"]["id"] == alice
    assert linked["linkCustomer"]["created"] is True
    # The same call again is a replay; the code is spent for anything else.
    again = await hub.data(
        LINK_CUSTOMER, {"input": {"customerRef": "A-77", "linkCode": code}}, books.headers
    )
    assert again["linkCustomer"]["member"]["id"] == alice
    assert again["linkCustomer"]["created"] is False
    third = await hub.onboard("cafe")
    spent = await hub.payload(
        LINK_CUSTOMER, {"input": {"customerRef": "x", "linkCode": code}}, third.headers
    )
    assert error_codes(spent) == ["NOT_FOUND"]
    assert spent["userErrors"][0]["field"] == "linkCode"
    assert await hub.count("members") == 1


async def test_expired_unknown_and_malformed_codes_are_not_found(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    tea = await hub.onboard("tea-house")
    books = await hub.onboard("book-shop")
    await hub.link(tea, "alice")
    member = await hub.member_headers(tea, "alice")
    code = (await hub.data(CREATE_LINK_CODE, headers=member))["createLinkCode"]["linkCode"]
    real_now = clock.now
    monkeypatch.setattr(clock, "now", lambda: real_now() + timedelta(minutes=11))
    for attempt in (code, "ABCD-EFGH-JKMN", "not a code"):
        refused = await hub.payload(
            LINK_CUSTOMER, {"input": {"customerRef": "b-1", "linkCode": attempt}}, books.headers
        )
        assert error_codes(refused) == ["NOT_FOUND"], attempt
    assert await hub.count("member_links") == 1


async def test_a_member_already_linked_here_cannot_be_linked_twice(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    books = await hub.onboard("book-shop")
    await hub.link(tea, "alice")
    await hub.link(books, "bob")
    member = await hub.member_headers(tea, "alice")
    first = (await hub.data(CREATE_LINK_CODE, headers=member))["createLinkCode"]["linkCode"]
    await hub.link(books, "alice-at-books", first)
    second = (await hub.data(CREATE_LINK_CODE, headers=member))["createLinkCode"]["linkCode"]
    twice = await hub.payload(
        LINK_CUSTOMER, {"input": {"customerRef": "alice-2", "linkCode": second}}, books.headers
    )
    assert error_codes(twice) == ["ALREADY_LINKED"]
    taken = await hub.payload(
        LINK_CUSTOMER, {"input": {"customerRef": "bob", "linkCode": second}}, books.headers
    )
    assert error_codes(taken) == ["CUSTOMER_REF_TAKEN"]


async def test_member_session_only_for_own_customers(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    books = await hub.onboard("book-shop")
    await hub.link(tea, "alice")
    session = (await hub.data(START_SESSION, {"input": {"customerRef": "alice"}}, tea.headers))[
        "startMemberSession"
    ]
    assert session["token"]
    assert session["expiresAt"]
    foreign = await hub.payload(START_SESSION, {"input": {"customerRef": "alice"}}, books.headers)
    assert error_codes(foreign) == ["NOT_FOUND"]
    assert foreign["userErrors"][0]["field"] == "customerRef"


async def test_open_link_codes_are_limited(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    await hub.link(tea, "alice")
    member = await hub.member_headers(tea, "alice")
    for _ in range(5):
        await hub.data(CREATE_LINK_CODE, headers=member)
    refused = await hub.payload(CREATE_LINK_CODE, headers=member)
    assert error_codes(refused) == ["INVALID_INPUT"]
    assert refused["linkCode"] is None
