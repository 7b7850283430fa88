"""Conversions over HTTP: quote, execute once, replay, expiry, another member's quote."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from exchange.config import Settings
from exchange.services import clock
from exchange.services.tx import Pool
from tests.api.mutation_kit import Hub, error_codes, make_hub, new_key

pytestmark = pytest.mark.anyio

QUOTE = """
mutation($input: QuoteConversionInput!) {
  quoteConversion(input: $input) {
    quote { id fromPoints toPoints fromRate toRate feeBp value toValue fee expiresAt executed }
    userErrors { code field message }
  }
}"""

EXECUTE = """
mutation($input: ExecuteConversionInput!) {
  executeConversion(input: $input) {
    entry { id kind points movements { currency { code } points } fee }
    quote { id executed }
    replayed
    userErrors { code field message }
  }
}"""

SET_FEE = """
mutation($input: SetConversionFeeInput!) {
  setConversionFee(input: $input) { basisPoints userErrors { code field message } }
}"""


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def two_shops(hub: Hub) -> tuple[Any, Any, dict[str, str]]:
    tea = await hub.onboard("tea-house")
    books = await hub.onboard("book-shop")
    await hub.register(tea, "TEA", "0.01")
    await hub.register(books, "BOOK", "0.005", scale=2)
    await hub.link(tea, "alice")
    await hub.award(tea, "alice", "TEA", "1000")
    return tea, books, await hub.member_headers(tea, "alice")


async def test_quote_then_execute_once(hub: Hub) -> None:
    tea, books, alice = await two_shops(hub)
    await hub.data(SET_FEE, {"input": {"basisPoints": 200}}, hub.admin)
    quote = (
        await hub.data(
            QUOTE,
            {"input": {"fromCurrency": "TEA", "toCurrency": "BOOK", "points": "1000"}},
            alice,
        )
    )["quoteConversion"]["quote"]
    # 1000 TEA × 0.01 = 10.00; less 2 % = 9.80; ÷ 0.005 = 1960.00 BOOK.
    assert quote["fromPoints"] == "1000"
    assert quote["toPoints"] == "1960.00"
    assert quote["feeBp"] == 200
    assert (quote["value"], quote["toValue"], quote["fee"]) == ("10.000000", "9.800000", "0.200000")
    assert quote["executed"] is False
    key = new_key("conv")
    done = (
        await hub.data(EXECUTE, {"input": {"quoteId": quote["id"], "idempotencyKey": key}}, alice)
    )["executeConversion"]
    assert done["entry"]["kind"] == "CONVERT"
    assert done["quote"]["executed"] is True
    assert {m["currency"]["code"]: m["points"] for m in done["entry"]["movements"]} == {
        "TEA": "-1000",
        "BOOK": "1960.00",
    }
    replay = (
        await hub.data(EXECUTE, {"input": {"quoteId": quote["id"], "idempotencyKey": key}}, alice)
    )["executeConversion"]
    assert replay["replayed"] is True
    assert replay["entry"]["id"] == done["entry"]["id"]
    again = await hub.payload(
        EXECUTE, {"input": {"quoteId": quote["id"], "idempotencyKey": new_key()}}, alice
    )
    assert error_codes(again) == ["QUOTE_ALREADY_EXECUTED"]
    assert await hub.position(tea) == Decimal("-10")
    assert await hub.position(books) == Decimal("9.8")
    assert await hub.hub_account("hub_fees") == Decimal("0.2")
    await hub.check_invariants()
    del books


async def test_expired_quote_is_refused(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    _tea, _books, alice = await two_shops(hub)
    quote = (
        await hub.data(
            QUOTE, {"input": {"fromCurrency": "TEA", "toCurrency": "BOOK", "points": "10"}}, alice
        )
    )["quoteConversion"]["quote"]
    real_now = clock.now
    monkeypatch.setattr(clock, "now", lambda: real_now() + timedelta(minutes=5))
    late = await hub.payload(
        EXECUTE, {"input": {"quoteId": quote["id"], "idempotencyKey": new_key()}}, alice
    )
    assert error_codes(late) == ["QUOTE_EXPIRED"]


async def test_another_members_quote_is_not_found(hub: Hub) -> None:
    tea, _books, alice = await two_shops(hub)
    quote = (
        await hub.data(
            QUOTE, {"input": {"fromCurrency": "TEA", "toCurrency": "BOOK", "points": "10"}}, alice
        )
    )["quoteConversion"]["quote"]
    await hub.link(tea, "bob")
    bob = await hub.member_headers(tea, "bob")
    stolen = await hub.payload(
        EXECUTE, {"input": {"quoteId": quote["id"], "idempotencyKey": new_key()}}, bob
    )
    assert error_codes(stolen) == ["NOT_FOUND"]
    assert stolen["userErrors"][0]["field"] == "quoteId"
    bogus = await hub.payload(
        EXECUTE, {"input": {"quoteId": "not-an-id", "idempotencyKey": new_key()}}, bob
    )
    assert error_codes(bogus) == ["NOT_FOUND"]


async def test_quote_refusals(hub: Hub) -> None:
    _tea, _books, alice = await two_shops(hub)
    cases = [
        ({"fromCurrency": "TEA", "toCurrency": "TEA", "points": "10"}, "SAME_CURRENCY"),
        ({"fromCurrency": "TEA", "toCurrency": "NOPE", "points": "10"}, "UNKNOWN_CURRENCY"),
        ({"fromCurrency": "TEA", "toCurrency": "BOOK", "points": "0"}, "INVALID_AMOUNT"),
        ({"fromCurrency": "TEA", "toCurrency": "BOOK", "points": "1.5"}, "INVALID_AMOUNT"),
    ]
    for given, code in cases:
        refused = await hub.payload(QUOTE, {"input": given}, alice)
        assert error_codes(refused) == [code], given
    assert await hub.count("quotes") == 0
