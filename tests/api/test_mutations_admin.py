"""Administration over HTTP: onboarding, exposure limits, fees, suspension, API keys."""

from __future__ import annotations

import httpx
import pytest

from exchange.config import Settings
from exchange.services.tx import Pool
from tests.api.mutation_kit import (
    CREATE_MERCHANT,
    Hub,
    error_codes,
    make_hub,
    new_key,
    top_codes,
)

pytestmark = pytest.mark.anyio

SET_LIMIT = """
mutation($input: SetExposureLimitInput!) {
  setExposureLimit(input: $input) {
    merchant { merchant { code active } exposureLimit }
    userErrors { code field message }
  }
}"""

SUSPEND = """
mutation($input: MerchantStatusInput!) {
  suspendMerchant(input: $input) { merchant { merchant { active } } userErrors { code } }
}"""

REACTIVATE = """
mutation($input: MerchantStatusInput!) {
  reactivateMerchant(input: $input) { merchant { merchant { active } } userErrors { code } }
}"""

CREATE_KEY = """
mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) {
    apiKey key { id role merchantCode label hint status }
    userErrors { code field message }
  }
}"""

REVOKE_KEY = """
mutation($input: RevokeApiKeyInput!) {
  revokeApiKey(input: $input) { key { id status revokedAt } userErrors { code field } }
}"""

SET_FEE = """
mutation($input: SetConversionFeeInput!) {
  setConversionFee(input: $input) { basisPoints userErrors { code field } }
}"""

WHO = "{ viewer { role merchant { code } } }"


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def test_create_merchant_returns_a_working_key_once(hub: Hub) -> None:
    made = (
        await hub.data(
            CREATE_MERCHANT,
            {"input": {"code": "tea-house", "name": "Tea House", "exposureLimit": "5000"}},
            hub.admin,
        )
    )["createMerchant"]
    assert made["merchant"]["merchant"]["code"] == "tea-house"
    assert made["merchant"]["exposureLimit"] == "5000.000000"
    key = made["apiKey"]
    assert key.startswith("exk_live_")
    who = await hub.data(WHO, headers={"Authorization": f"Bearer {key}"})
    assert who["viewer"] == {"role": "MERCHANT", "merchant": {"code": "tea-house"}}
    stored = await hub.scalar("SELECT key_hash FROM api_keys")
    assert key.encode() not in bytes(stored)
    taken = await hub.payload(
        CREATE_MERCHANT, {"input": {"code": "tea-house", "name": "Again"}}, hub.admin
    )
    assert error_codes(taken) == ["CODE_TAKEN"]
    bad = await hub.payload(
        CREATE_MERCHANT, {"input": {"code": "Tea House", "name": "x"}}, hub.admin
    )
    assert error_codes(bad) == ["INVALID_CODE"]
    assert await hub.count("merchants") == 1


async def test_exposure_limit_refuses_earns_beyond_it(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    await hub.register(tea, "TEA", "0.01")
    await hub.link(tea, "alice")
    limited = (
        await hub.data(
            SET_LIMIT, {"input": {"merchantCode": "tea-house", "limit": "1.00"}}, hub.admin
        )
    )["setExposureLimit"]
    assert limited["merchant"]["exposureLimit"] == "1.000000"
    await hub.award(tea, "alice", "TEA", "100")  # 1.00 of liability: at the limit
    refused = await hub.payload(
        """mutation($input: AwardPointsInput!) { awardPoints(input: $input) {
             userErrors { code field } } }""",
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "points": "1",
                "reason": "more",
                "idempotencyKey": new_key(),
            }
        },
        tea.headers,
    )
    assert error_codes(refused) == ["EXPOSURE_LIMIT"]
    lifted = (
        await hub.data(
            SET_LIMIT, {"input": {"merchantCode": "tea-house", "limit": None}}, hub.admin
        )
    )["setExposureLimit"]
    assert lifted["merchant"]["exposureLimit"] is None
    await hub.award(tea, "alice", "TEA", "1")
    unknown = await hub.payload(
        SET_LIMIT, {"input": {"merchantCode": "nope", "limit": "1"}}, hub.admin
    )
    assert error_codes(unknown) == ["NOT_FOUND"]


async def test_suspended_merchant_key_stops_working(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    await hub.data(WHO, headers=tea.headers)
    off = (await hub.data(SUSPEND, {"input": {"merchantCode": "tea-house"}}, hub.admin))[
        "suspendMerchant"
    ]
    assert off["merchant"]["merchant"]["active"] is False
    body = await hub.gql(WHO, headers=tea.headers, status=401)
    assert top_codes(body) == ["UNAUTHENTICATED"]
    await hub.data(REACTIVATE, {"input": {"merchantCode": "tea-house"}}, hub.admin)
    await hub.data(WHO, headers=tea.headers)


async def test_api_keys_are_created_and_revoked(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    made = (
        await hub.data(
            CREATE_KEY,
            {"input": {"role": "MERCHANT", "merchantCode": "tea-house", "label": "till 2"}},
            hub.admin,
        )
    )["createApiKey"]
    assert made["key"]["role"] == "MERCHANT"
    assert made["key"]["merchantCode"] == "tea-house"
    assert made["key"]["status"] == "ACTIVE"
    assert made["apiKey"].startswith(made["key"]["hint"][:12])
    second = {"Authorization": f"Bearer {made['apiKey']}"}
    await hub.data(WHO, headers=second)
    # A merchant revokes its own key; another merchant cannot see it.
    other = await hub.onboard("book-shop")
    hidden = await hub.payload(REVOKE_KEY, {"input": {"id": made["key"]["id"]}}, other.headers)
    assert error_codes(hidden) == ["NOT_FOUND"]
    revoked = (await hub.data(REVOKE_KEY, {"input": {"id": made["key"]["id"]}}, tea.headers))[
        "revokeApiKey"
    ]
    assert revoked["key"]["status"] == "REVOKED"
    assert top_codes(await hub.gql(WHO, headers=second, status=401)) == ["UNAUTHENTICATED"]
    await hub.data(WHO, headers=tea.headers)  # the first key still works
    finance = (await hub.data(CREATE_KEY, {"input": {"role": "FINANCE"}}, hub.admin))[
        "createApiKey"
    ]
    assert finance["key"]["merchantCode"] is None
    mixed = await hub.payload(
        CREATE_KEY, {"input": {"role": "FINANCE", "merchantCode": "tea-house"}}, hub.admin
    )
    assert error_codes(mixed) == ["INVALID_MERCHANT"]
    unknown = await hub.payload(
        CREATE_KEY, {"input": {"role": "MERCHANT", "merchantCode": "nope"}}, hub.admin
    )
    assert error_codes(unknown) == ["NOT_FOUND"]


async def test_conversion_fee_bounds(hub: Hub) -> None:
    ok = (await hub.data(SET_FEE, {"input": {"basisPoints": 150}}, hub.admin))["setConversionFee"]
    assert ok["basisPoints"] == 150
    assert await hub.scalar("SELECT value FROM hub_settings WHERE name = 'conversion_fee_bp'") == (
        "150"
    )
    for bad in (-1, 10_000):
        refused = await hub.payload(SET_FEE, {"input": {"basisPoints": bad}}, hub.admin)
        assert error_codes(refused) == ["INVALID_FEE"]
