"""Programme measures against a scenario computed by hand, and the trial balance."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from exchange.finance.metrics import CurrencyMetrics, programme_metrics, trial_balance
from exchange.services import clock, expiry, reversal
from tests.finance.support import Finance

pytestmark = pytest.mark.anyio


async def _metrics(
    fin: Finance,
    start: datetime,
    end: datetime,
    currency: str,
    merchant_id: int | None = None,
) -> CurrencyMetrics:
    async with fin.pool.connection() as conn:
        found = await programme_metrics(
            conn, start=start, end=end, currency=currency, merchant_id=merchant_id
        )
    assert len(found) == 1
    return found[0]


async def test_measures_match_the_hand_computed_scenario(
    fin: Finance, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = clock.now()
    # Members P0, P1, P2 are customers of every shop.
    earn0 = await fin.earn("a", "APT", 1000, member=0)  # issued 1000 at the issuer
    await fin.earn("a", "APT", 500, member=1)  # issued 500
    await fin.earn("c", "APT", 200, member=2)  # issued 200 by a partner (C buys them)
    await fin.redeem("a", "APT", 300, member=0)  # redeemed at the issuer
    await fin.redeem("b", "APT", 100, member=1)  # redeemed elsewhere
    await fin.convert("APT", "CPT", 200, member=0)  # converted out: 200 APT -> 99 CPT
    await reversal.reverse(
        fin.pool, fin.hub.merchants["a"], entry_id=earn0, points=50, idempotency_key="rev-1"
    )  # 50 of P0's earn taken back
    middle = clock.now()

    # By hand, [start, middle): issued 1700; redeemed 300 at A + 100 elsewhere = 400;
    # converted out 200; reversed 50. Outstanding 1700 - 400 - 200 - 50 = 1050 APT,
    # worth 1050 x 0.01 = 10.50. Rates: redemption 400/1700 = 0.235294; breakage 0;
    # active use: P0 and P1 redeemed, P0-P2 held points: 2/3 = 0.666667.
    apt = await _metrics(fin, start, middle, currency="APT")
    f = apt.flows
    assert (f.issued, f.redeemed_at_issuer, f.redeemed_elsewhere) == (1700, 300, 100)
    assert (f.converted_in, f.converted_out, f.expired, f.reversed_issued) == (0, 200, 0, 50)
    assert (apt.outstanding, apt.liability_micro) == (1050, 10_500_000)
    assert apt.redemption_rate == Decimal("0.235294")
    assert apt.breakage_rate == Decimal("0.000000")
    assert (apt.members_redeemed, apt.members_holding) == (2, 3)
    assert apt.active_use_rate == Decimal("0.666667")
    cpt = await _metrics(fin, start, middle, currency="CPT")
    assert (cpt.flows.converted_in, cpt.outstanding, cpt.liability_micro) == (99, 99, 1_980_000)

    # A year later every APT lot left expires: P0 450, P1 400, P2 200 = 1050 (breakage).
    later = start + timedelta(days=366)
    monkeypatch.setattr(clock, "now", lambda: later)
    swept = await expiry.sweep(fin.pool, now=later)
    assert swept.points_expired == 1050
    end = later + timedelta(seconds=1)
    whole = await _metrics(fin, start, end, currency="APT")
    assert whole.flows.expired == 1050
    assert whole.flows.net_change == whole.outstanding == 0
    assert whole.breakage_rate == Decimal("0.617647")  # 1050 / 1700

    # Per merchant: A's own entries, plus conversions and expiries of its currency.
    a = await _metrics(fin, start, end, currency="APT", merchant_id=fin.hub.merchant_ids["a"])
    assert (a.flows.issued, a.flows.redeemed_at_issuer) == (1500, 300)
    assert a.flows.redeemed_elsewhere == 0
    assert (a.flows.converted_out, a.flows.reversed_issued, a.flows.expired) == (200, 50, 1050)
    assert (a.members_redeemed, a.outstanding) == (1, 0)
    b = await _metrics(fin, start, end, currency="APT", merchant_id=fin.hub.merchant_ids["b"])
    assert (b.flows.issued, b.flows.redeemed_elsewhere, b.members_redeemed) == (0, 100, 1)
    assert (b.outstanding, b.liability_micro) == (None, None)  # not B's liability
    c = await _metrics(fin, start, end, currency="APT", merchant_id=fin.hub.merchant_ids["c"])
    assert (c.flows.issued, c.flows.redeemed, c.redemption_rate) == (200, 0, Decimal(0))
    assert fin.violations() == []


async def test_the_trial_balance_balances_every_asset(fin: Finance) -> None:
    await fin.earn("a", "APT", 1000)
    await fin.earn("c", "APT", 500)
    await fin.convert("APT", "BPT", 1200)
    async with fin.pool.connection() as conn:
        assets = {a.asset: a for a in await trial_balance(conn)}
    assert list(assets) == ["CNY", "APT", "BPT", "CPT"]
    assert all(a.balanced for a in assets.values())
    apt = assets["APT"]
    assert (apt.of("wallet"), apt.of("outstanding")) == (300, -300)
    cny = assets["CNY"]
    assert {c.account_class: c.total for c in cny.classes} == {
        "hub_clearing": 0,
        "hub_fees": 120_000,
        "settlement": -120_000,
    }
    assert assets["BPT"].of("wallet") == 237_600
