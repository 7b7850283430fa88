"""Currencies and earning rules over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from exchange.config import Settings
from exchange.services.tx import Pool
from tests.api.mutation_kit import (
    CREATE_RULE,
    REGISTER_CURRENCY,
    Hub,
    error_codes,
    make_hub,
    new_key,
)

pytestmark = pytest.mark.anyio

CHANGE_RATE = """
mutation($input: ChangeRateInput!) {
  changeRate(input: $input) {
    currency { code rate rateHistory { nodes { rate effectiveAt inForce } } }
    effectiveAt
    userErrors { code field message }
  }
}"""

SET_ACTIVE = """
mutation($input: SetCurrencyActiveInput!) {
  setCurrencyActive(input: $input) { currency { code active } userErrors { code field } }
}"""

UPDATE_RULE = """
mutation($input: UpdateEarningRuleInput!) {
  updateEarningRule(input: $input) {
    rule { id name spend { pointsPerUnit unitAmount } }
    userErrors { code field message }
  }
}"""

DEACTIVATE_RULE = """
mutation($input: DeactivateEarningRuleInput!) {
  deactivateEarningRule(input: $input) { rule { id active } userErrors { code field } }
}"""

RULES = """
query($currency: String!, $all: Boolean!) {
  earningRules(currency: $currency, includeInactive: $all) {
    id kind name active
    spend { pointsPerUnit unitAmount }
    action { action points }
    multiplier { factor startsOn endsOn weekdays }
    cap { period maxPoints }
    currency { code }
  }
}"""

NODE = "query($id: ID!) { node(id: $id) { id ... on EarningRule { name active } } }"


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def test_register_currency_and_refusals(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    made = await hub.register(tea, "TEA", "0.0100", scale=2, expiry={"kind": "DAYS", "period": 365})
    assert made["code"] == "TEA"
    assert made["scale"] == 2
    assert made["rate"] == "0.01"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"code": "TEA", "rate": "0.01"}, "CODE_TAKEN"),
        ({"code": "tea", "rate": "0.01"}, "INVALID_CODE"),
        ({"code": "NEW", "rate": "0"}, "INVALID_RATE"),
        ({"code": "NEW", "rate": "-1"}, "INVALID_RATE"),
        ({"code": "NEW", "rate": "0.0000000000001"}, "INVALID_RATE"),
        ({"code": "NEW", "rate": "0.01", "scale": 7}, "INVALID_SCALE"),
        ({"code": "NEW", "rate": "0.01", "expiry": {"kind": "DAYS"}}, "INVALID_EXPIRY"),
        (
            {"code": "NEW", "rate": "0.01", "expiry": {"kind": "NEVER", "period": 3}},
            "INVALID_EXPIRY",
        ),
    ]
    for given, code in cases:
        refused = await hub.payload(
            REGISTER_CURRENCY,
            {"input": {"name": "x", "expiry": {"kind": "NEVER"}, **given}},
            tea.headers,
        )
        assert error_codes(refused) == [code], given
    assert await hub.count("currencies") == 2  # the settlement currency and TEA


async def test_rate_changes_are_kept(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    await hub.register(tea, "TEA", "0.01")
    changed = (
        await hub.data(CHANGE_RATE, {"input": {"currency": "TEA", "rate": "0.012"}}, tea.headers)
    )["changeRate"]
    assert changed["currency"]["rate"] == "0.012"
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    planned = (
        await hub.data(
            CHANGE_RATE,
            {"input": {"currency": "TEA", "rate": "0.02", "effectiveAt": later}},
            tea.headers,
        )
    )["changeRate"]
    assert planned["currency"]["rate"] == "0.012"
    history = planned["currency"]["rateHistory"]["nodes"]
    assert [(h["rate"], h["inForce"]) for h in history] == [
        ("0.02", False),
        ("0.012", True),
        ("0.01", False),
    ]
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    refused = await hub.payload(
        CHANGE_RATE,
        {"input": {"currency": "TEA", "rate": "0.02", "effectiveAt": past}},
        tea.headers,
    )
    assert error_codes(refused) == ["INVALID_TIME"]
    other = await hub.onboard("book-shop")
    foreign = await hub.payload(
        CHANGE_RATE, {"input": {"currency": "TEA", "rate": "0.5"}}, other.headers
    )
    assert error_codes(foreign) == ["NOT_FOUND"]


async def test_inactive_currency_stops_issuing(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    await hub.register(tea, "TEA", "0.01")
    await hub.link(tea, "alice")
    off = await hub.data(SET_ACTIVE, {"input": {"currency": "TEA", "active": False}}, tea.headers)
    assert off["setCurrencyActive"]["currency"] == {"code": "TEA", "active": False}
    refused = await hub.payload(
        """mutation($input: AwardPointsInput!) { awardPoints(input: $input) {
             points userErrors { code field } } }""",
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "points": "5",
                "reason": "x",
                "idempotencyKey": new_key(),
            }
        },
        tea.headers,
    )
    assert error_codes(refused) == ["CURRENCY_INACTIVE"]
    await hub.data(SET_ACTIVE, {"input": {"currency": "TEA", "active": True}}, tea.headers)
    await hub.award(tea, "alice", "TEA", "5")


async def test_rules_are_listed_updated_and_deactivated(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    await hub.register(tea, "TEA", "0.01", scale=2)
    spend = await hub.rule(tea, "TEA", "per 10", spend={"pointsPerUnit": "1", "unitAmount": "10"})
    await hub.rule(tea, "TEA", "sign in", action={"action": "sign_in", "points": "0.5"})
    await hub.rule(
        tea,
        "TEA",
        "member day",
        multiplier={"factor": "1.50", "weekdays": [3], "startsOn": "2026-01-01"},
    )
    await hub.rule(tea, "TEA", "daily", cap={"period": "DAY", "maxPoints": "200"})
    listed = (await hub.data(RULES, {"currency": "TEA", "all": False}, tea.headers))["earningRules"]
    assert [r["kind"] for r in listed] == ["SPEND", "ACTION", "MULTIPLIER", "CAP"]
    assert listed[0]["spend"] == {"pointsPerUnit": "1.00", "unitAmount": "10"}
    assert listed[1]["action"] == {"action": "sign_in", "points": "0.50"}
    assert listed[2]["multiplier"] == {
        "factor": "1.5",
        "startsOn": "2026-01-01",
        "endsOn": None,
        "weekdays": [3],
    }
    assert listed[3]["cap"] == {"period": "DAY", "maxPoints": "200.00"}
    assert listed[0]["currency"] == {"code": "TEA"}

    updated = (
        await hub.data(
            UPDATE_RULE,
            {
                "input": {
                    "ruleId": spend,
                    "name": "per 5",
                    "spend": {"pointsPerUnit": "1", "unitAmount": "5"},
                }
            },
            tea.headers,
        )
    )["updateEarningRule"]["rule"]
    assert updated["name"] == "per 5"
    assert updated["spend"] == {"pointsPerUnit": "1.00", "unitAmount": "5"}
    wrong_kind = await hub.payload(
        UPDATE_RULE,
        {"input": {"ruleId": spend, "cap": {"period": "DAY", "maxPoints": "1"}}},
        tea.headers,
    )
    assert error_codes(wrong_kind) == ["INVALID_INPUT"]

    off = (await hub.data(DEACTIVATE_RULE, {"input": {"ruleId": spend}}, tea.headers))[
        "deactivateEarningRule"
    ]
    assert off["rule"]["active"] is False
    active = (await hub.data(RULES, {"currency": "TEA", "all": False}, tea.headers))["earningRules"]
    assert spend not in [r["id"] for r in active]
    everything = (await hub.data(RULES, {"currency": "TEA", "all": True}, tea.headers))[
        "earningRules"
    ]
    assert spend in [r["id"] for r in everything]

    # Another merchant sees active rules only, and cannot touch them.
    other = await hub.onboard("book-shop")
    seen = (await hub.data(RULES, {"currency": "TEA", "all": True}, other.headers))["earningRules"]
    assert [r["kind"] for r in seen] == ["ACTION", "MULTIPLIER", "CAP"]
    assert (await hub.data(NODE, {"id": spend}, other.headers))["node"] is None
    assert (await hub.data(NODE, {"id": spend}, tea.headers))["node"]["active"] is False
    foreign = await hub.payload(
        DEACTIVATE_RULE, {"input": {"ruleId": listed[1]["id"]}}, other.headers
    )
    assert error_codes(foreign) == ["NOT_FOUND"]


async def test_every_problem_of_a_rule_is_reported(hub: Hub) -> None:
    tea = await hub.onboard("tea-house")
    await hub.register(tea, "TEA", "0.01")
    refused = await hub.payload(
        CREATE_RULE,
        {
            "input": {
                "currency": "TEA",
                "name": "broken",
                "multiplier": {
                    "factor": "101",
                    "startsOn": "2026-12-31",
                    "endsOn": "2026-12-01",
                    "weekdays": [0, 8],
                },
            }
        },
        tea.headers,
    )
    assert sorted(error_codes(refused)) == ["BAD_FACTOR", "BAD_WEEKDAY", "BAD_WINDOW"]
    assert {e["field"] for e in refused["userErrors"]} == {
        "multiplier.factor",
        "multiplier.endsOn",
        "multiplier.weekdays",
    }
    cases = [
        ({"action": {"action": "Sign In", "points": "5"}}, ["BAD_ACTION_NAME"]),
        ({"spend": {"pointsPerUnit": "1", "unitAmount": "0"}}, ["INVALID_AMOUNT"]),
        ({"spend": {"pointsPerUnit": "0", "unitAmount": "10"}}, ["INVALID_AMOUNT"]),
        ({"cap": {"period": "DAY", "maxPoints": "-5"}}, ["INVALID_AMOUNT"]),
        ({}, ["INVALID_INPUT"]),
        (
            {
                "spend": {"pointsPerUnit": "1", "unitAmount": "1"},
                "cap": {"period": "DAY", "maxPoints": "5"},
            },
            ["INVALID_INPUT"],
        ),
    ]
    for given, codes in cases:
        refused = await hub.payload(
            CREATE_RULE, {"input": {"currency": "TEA", "name": "r", **given}}, tea.headers
        )
        assert error_codes(refused) == codes, given
    foreign = await hub.onboard("book-shop")
    not_mine = await hub.payload(
        CREATE_RULE,
        {"input": {"currency": "TEA", "name": "r", "action": {"action": "x", "points": "1"}}},
        foreign.headers,
    )
    assert error_codes(not_mine) == ["NOT_FOUND"]
    assert await hub.count("earning_rules") == 0
