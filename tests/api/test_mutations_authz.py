"""Who may call which mutation: every mutation × every kind of caller.

Anonymous callers get a top-level ``UNAUTHENTICATED`` error, callers of a role that may
never use a mutation a top-level ``FORBIDDEN`` one, and neither changes anything. Callers
of the right role acting on another tenant's objects get ``NOT_FOUND`` user errors.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from exchange.api.schema import schema
from exchange.config import Settings
from exchange.services.tx import Pool
from tests.api.mutation_kit import Hub, error_codes, make_hub, new_key, top_codes

pytestmark = pytest.mark.anyio

ADMIN, FINANCE, MERCHANT, MEMBER = "admin", "finance", "merchant", "member"
ROLES = (ADMIN, FINANCE, MERCHANT, MEMBER)

# mutation: (input type, input, roles that may call it)
MATRIX: dict[str, tuple[str, dict[str, Any], frozenset[str]]] = {
    "createMerchant": (
        "CreateMerchantInput",
        {"code": "new-shop", "name": "New"},
        frozenset({ADMIN}),
    ),
    "setExposureLimit": (
        "SetExposureLimitInput",
        {"merchantCode": "tea-house", "limit": "100"},
        frozenset({ADMIN}),
    ),
    "setConversionFee": ("SetConversionFeeInput", {"basisPoints": 50}, frozenset({ADMIN})),
    "suspendMerchant": ("MerchantStatusInput", {"merchantCode": "nope"}, frozenset({ADMIN})),
    "reactivateMerchant": ("MerchantStatusInput", {"merchantCode": "nope"}, frozenset({ADMIN})),
    "createApiKey": ("CreateApiKeyInput", {"role": "FINANCE"}, frozenset({ADMIN})),
    "revokeApiKey": ("RevokeApiKeyInput", {"id": "QXBpS2V5Ojk5OQ=="}, frozenset({ADMIN, MERCHANT})),
    "registerCurrency": (
        "RegisterCurrencyInput",
        {"code": "NEWPT", "name": "New", "rate": "0.01", "expiry": {"kind": "NEVER"}},
        frozenset({MERCHANT}),
    ),
    "changeRate": ("ChangeRateInput", {"currency": "TEA", "rate": "0.02"}, frozenset({MERCHANT})),
    "setCurrencyActive": (
        "SetCurrencyActiveInput",
        {"currency": "TEA", "active": True},
        frozenset({MERCHANT}),
    ),
    "createEarningRule": (
        "CreateEarningRuleInput",
        {"currency": "TEA", "name": "r", "action": {"action": "review", "points": "1"}},
        frozenset({MERCHANT}),
    ),
    "updateEarningRule": (
        "UpdateEarningRuleInput",
        {"ruleId": "RWFybmluZ1J1bGU6OTk5", "name": "x"},
        frozenset({MERCHANT}),
    ),
    "deactivateEarningRule": (
        "DeactivateEarningRuleInput",
        {"ruleId": "RWFybmluZ1J1bGU6OTk5"},
        frozenset({MERCHANT}),
    ),
    "linkCustomer": ("LinkCustomerInput", {"customerRef": "zed"}, frozenset({MERCHANT})),
    "startMemberSession": (
        "StartMemberSessionInput",
        {"customerRef": "alice"},
        frozenset({MERCHANT}),
    ),
    "createLinkCode": ("CreateLinkCodeInput", {}, frozenset({MEMBER})),
    "earnForPurchase": (
        "EarnForPurchaseInput",
        {"customerRef": "alice", "currency": "TEA", "amountSpent": "10", "idempotencyKey": "p"},
        frozenset({MERCHANT}),
    ),
    "awardPoints": (
        "AwardPointsInput",
        {
            "customerRef": "alice",
            "currency": "TEA",
            "points": "1",
            "reason": "r",
            "idempotencyKey": "a",
        },
        frozenset({MERCHANT}),
    ),
    "awardPointsBatch": (
        "AwardPointsBatchInput",
        {
            "items": [
                {"customerRef": "alice", "currency": "TEA", "points": "1", "idempotencyKey": "b1"}
            ]
        },
        frozenset({MERCHANT}),
    ),
    "redeemPoints": (
        "RedeemPointsInput",
        {"customerRef": "alice", "currency": "TEA", "points": "1", "idempotencyKey": "r"},
        frozenset({MERCHANT}),
    ),
    "reverseEntry": (
        "ReverseEntryInput",
        {"entryId": "RW50cnk6OTk5", "reason": "r", "idempotencyKey": "v"},
        frozenset({MERCHANT, ADMIN}),
    ),
    "adjustPoints": (
        "AdjustPointsInput",
        {
            "customerRef": "alice",
            "currency": "TEA",
            "points": "1",
            "reason": "r",
            "idempotencyKey": "j",
        },
        frozenset({MERCHANT}),
    ),
    "quoteConversion": (
        "QuoteConversionInput",
        {"fromCurrency": "TEA", "toCurrency": "BOOK", "points": "1"},
        frozenset({MEMBER}),
    ),
    "executeConversion": (
        "ExecuteConversionInput",
        {"quoteId": "UXVvdGU6OTk5", "idempotencyKey": "x"},
        frozenset({MEMBER}),
    ),
    "closeSettlementBatch": (
        "CloseSettlementBatchInput",
        {"idempotencyKey": "b"},
        frozenset({FINANCE, ADMIN}),
    ),
    "confirmPayment": (
        "ConfirmPaymentInput",
        {
            "batchId": 999,
            "merchantCode": "tea-house",
            "amount": "1",
            "externalReference": "WIRE-1",
            "idempotencyKey": "c",
        },
        frozenset({FINANCE}),
    ),
}


def document(name: str, input_type: str) -> str:
    return (
        f"mutation($input: {input_type}!) {{ {name}(input: $input) {{"
        " userErrors { code field message } } }"
    )


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def callers(hub: Hub) -> dict[str, dict[str, str]]:
    tea = await hub.onboard("tea-house")
    books = await hub.onboard("book-shop")
    await hub.register(tea, "TEA", "0.01")
    await hub.register(books, "BOOK", "0.01")
    await hub.link(tea, "alice")
    return {
        ADMIN: hub.operator_headers(ADMIN),
        FINANCE: hub.operator_headers(FINANCE),
        MERCHANT: tea.headers,
        MEMBER: await hub.member_headers(tea, "alice"),
    }


async def snapshot(hub: Hub) -> tuple[int, ...]:
    tables = (
        "entries",
        "postings",
        "requests",
        "merchants",
        "api_keys",
        "currencies",
        "rates",
        "earning_rules",
        "member_links",
        "members",
        "link_codes",
        "quotes",
        "hub_settings",
    )
    return tuple([await hub.count(t) for t in tables])


def test_the_matrix_covers_every_mutation() -> None:
    mutation_type = schema._schema.mutation_type
    assert mutation_type is not None
    assert set(mutation_type.fields) == set(MATRIX)


async def test_wrong_callers_are_refused_at_the_top_level(hub: Hub) -> None:
    headers = await callers(hub)
    before = await snapshot(hub)
    for name, (input_type, given, allowed) in MATRIX.items():
        query = document(name, input_type)
        body = await hub.gql(query, {"input": given}, {})
        assert top_codes(body) == ["UNAUTHENTICATED"], (name, body)
        assert body["data"] is None
        for role in ROLES:
            if role in allowed:
                continue
            body = await hub.gql(query, {"input": given}, headers[role])
            assert top_codes(body) == ["FORBIDDEN"], (name, role, body)
            assert body["data"] is None
    assert await snapshot(hub) == before


async def test_allowed_callers_get_payloads(hub: Hub) -> None:
    headers = await callers(hub)
    for name, (input_type, given, allowed) in MATRIX.items():
        for role in sorted(allowed):
            variables = {"input": {**given}}
            if "idempotencyKey" in given:
                variables["input"]["idempotencyKey"] = new_key(name)
            body = await hub.gql(document(name, input_type), variables, headers[role])
            assert "errors" not in body, (name, role, body)
            assert isinstance(body["data"][name]["userErrors"], list)


async def test_other_tenants_objects_are_not_found(hub: Hub) -> None:
    headers = await callers(hub)
    books = hub.shops["book-shop"]
    tea = hub.shops["tea-house"]
    award = await hub.award(tea, "alice", "TEA", "10")
    rule = await hub.rule(tea, "TEA", "sign in", action={"action": "sign_in", "points": "1"})
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("awardPoints", {**MATRIX["awardPoints"][1], "idempotencyKey": new_key()}, "customerRef"),
        ("redeemPoints", {**MATRIX["redeemPoints"][1], "idempotencyKey": new_key()}, "customerRef"),
        ("adjustPoints", {**MATRIX["adjustPoints"][1], "idempotencyKey": new_key()}, "customerRef"),
        (
            "earnForPurchase",
            {**MATRIX["earnForPurchase"][1], "idempotencyKey": new_key()},
            "customerRef",
        ),
        ("startMemberSession", {"customerRef": "alice"}, "customerRef"),
        (
            "reverseEntry",
            {"entryId": award["entry"]["id"], "reason": "r", "idempotencyKey": new_key()},
            "entryId",
        ),
        ("changeRate", {"currency": "TEA", "rate": "0.5"}, "currency"),
        ("setCurrencyActive", {"currency": "TEA", "active": False}, "currency"),
        ("deactivateEarningRule", {"ruleId": rule}, "ruleId"),
        ("updateEarningRule", {"ruleId": rule, "name": "mine now"}, "ruleId"),
    ]
    before = await snapshot(hub)
    for name, given, field in cases:
        payload = await hub.payload(
            document(name, MATRIX[name][0]), {"input": given}, books.headers
        )
        assert error_codes(payload) == ["NOT_FOUND"], (name, payload)
        assert payload["userErrors"][0]["field"] == field, name
    after = await snapshot(hub)
    # Refusals of value-moving requests are remembered under their keys (requests), nothing else.
    assert [
        a for i, (a, b) in enumerate(zip(after, before, strict=True)) if a != b and i != 2
    ] == []
    del headers
