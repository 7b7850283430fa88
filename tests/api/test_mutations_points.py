"""Points over HTTP: earning by rules (multipliers, caps, zero-point purchases), awards,
redemptions with cash, reversals, adjustments, and idempotency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from exchange.config import Settings
from exchange.services import clock
from exchange.services.tx import Pool
from tests.api.mutation_kit import (
    AWARD,
    EARN_PURCHASE,
    REDEEM,
    Hub,
    error_codes,
    make_hub,
    new_key,
)

pytestmark = pytest.mark.anyio

REVERSE = """
mutation($input: ReverseEntryInput!) {
  reverseEntry(input: $input) {
    entry { id kind points reason reversedEntryId }
    reversedEntry { id }
    replayed
    userErrors { code field message }
  }
}"""

ADJUST = """
mutation($input: AdjustPointsInput!) {
  adjustPoints(input: $input) {
    entry { id kind points reason }
    replayed
    userErrors { code field message }
  }
}"""

# A Wednesday in Shanghai (2026-12-02), and the Thursday after.
WEDNESDAY = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
THURSDAY = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def tea_shop(hub: Hub) -> Any:
    tea = await hub.onboard("tea-house")
    await hub.register(tea, "TEA", "0.01")
    await hub.link(tea, "alice")
    return tea


def purchase(ref: str, amount: str, key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "input": {
            "customerRef": ref,
            "currency": "TEA",
            "amountSpent": amount,
            "orderRef": extra.pop("orderRef", "order-1"),
            "idempotencyKey": key or new_key("buy"),
            **extra,
        }
    }


async def test_purchase_earns_by_spend_rule_and_records_the_rule(hub: Hub) -> None:
    tea = await tea_shop(hub)
    rule_id = await hub.rule(
        tea, "TEA", "1 point per 10 yuan", spend={"pointsPerUnit": "1", "unitAmount": "10"}
    )
    result = await hub.data(EARN_PURCHASE, purchase("alice", "128.50"), tea.headers)
    earned = result["earnForPurchase"]
    assert earned["points"] == "12"
    assert earned["entry"]["kind"] == "EARN"
    assert earned["entry"]["points"] == "12"
    assert earned["entry"]["value"] == "0.120000"
    assert earned["appliedRules"] == [
        {
            "ruleId": rule_id,
            "name": "1 point per 10 yuan",
            "kind": "SPEND",
            "points": "12",
            "factor": None,
        }
    ]
    assert earned["cappedBy"] is None
    assert earned["replayed"] is False
    details = await hub.scalar("SELECT details FROM entries WHERE kind = 'earn'")
    assert details["appliedRules"][0]["points"] == 12
    assert details["orderRef"] == "order-1"
    assert details["amountSpent"] == "128.50"


async def test_highest_multiplier_applies_on_its_weekday(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    tea = await tea_shop(hub)
    await hub.rule(tea, "TEA", "base", spend={"pointsPerUnit": "1", "unitAmount": "1"})
    await hub.rule(tea, "TEA", "member day", multiplier={"factor": "1.5", "weekdays": [3]})
    triple = await hub.rule(
        tea,
        "TEA",
        "campaign",
        multiplier={"factor": "3", "startsOn": "2026-12-01", "endsOn": "2026-12-02"},
    )
    monkeypatch.setattr(clock, "now", lambda: WEDNESDAY)
    earned = (await hub.data(EARN_PURCHASE, purchase("alice", "15"), tea.headers))[
        "earnForPurchase"
    ]
    assert earned["points"] == "45"  # ×3 wins over ×1.5: never ×4.5
    assert [(a["kind"], a["points"], a["factor"]) for a in earned["appliedRules"]] == [
        ("SPEND", "15", None),
        ("MULTIPLIER", "30", "3"),
    ]
    assert earned["appliedRules"][1]["ruleId"] == triple
    monkeypatch.setattr(clock, "now", lambda: THURSDAY)
    earned = (await hub.data(EARN_PURCHASE, purchase("alice", "15"), tea.headers))[
        "earnForPurchase"
    ]
    assert earned["points"] == "15"


async def test_purchase_that_earns_nothing_is_a_success_without_entry(hub: Hub) -> None:
    tea = await tea_shop(hub)
    await hub.rule(tea, "TEA", "per 10", spend={"pointsPerUnit": "1", "unitAmount": "10"})
    before = await hub.ledger_size()
    key = new_key("small")
    earned = (await hub.data(EARN_PURCHASE, purchase("alice", "9.99", key), tea.headers))[
        "earnForPurchase"
    ]
    assert earned["points"] == "0"
    assert earned["entry"] is None
    assert earned["appliedRules"][0]["points"] == "0"
    assert await hub.ledger_size() == before
    again = (await hub.data(EARN_PURCHASE, purchase("alice", "9.99", key), tea.headers))[
        "earnForPurchase"
    ]
    assert again["replayed"] is True
    assert again["points"] == "0"
    changed = await hub.payload(EARN_PURCHASE, purchase("alice", "99", key), tea.headers)
    assert error_codes(changed) == ["IDEMPOTENCY_KEY_REUSED"]


async def test_day_cap_binds_and_is_recorded(hub: Hub) -> None:
    tea = await tea_shop(hub)
    await hub.rule(tea, "TEA", "base", spend={"pointsPerUnit": "1", "unitAmount": "1"})
    cap = await hub.rule(tea, "TEA", "daily 100", cap={"period": "DAY", "maxPoints": "100"})
    first = (await hub.data(EARN_PURCHASE, purchase("alice", "70"), tea.headers))["earnForPurchase"]
    assert first["points"] == "70"
    second = (await hub.data(EARN_PURCHASE, purchase("alice", "70"), tea.headers))[
        "earnForPurchase"
    ]
    assert second["points"] == "30"
    assert second["cappedBy"] == cap
    assert second["appliedRules"][-1] == {
        "ruleId": cap,
        "name": "daily 100",
        "kind": "CAP",
        "points": "-40",
        "factor": None,
    }
    third = (await hub.data(EARN_PURCHASE, purchase("alice", "70"), tea.headers))["earnForPurchase"]
    assert third["points"] == "0"
    assert third["entry"] is None
    alice = await hub.link(tea, "alice")
    assert await hub.wallet(alice, "TEA") == 100


async def test_caps_hold_under_concurrent_earns(hub: Hub) -> None:
    tea = await tea_shop(hub)
    await hub.rule(tea, "TEA", "base", spend={"pointsPerUnit": "1", "unitAmount": "1"})
    await hub.rule(tea, "TEA", "daily", cap={"period": "DAY", "maxPoints": "100"})
    await hub.rule(tea, "TEA", "monthly", cap={"period": "MONTH", "maxPoints": "250"})

    async def buy(i: int) -> str:
        result = await hub.data(EARN_PURCHASE, purchase("alice", "7", f"c-{i}"), tea.headers)
        points: str = result["earnForPurchase"]["points"]
        return points

    awarded = await asyncio.gather(*(buy(i) for i in range(20)))
    assert sum(int(p) for p in awarded) == 100
    assert sorted(awarded, key=int)[-1] == "7"
    alice = await hub.link(tea, "alice")
    assert await hub.wallet(alice, "TEA") == 100
    assert await hub.count("entries") == 15  # 14 × 7 + one capped at 2


async def test_action_award_uses_the_action_rule(hub: Hub) -> None:
    tea = await tea_shop(hub)
    await hub.rule(tea, "TEA", "daily sign-in", action={"action": "sign_in", "points": "5"})
    vars_ = {
        "input": {
            "customerRef": "alice",
            "currency": "TEA",
            "action": "sign_in",
            "idempotencyKey": new_key(),
        }
    }
    award = (await hub.data(AWARD, vars_, tea.headers))["awardPoints"]
    assert award["points"] == "5"
    assert award["appliedRules"][0]["kind"] == "ACTION"
    vars_["input"]["action"] = "review"
    vars_["input"]["idempotencyKey"] = new_key()
    refused = await hub.payload(AWARD, vars_, tea.headers)
    assert refused["userErrors"][0]["code"] == "NOT_FOUND"
    assert refused["userErrors"][0]["field"] == "action"


async def test_award_with_reason_and_idempotent_replay(hub: Hub) -> None:
    tea = await tea_shop(hub)
    key = new_key()
    first = await hub.award(tea, "alice", "TEA", "50", key)
    again = await hub.award(tea, "alice", "TEA", "50", key)
    assert again["replayed"] is True
    assert again["entry"]["id"] == first["entry"]["id"]
    changed = await hub.payload(
        AWARD,
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "points": "51",
                "reason": "welcome",
                "idempotencyKey": key,
            }
        },
        tea.headers,
    )
    assert error_codes(changed) == ["IDEMPOTENCY_KEY_REUSED"]
    assert await hub.count("entries") == 1


async def test_twenty_concurrent_identical_awards_make_one_entry(hub: Hub) -> None:
    tea = await tea_shop(hub)
    key = new_key("storm")
    results = await asyncio.gather(*(hub.award(tea, "alice", "TEA", "10", key) for _ in range(20)))
    assert len({r["entry"]["id"] for r in results}) == 1
    assert sum(1 for r in results if not r["replayed"]) == 1
    assert await hub.count("entries") == 1
    alice = await hub.link(tea, "alice")
    assert await hub.wallet(alice, "TEA") == 10


async def test_redeem_points_plus_cash(hub: Hub) -> None:
    tea = await tea_shop(hub)
    await hub.award(tea, "alice", "TEA", "500")
    result = await hub.data(
        REDEEM,
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "points": "500",
                "orderTotal": "8.00",
                "idempotencyKey": new_key(),
            }
        },
        tea.headers,
    )
    spent = result["redeemPoints"]
    assert spent["pointsUsed"] == "500"
    assert spent["value"] == "5.000000"
    assert spent["cashDue"] == "3.000000"
    assert spent["entry"]["points"] == "-500"
    short = await hub.payload(
        REDEEM,
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "points": "1",
                "idempotencyKey": new_key(),
            }
        },
        tea.headers,
    )
    assert error_codes(short) == ["INSUFFICIENT_POINTS"]


async def test_reverse_part_then_rest_then_too_much(hub: Hub) -> None:
    tea = await tea_shop(hub)
    award = await hub.award(tea, "alice", "TEA", "100")
    entry_id = award["entry"]["id"]
    part = await hub.data(
        REVERSE,
        {
            "input": {
                "entryId": entry_id,
                "points": "40",
                "reason": "partial refund",
                "idempotencyKey": new_key(),
            }
        },
        tea.headers,
    )
    reversal = part["reverseEntry"]
    assert reversal["entry"]["kind"] == "REVERSE"
    assert reversal["entry"]["points"] == "-40"
    assert reversal["entry"]["reversedEntryId"] == entry_id
    assert reversal["reversedEntry"]["id"] == entry_id
    rest = await hub.data(
        REVERSE,
        {"input": {"entryId": entry_id, "reason": "refund", "idempotencyKey": new_key()}},
        tea.headers,
    )
    assert rest["reverseEntry"]["entry"]["points"] == "-60"
    too_much = await hub.payload(
        REVERSE,
        {"input": {"entryId": entry_id, "reason": "again", "idempotencyKey": new_key()}},
        tea.headers,
    )
    assert error_codes(too_much) == ["REVERSAL_EXCEEDS_ORIGINAL"]


async def test_another_merchants_entry_is_not_found(hub: Hub) -> None:
    tea = await tea_shop(hub)
    award = await hub.award(tea, "alice", "TEA", "100")
    other = await hub.onboard("book-shop")
    refused = await hub.payload(
        REVERSE,
        {
            "input": {
                "entryId": award["entry"]["id"],
                "reason": "x",
                "idempotencyKey": new_key(),
            }
        },
        other.headers,
    )
    assert error_codes(refused) == ["NOT_FOUND"]
    assert refused["userErrors"][0]["field"] == "entryId"


async def test_adjust_grants_and_takes_back(hub: Hub) -> None:
    tea = await tea_shop(hub)
    grant = await hub.data(
        ADJUST,
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "points": "30",
                "reason": "goodwill",
                "idempotencyKey": new_key(),
            }
        },
        tea.headers,
    )
    assert grant["adjustPoints"]["entry"]["points"] == "30"
    assert grant["adjustPoints"]["entry"]["reason"] == "goodwill"
    take = await hub.data(
        ADJUST,
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "points": "-10",
                "reason": "correction",
                "idempotencyKey": new_key(),
            }
        },
        tea.headers,
    )
    assert take["adjustPoints"]["entry"]["points"] == "-10"
    alice = await hub.link(tea, "alice")
    assert await hub.wallet(alice, "TEA") == 20
    other = await hub.onboard("book-shop")
    await hub.link(other, "al")
    foreign = await hub.payload(
        ADJUST,
        {
            "input": {
                "customerRef": "al",
                "currency": "TEA",
                "points": "5",
                "reason": "not mine",
                "idempotencyKey": new_key(),
            }
        },
        other.headers,
    )
    assert error_codes(foreign) == ["FORBIDDEN"]


async def test_unlinked_customer_is_not_found_even_if_another_merchant_knows_them(
    hub: Hub,
) -> None:
    tea = await tea_shop(hub)
    other = await hub.onboard("book-shop")
    await hub.register(other, "BOOK", "0.01")
    refused = await hub.payload(
        AWARD,
        {
            "input": {
                "customerRef": "alice",
                "currency": "BOOK",
                "points": "5",
                "reason": "x",
                "idempotencyKey": new_key(),
            }
        },
        other.headers,
    )
    unknown = await hub.payload(
        AWARD,
        {
            "input": {
                "customerRef": "nobody-at-all",
                "currency": "BOOK",
                "points": "5",
                "reason": "x",
                "idempotencyKey": new_key(),
            }
        },
        other.headers,
    )
    assert refused["userErrors"] == unknown["userErrors"]
    assert error_codes(refused) == ["NOT_FOUND"]
    assert refused["userErrors"][0]["field"] == "customerRef"
    del tea
