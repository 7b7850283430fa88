"""Bad input never changes the ledger: every case is a typed error and nothing is written.

Amounts are ``Decimal`` strings: a value that is not a plain decimal at all (``"1e5"``,
``"abc"``, a JSON number) fails the scalar and is a top-level
``GRAPHQL_VALIDATION_FAILED`` error; a well-formed one that is zero, negative, finer than
the currency's scale or too large is an ``INVALID_AMOUNT`` user error.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.api.mutations.common import has_control
from exchange.config import Settings
from exchange.services.tx import Pool
from tests.api.mutation_kit import (
    AWARD,
    CREATE_RULE,
    EARN_PURCHASE,
    REDEEM,
    Hub,
    Shop,
    error_codes,
    make_hub,
    new_key,
    top_codes,
)

pytestmark = pytest.mark.anyio

ADJUST = """
mutation($input: AdjustPointsInput!) {
  adjustPoints(input: $input) { entry { id } userErrors { code field message } }
}"""

QUOTE = """
mutation($input: QuoteConversionInput!) {
  quoteConversion(input: $input) { quote { id } userErrors { code field message } }
}"""

LINK = """
mutation($input: LinkCustomerInput!) {
  linkCustomer(input: $input) { member { id } userErrors { code field message } }
}"""

HUGE = "9" * 30
TOO_MANY = "1" + "0" * 15 + "1"  # MAX_POINTS + 1 smallest units
LONG = "x" * 10_000


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def setup(hub: Hub) -> tuple[Shop, dict[str, str]]:
    tea = await hub.onboard("tea-house")
    books = await hub.onboard("book-shop")
    await hub.register(tea, "TEA", "0.01")
    await hub.register(books, "BOOK", "0.01", scale=2)
    await hub.link(tea, "alice")
    await hub.award(tea, "alice", "TEA", "1000")
    await hub.rule(tea, "TEA", "per yuan", spend={"pointsPerUnit": "1", "unitAmount": "1"})
    return tea, await hub.member_headers(tea, "alice")


def award(**changes: Any) -> dict[str, Any]:
    given: dict[str, Any] = {
        "customerRef": "alice",
        "currency": "TEA",
        "points": "5",
        "reason": "bonus",
        "idempotencyKey": new_key("bad"),
    }
    given.update(changes)
    return {"input": {k: v for k, v in given.items() if v is not ...}}


def redeem(**changes: Any) -> dict[str, Any]:
    given = {"customerRef": "alice", "currency": "TEA", "points": "5", "idempotencyKey": new_key()}
    given.update(changes)
    return {"input": given}


def purchase(**changes: Any) -> dict[str, Any]:
    given = {
        "customerRef": "alice",
        "currency": "TEA",
        "amountSpent": "10",
        "idempotencyKey": new_key(),
    }
    given.update(changes)
    return {"input": given}


def adjust(**changes: Any) -> dict[str, Any]:
    given = {
        "customerRef": "alice",
        "currency": "TEA",
        "points": "5",
        "reason": "fix",
        "idempotencyKey": new_key(),
    }
    given.update(changes)
    return {"input": given}


USER_ERROR_CASES: list[tuple[str, str, dict[str, Any], str, str | None]] = [
    # (name, document, variables, code, field)
    ("zero award", AWARD, award(points="0"), "INVALID_AMOUNT", "points"),
    ("negative award", AWARD, award(points="-5"), "INVALID_AMOUNT", "points"),
    ("fraction of a whole point", AWARD, award(points="1.5"), "INVALID_AMOUNT", "points"),
    ("beyond the scale", AWARD, award(currency="BOOK", points="1.234"), "INVALID_AMOUNT", "points"),
    ("over MAX_POINTS", AWARD, award(points=TOO_MANY), "INVALID_AMOUNT", "points"),
    ("thirty digits", AWARD, award(points=HUGE), "INVALID_AMOUNT", "points"),
    ("unknown currency", AWARD, award(currency="NOPE"), "UNKNOWN_CURRENCY", "currency"),
    ("settlement currency", AWARD, award(currency="CNY"), "UNKNOWN_CURRENCY", "currency"),
    ("control char in ref", AWARD, award(customerRef="ali\x00ce"), "INVALID_INPUT", "customerRef"),
    ("newline in reason", AWARD, award(reason="a\nb"), "INVALID_INPUT", "reason"),
    ("bidi override", AWARD, award(reason="abc\u202edef"), "INVALID_INPUT", "reason"),
    ("long ref", AWARD, award(customerRef=LONG), "INVALID_INPUT", "customerRef"),
    ("long reason", AWARD, award(reason=LONG), "INVALID_INPUT", "reason"),
    ("long currency", AWARD, award(currency=LONG), "INVALID_INPUT", "currency"),
    ("long key", AWARD, award(idempotencyKey=LONG), "INVALID_IDEMPOTENCY_KEY", "idempotencyKey"),
    ("bad key", AWARD, award(idempotencyKey="a b"), "INVALID_IDEMPOTENCY_KEY", "idempotencyKey"),
    ("empty key", AWARD, award(idempotencyKey=""), "INVALID_IDEMPOTENCY_KEY", "idempotencyKey"),
    ("neither action nor reason", AWARD, award(reason=...), "INVALID_INPUT", "action"),
    ("action with points", AWARD, award(reason=..., action="sign_in"), "INVALID_INPUT", "points"),
    ("reason without points", AWARD, award(points=...), "INVALID_AMOUNT", "points"),
    (
        "bad action name",
        AWARD,
        award(reason=..., points=..., action="Sign In"),
        "BAD_ACTION_NAME",
        "action",
    ),
    ("zero redeem", REDEEM, redeem(points="0"), "INVALID_AMOUNT", "points"),
    ("zero order total", REDEEM, redeem(orderTotal="0"), "INVALID_AMOUNT", "orderTotal"),
    ("negative order total", REDEEM, redeem(orderTotal="-1"), "INVALID_AMOUNT", "orderTotal"),
    ("micro-cent total", REDEEM, redeem(orderTotal="1.0000001"), "INVALID_AMOUNT", "orderTotal"),
    ("huge total", REDEEM, redeem(orderTotal=HUGE), "INVALID_AMOUNT", "orderTotal"),
    ("more than held", REDEEM, redeem(points="1001"), "INSUFFICIENT_POINTS", "points"),
    ("zero spent", EARN_PURCHASE, purchase(amountSpent="0"), "INVALID_AMOUNT", "amountSpent"),
    ("negative spent", EARN_PURCHASE, purchase(amountSpent="-10"), "INVALID_AMOUNT", "amountSpent"),
    ("huge spent", EARN_PURCHASE, purchase(amountSpent=HUGE), "INVALID_AMOUNT", "amountSpent"),
    ("tab in order ref", EARN_PURCHASE, purchase(orderRef="a\tb"), "INVALID_INPUT", "orderRef"),
    ("long order ref", EARN_PURCHASE, purchase(orderRef=LONG), "INVALID_INPUT", "orderRef"),
    ("zero adjustment", ADJUST, adjust(points="0"), "INVALID_AMOUNT", "points"),
    ("overflowing debit", ADJUST, adjust(points="-" + TOO_MANY), "INVALID_AMOUNT", "points"),
    ("empty reason", ADJUST, adjust(reason="   "), "INVALID_INPUT", "reason"),
]


async def test_bad_values_are_user_errors_and_change_nothing(hub: Hub) -> None:
    tea, _member = await setup(hub)
    before = await hub.ledger_size()
    for name, doc, variables, code, field in USER_ERROR_CASES:
        payload = await hub.payload(doc, variables, tea.headers)
        assert error_codes(payload) == [code], (name, payload)
        assert payload["userErrors"][0]["field"] == field, (name, payload)
        assert payload.get("entry") is None, name
    assert await hub.ledger_size() == before


async def test_malformed_decimals_fail_validation_and_change_nothing(hub: Hub) -> None:
    tea, member = await setup(hub)
    before = await hub.ledger_size()
    for bad in ("1e5", "abc", "", " 5", "5 ", "NaN", "Infinity", "0x10", "1,5", "+5", "05", 5, 5.5):
        body = await hub.gql(AWARD, award(points=bad), tea.headers)
        assert top_codes(body) == ["GRAPHQL_VALIDATION_FAILED"], (bad, body)
        assert body.get("data") is None
        body = await hub.gql(
            QUOTE, {"input": {"fromCurrency": "TEA", "toCurrency": "BOOK", "points": bad}}, member
        )
        assert top_codes(body) == ["GRAPHQL_VALIDATION_FAILED"], (bad, body)
    assert await hub.ledger_size() == before
    assert await hub.count("quotes") == 0


async def test_oversized_lists_are_refused(hub: Hub) -> None:
    tea, _member = await setup(hub)
    rules_before = await hub.count("earning_rules")
    for size in (8, 10_000):
        payload = await hub.payload(
            CREATE_RULE,
            {
                "input": {
                    "currency": "TEA",
                    "name": "every day",
                    "multiplier": {"factor": "2", "weekdays": [3] * size},
                }
            },
            tea.headers,
        )
        assert error_codes(payload) == ["INVALID_INPUT"], size
        assert payload["userErrors"][0]["field"] == "multiplier.weekdays"
    repeated = await hub.payload(
        CREATE_RULE,
        {
            "input": {
                "currency": "TEA",
                "name": "dup",
                "multiplier": {"factor": "2", "weekdays": [3, 3]},
            }
        },
        tea.headers,
    )
    assert error_codes(repeated) == ["BAD_WEEKDAY"]
    assert await hub.count("earning_rules") == rules_before


async def test_bad_strings_in_catalogue_mutations(hub: Hub) -> None:
    tea, _member = await setup(hub)
    for ref in ("a\x07b", LONG, "", "\u200b"):
        payload = await hub.payload(LINK, {"input": {"customerRef": ref}}, tea.headers)
        assert error_codes(payload) in (["INVALID_INPUT"], ["INVALID_CUSTOMER_REF"]), ref
    payload = await hub.payload(
        CREATE_RULE,
        {
            "input": {
                "currency": "TEA",
                "name": "x\x1b[31m",
                "action": {"action": "a", "points": "1"},
            }
        },
        tea.headers,
    )
    assert error_codes(payload) == ["INVALID_INPUT"]
    assert await hub.count("member_links") == 1


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=12) | st.text(st.characters(codec="utf-8"), max_size=6))
def test_control_characters_are_found_as_by_their_categories(text: str) -> None:
    defined = any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)
    assert has_control(text) == defined
    assert has_control(text + "\u2028 ok") == defined  # a separator: not a control
    assert has_control(text + "\u200b") is True  # a format character
