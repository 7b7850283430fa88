"""One member's journey through the alliance, over HTTP, with the books checked at every step.

Three merchants: A (``tea-house``, TEA: scale 0, 0.01, points last 30 days), B
(``book-shop``, BOOK: scale 2, 0.005, never expire) and C (``cafe``, CAFE: scale 0, 0.02,
points last 7 days). The hub's fee is 1 %.

1. A awards Alice 500 TEA for a 500-yuan purchase (rule: 1 point per yuan).
2. Alice (token minted by A) converts 300 TEA into BOOK on a quote.
3. Alice links herself at C with a link code and pays at C with all her BOOK + cash.
4. A refunds the original purchase: the 500 TEA come back although 300 were converted:
   Alice owes 300 TEA (points debt); a later purchase repays the debt first.
5. C grants Alice 50 CAFE; they expire unused.

After every step the balances and every merchant's settlement position are compared with
the figures worked out by hand below.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from exchange.config import Settings
from exchange.services import clock, expiry
from exchange.services.tx import Pool
from tests.api.mutation_kit import EARN_PURCHASE, REDEEM, Hub, Shop, make_hub

pytestmark = pytest.mark.anyio

QUOTE = """
mutation($input: QuoteConversionInput!) {
  quoteConversion(input: $input) {
    quote { id fromPoints toPoints value toValue fee feeBp }
    userErrors { code field message }
  }
}"""

EXECUTE = """
mutation($input: ExecuteConversionInput!) {
  executeConversion(input: $input) { entry { id kind } replayed userErrors { code message } }
}"""

LINK_CODE = "mutation { createLinkCode { linkCode userErrors { code } } }"

REVERSE = """
mutation($input: ReverseEntryInput!) {
  reverseEntry(input: $input) { entry { id kind points } userErrors { code message } }
}"""

SET_FEE = """
mutation($input: SetConversionFeeInput!) {
  setConversionFee(input: $input) { basisPoints userErrors { code } }
}"""

D = Decimal


@pytest.fixture
async def hub(client: httpx.AsyncClient, pool: Pool, settings: Settings) -> Hub:
    return await make_hub(client, pool, settings)


async def books(hub: Hub, shops: dict[str, Shop], alice: str) -> dict[str, object]:
    """Everything the test checks, in display units."""
    return {
        "TEA": await hub.wallet(alice, "TEA"),
        "BOOK": await hub.wallet(alice, "BOOK"),
        "CAFE": await hub.wallet(alice, "CAFE"),
        "A": await hub.position(shops["A"]),
        "B": await hub.position(shops["B"]),
        "C": await hub.position(shops["C"]),
        "fees": await hub.hub_account("hub_fees"),
    }


async def test_the_journey(hub: Hub) -> None:
    # -- onboarding ----------------------------------------------------------------------------
    shops = {
        "A": await hub.onboard("tea-house"),
        "B": await hub.onboard("book-shop"),
        "C": await hub.onboard("cafe"),
    }
    a, b, c = shops["A"], shops["B"], shops["C"]
    await hub.register(a, "TEA", "0.01", expiry={"kind": "DAYS", "period": 30})
    await hub.register(b, "BOOK", "0.005", scale=2)
    await hub.register(c, "CAFE", "0.02", expiry={"kind": "DAYS", "period": 7})
    await hub.data(SET_FEE, {"input": {"basisPoints": 100}}, hub.admin)
    await hub.rule(a, "TEA", "1 point per yuan", spend={"pointsPerUnit": "1", "unitAmount": "1"})
    alice = await hub.link(a, "alice")

    # -- 1. A awards 500 TEA for a purchase ---------------------------------------------------
    bought = (
        await hub.data(
            EARN_PURCHASE,
            {
                "input": {
                    "customerRef": "alice",
                    "currency": "TEA",
                    "amountSpent": "500.00",
                    "orderRef": "A-1001",
                    "idempotencyKey": "a-order-1001",
                }
            },
            a.headers,
        )
    )["earnForPurchase"]
    assert bought["points"] == "500"
    purchase_entry = bought["entry"]["id"]
    # The issuer awards its own points: no settlement flow.
    expected = {"TEA": 500, "BOOK": 0, "CAFE": 0, "A": D(0), "B": D(0), "C": D(0), "fees": D(0)}
    assert await books(hub, shops, alice) == expected
    assert await hub.outstanding("TEA") == -500

    # -- 2. Alice converts 300 TEA into BOOK --------------------------------------------------
    member = await hub.member_headers(a, "alice")
    quote = (
        await hub.data(
            QUOTE,
            {"input": {"fromCurrency": "TEA", "toCurrency": "BOOK", "points": "300"}},
            member,
        )
    )["quoteConversion"]["quote"]
    # v = 300 × 0.01 = 3.00; after 1 %: 2.97; ÷ 0.005 = 594 BOOK; v' = 2.97; fee 0.03.
    assert quote["toPoints"] == "594.00"
    assert (quote["value"], quote["toValue"], quote["fee"]) == ("3.000000", "2.970000", "0.030000")
    done = (
        await hub.data(
            EXECUTE, {"input": {"quoteId": quote["id"], "idempotencyKey": "conv-1"}}, member
        )
    )["executeConversion"]
    assert done["entry"]["kind"] == "CONVERT"
    # A owes the hub the 3.00 its points were worth; B is owed 2.97 for the BOOK it now owes.
    expected |= {"TEA": 200, "BOOK": 59400, "A": D("-3"), "B": D("2.97"), "fees": D("0.03")}
    assert await books(hub, shops, alice) == expected

    # -- 3. Alice links herself at C and pays with BOOK + cash --------------------------------
    code = (await hub.data(LINK_CODE, headers=member))["createLinkCode"]["linkCode"]
    assert await hub.link(c, "cafe-77", code) == alice
    paid = (
        await hub.data(
            REDEEM,
            {
                "input": {
                    "customerRef": "cafe-77",
                    "currency": "BOOK",
                    "points": "594",
                    "orderTotal": "5.00",
                    "idempotencyKey": "cafe-bill-1",
                }
            },
            c.headers,
        )
    )["redeemPoints"]
    # 594 BOOK × 0.005 = 2.97 of a 5.00 bill: 2.03 left in cash. B reimburses C 2.97.
    assert (paid["pointsUsed"], paid["value"], paid["cashDue"]) == (
        "594.00",
        "2.970000",
        "2.030000",
    )
    expected |= {"BOOK": 0, "B": D(0), "C": D("2.97")}
    assert await books(hub, shops, alice) == expected

    # -- 4. A refunds the original purchase after the points were converted -------------------
    refund = (
        await hub.data(
            REVERSE,
            {
                "input": {
                    "entryId": purchase_entry,
                    "reason": "order A-1001 returned",
                    "idempotencyKey": "a-refund-1001",
                }
            },
            a.headers,
        )
    )["reverseEntry"]
    assert refund["entry"]["points"] == "-500"
    # 200 TEA are taken back and 300 remain owed: the wallet shows the points debt.
    expected |= {"TEA": -300}
    assert await books(hub, shops, alice) == expected
    assert await hub.outstanding("TEA") == 300
    # A later purchase of 100 yuan repays 100 of the debt first.
    await hub.data(
        EARN_PURCHASE,
        {
            "input": {
                "customerRef": "alice",
                "currency": "TEA",
                "amountSpent": "100",
                "idempotencyKey": "a-order-1002",
            }
        },
        a.headers,
    )
    expected |= {"TEA": -200}
    assert await books(hub, shops, alice) == expected

    # -- 5. C grants 50 CAFE; a week later they expire ----------------------------------------
    grant = await hub.award(c, "cafe-77", "CAFE", "50")
    assert grant["entry"]["kind"] == "EARN"
    expected |= {"CAFE": 50}
    assert await books(hub, shops, alice) == expected
    swept = await expiry.sweep(hub.pool, now=clock.now() + timedelta(days=8))
    assert (swept.lots_expired, swept.points_expired) == (1, 50)
    # Breakage: the points are gone and C's liability with them, with no settlement flow.
    expected |= {"CAFE": 0}
    assert await books(hub, shops, alice) == expected
    assert await hub.outstanding("CAFE") == 0

    # -- the books balance ----------------------------------------------------------------------
    positions = [await hub.position(shop) for shop in shops.values()]
    assert sum(positions, await hub.hub_account("hub_fees")) == 0
    assert await hub.hub_account("hub_clearing") == 0
    await hub.check_invariants()
    kinds = await hub.scalar("SELECT array_agg(kind ORDER BY id) FROM entries")
    assert kinds == ["earn", "convert", "redeem", "reverse", "earn", "earn", "expire"]
    # Retrying any step changes nothing.
    again = await hub.data(
        REDEEM,
        {
            "input": {
                "customerRef": "cafe-77",
                "currency": "BOOK",
                "points": "594",
                "orderTotal": "5.00",
                "idempotencyKey": "cafe-bill-1",
            }
        },
        c.headers,
    )
    assert again["redeemPoints"]["replayed"] is True
    assert await books(hub, shops, alice) == expected
    del b
