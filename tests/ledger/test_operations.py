"""The spec's operations posted and compared line by line with hand-computed postings.

Rates: APT (shop A, scale 0) 0.01; BPT (shop B, scale 2) 0.005 per whole point, so one
smallest unit is worth 50 micro-units; CPT (shop C, scale 0) 0.02. Settlement in CNY
micro-units (1 CNY = 1_000_000).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from exchange.domain.errors import Refusal
from exchange.services import clock, conversion, expiry, points, reversal, settlement
from exchange.services.actors import FINANCE, Actor
from tests.ledger.support import Hub, totals

pytestmark = pytest.mark.anyio

CNY = 1_000_000


async def postings(hub: Hub, entry_id: int) -> set[tuple[str, str, str, int]]:
    """``(account kind, owner, asset, amount)`` of an entry's postings."""
    names = {v: k for k, v in hub.merchant_ids.items()}
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT a.kind, a.member_id, a.merchant_id, c.code, p.amount FROM postings p"
            "  JOIN accounts a ON a.id = p.account_id JOIN currencies c ON c.id = p.asset_id"
            " WHERE p.entry_id = %s",
            (entry_id,),
        )
        rows = await cur.fetchall()
    out = set()
    for kind, member, merchant, code, amount in rows:
        owner = f"m{hub.member_ids.index(member)}" if member else names.get(merchant, "hub")
        out.add((kind, owner, code, int(amount)))
    return out


async def earn(hub: Hub, shop: str, code: str, n: int, key: str, member: int = 0) -> int:
    out = await points.earn(
        hub.pool,
        hub.merchants[shop],
        member_id=hub.member_ids[member],
        currency_code=code,
        points=n,
        idempotency_key=key,
    )
    return out.entry_id


async def redeem(hub: Hub, shop: str, code: str, n: int, key: str, **kw: Any) -> int:
    out = await points.redeem(
        hub.pool,
        hub.merchants[shop],
        member_id=hub.member_ids[0],
        currency_code=code,
        points=n,
        idempotency_key=key,
        **kw,
    )
    return out.entry_id


async def test_earn_at_the_issuer_moves_points_only(hub: Hub) -> None:
    e = await earn(hub, "a", "APT", 1000, "e1")
    assert await postings(hub, e) == {
        ("outstanding", "a", "APT", -1000),
        ("wallet", "m0", "APT", 1000),
    }
    assert hub.verify() == []


async def test_partner_earn_makes_the_awarding_merchant_pay_the_issuer(hub: Hub) -> None:
    e = await earn(hub, "c", "APT", 500, "e1")
    assert await postings(hub, e) == {
        ("outstanding", "a", "APT", -500),
        ("wallet", "m0", "APT", 500),
        ("settlement", "c", "CNY", -5 * CNY),
        ("settlement", "a", "CNY", 5 * CNY),
    }
    assert await hub.position("c") == -5 * CNY
    assert await hub.position("a") == 5 * CNY


async def test_redeem_elsewhere_makes_the_issuer_reimburse(hub: Hub) -> None:
    await earn(hub, "a", "APT", 1000, "e1")
    r = await redeem(hub, "b", "APT", 300, "r1")
    assert await postings(hub, r) == {
        ("wallet", "m0", "APT", -300),
        ("outstanding", "a", "APT", 300),
        ("settlement", "a", "CNY", -3 * CNY),
        ("settlement", "b", "CNY", 3 * CNY),
    }
    assert await hub.wallet(hub.member_ids[0], "APT") == 700


async def test_convert_posts_both_currencies_and_the_fee(hub: Hub) -> None:
    await earn(hub, "a", "APT", 1500, "e1")
    quote = await conversion.create_quote(
        hub.pool,
        hub.member(0),
        from_code="APT",
        to_code="BPT",
        points=1200,
        ttl_s=30,
        default_fee_bp=100,
    )
    # v = 12.00; budget = 11.88; one BPT unit is worth 50 micro: m = 237_600 units.
    assert (quote.value_micro, quote.to_amount) == (12 * CNY, 237_600)
    assert (quote.to_value_micro, quote.fee_micro) == (11_880_000, 120_000)
    out = await conversion.execute_quote(
        hub.pool, hub.member(0), quote_id=quote.id, idempotency_key="c1"
    )
    assert await postings(hub, out.entry_id) == {
        ("wallet", "m0", "APT", -1200),
        ("outstanding", "a", "APT", 1200),
        ("outstanding", "b", "BPT", -237_600),
        ("wallet", "m0", "BPT", 237_600),
        ("settlement", "a", "CNY", -12 * CNY),
        ("settlement", "b", "CNY", 11_880_000),
        ("hub_fees", "hub", "CNY", 120_000),
    }
    assert hub.verify() == []


async def test_expiry_releases_the_issuers_liability(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    await earn(hub, "a", "APT", 800, "e1")
    await redeem(hub, "a", "APT", 300, "r1")
    later = clock.now() + timedelta(days=366)
    monkeypatch.setattr(clock, "now", lambda: later)
    result = await expiry.sweep(hub.pool)
    assert (result.lots_expired, result.points_expired) == (1, 500)
    again = await expiry.sweep(hub.pool)
    assert again.lots_expired == 0
    b = await hub.balances()
    assert b[("wallet", "APT", hub.member_ids[0])] == 0
    assert b[("outstanding", "APT", hub.merchant_ids["a"])] == 0
    assert await hub.count("entries WHERE kind = 'expire'") == 1
    assert hub.verify() == []


async def test_a_sweep_expires_at_most_its_limit_of_lots(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three overdue lots in one wallet and one in another: two runs of two expire them all."""
    for i in range(3):
        await earn(hub, "a", "APT", 10 + i, f"e{i}")
    await earn(hub, "a", "APT", 20, "f0", member=1)
    later = clock.now() + timedelta(days=366)
    monkeypatch.setattr(clock, "now", lambda: later)
    runs = [await expiry.sweep(hub.pool, limit=2) for _ in range(3)]
    assert [r.lots_expired for r in runs] == [2, 2, 0]
    assert sum(r.points_expired for r in runs) == 10 + 11 + 12 + 20
    assert await hub.count("entries WHERE kind = 'expire'") == 4
    assert await hub.count("lots WHERE remaining > 0") == 0
    assert hub.verify() == []


async def test_partial_reversals_add_up_to_the_original_and_no_more(hub: Hub) -> None:
    e = await earn(hub, "c", "APT", 1000, "e1")
    first = await reversal.reverse(
        hub.pool, hub.merchants["c"], entry_id=e, points=400, idempotency_key="v1"
    )
    assert await postings(hub, first.entry_id) == {
        ("outstanding", "a", "APT", 400),
        ("wallet", "m0", "APT", -400),
        ("settlement", "c", "CNY", 4 * CNY),
        ("settlement", "a", "CNY", -4 * CNY),
    }
    await reversal.reverse(
        hub.pool, hub.merchants["c"], entry_id=e, points=None, idempotency_key="v2"
    )
    with pytest.raises(Refusal) as exc:
        await reversal.reverse(
            hub.pool, hub.merchants["c"], entry_id=e, points=1, idempotency_key="v3"
        )
    assert exc.value.code == "REVERSAL_EXCEEDS_ORIGINAL"
    assert await hub.position("c") == 0
    assert await hub.wallet(hub.member_ids[0], "APT") == 0
    assert hub.verify() == []


async def _reverse_counting(
    hub: Hub, monkeypatch: pytest.MonkeyPatch, entry_id: int, key: str
) -> int:
    """Reverse ``entry_id`` whole; the SQL statements the reversal sent."""
    sent: list[str] = []
    original = psycopg.AsyncCursor.execute

    async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return await original(self, query, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(psycopg.AsyncCursor, "execute", execute)
        await reversal.reverse(
            hub.pool, hub.merchants["a"], entry_id=entry_id, points=None, idempotency_key=key
        )
    return len(sent)


async def test_a_reversal_sends_as_many_statements_however_many_lots_the_wallet_holds(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many open lots the wallet holds, a reversal looks its own lots up once."""
    few = [await earn(hub, "a", "APT", 10 + i, f"few-{i}", member=1) for i in range(3)]
    many = [await earn(hub, "a", "APT", 10 + i, f"many-{i}", member=2) for i in range(40)]
    with_few = await _reverse_counting(hub, monkeypatch, few[1], "rv-few")
    with_many = await _reverse_counting(hub, monkeypatch, many[20], "rv-many")
    assert with_many == with_few
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT entry_id, remaining FROM lots WHERE entry_id = ANY(%s)", (few + many,)
        )
        remaining = {int(e): int(r) for e, r in await cur.fetchall()}
    # The reversed earns' own lots are emptied; every other lot is untouched.
    assert remaining == {
        e: 0 if e in (few[1], many[20]) else 10 + i
        for group in (few, many)
        for i, e in enumerate(group)
    }
    assert hub.verify() == []


async def test_refund_after_conversion_leaves_a_debt_that_earns_repay_first(hub: Hub) -> None:
    m0 = hub.member_ids[0]
    e = await earn(hub, "a", "APT", 1000, "e1")
    quote = await conversion.create_quote(
        hub.pool,
        hub.member(0),
        from_code="APT",
        to_code="CPT",
        points=1000,
        ttl_s=30,
        default_fee_bp=0,
    )
    await conversion.execute_quote(hub.pool, hub.member(0), quote_id=quote.id, idempotency_key="c")
    assert await hub.wallet(m0, "CPT") == 500  # 10.00 worth at 0.02
    await reversal.reverse(
        hub.pool, hub.merchants["a"], entry_id=e, points=None, idempotency_key="r"
    )
    assert await hub.wallet(m0, "APT") == -1000
    with pytest.raises(Refusal) as exc:
        await redeem(hub, "a", "APT", 1, "spend")
    assert exc.value.code == "INSUFFICIENT_POINTS"
    await earn(hub, "a", "APT", 300, "e2")
    assert await hub.wallet(m0, "APT") == -700
    await earn(hub, "a", "APT", 800, "e3")
    assert await hub.wallet(m0, "APT") == 100
    assert [remaining for _, remaining, _ in await hub.lots(m0, "APT")] == [0, 0, 100]
    assert hub.verify() == []


async def test_reversing_a_redemption_returns_points_to_their_lots(hub: Hub) -> None:
    m0 = hub.member_ids[0]
    await earn(hub, "a", "APT", 100, "e1")
    before = await hub.lots(m0, "APT")
    r = await redeem(hub, "b", "APT", 60, "r1")
    assert [rem for _, rem, _ in await hub.lots(m0, "APT")] == [40]
    back = await reversal.reverse(
        hub.pool, hub.merchants["b"], entry_id=r, points=None, idempotency_key="v1"
    )
    assert await postings(hub, back.entry_id) == {
        ("wallet", "m0", "APT", 60),
        ("outstanding", "a", "APT", -60),
        ("settlement", "a", "CNY", 600_000),
        ("settlement", "b", "CNY", -600_000),
    }
    assert await hub.lots(m0, "APT") == before
    assert hub.verify() == []


async def test_only_the_initiator_or_the_hub_reverses(hub: Hub) -> None:
    e = await earn(hub, "a", "APT", 100, "e1")
    with pytest.raises(Refusal) as exc:
        await reversal.reverse(
            hub.pool, hub.merchants["b"], entry_id=e, points=None, idempotency_key="v1"
        )
    assert exc.value.code == "NOT_FOUND"
    with pytest.raises(Refusal) as missing:
        await reversal.reverse(
            hub.pool, hub.merchants["b"], entry_id=99_999, points=None, idempotency_key="v2"
        )
    assert missing.value.code == "NOT_FOUND"
    assert missing.value.message == exc.value.message
    await reversal.reverse(hub.pool, hub.admin, entry_id=e, points=None, idempotency_key="v3")
    assert await hub.wallet(hub.member_ids[0], "APT") == 0


async def test_adjustments_by_issuer_and_by_hub(hub: Hub) -> None:
    m0 = hub.member_ids[0]
    own = await points.adjust(
        hub.pool,
        hub.merchants["a"],
        member_id=m0,
        currency_code="APT",
        points=50,
        reason="goodwill",
        idempotency_key="a1",
    )
    assert await postings(hub, own.entry_id) == {
        ("outstanding", "a", "APT", -50),
        ("wallet", "m0", "APT", 50),
    }
    by_hub = await points.adjust(
        hub.pool,
        hub.admin,
        member_id=m0,
        currency_code="APT",
        points=50,
        reason="service recovery",
        idempotency_key="a2",
    )
    assert await postings(hub, by_hub.entry_id) == {
        ("outstanding", "a", "APT", -50),
        ("wallet", "m0", "APT", 50),
        ("hub_fees", "hub", "CNY", -500_000),
        ("settlement", "a", "CNY", 500_000),
    }
    with pytest.raises(Refusal) as exc:
        await points.adjust(
            hub.pool,
            hub.merchants["b"],
            member_id=m0,
            currency_code="APT",
            points=5,
            reason="not mine",
            idempotency_key="a3",
        )
    assert exc.value.code == "FORBIDDEN"
    with pytest.raises(Refusal) as too_much:
        await points.adjust(
            hub.pool,
            hub.merchants["a"],
            member_id=m0,
            currency_code="APT",
            points=-101,
            reason="correction",
            idempotency_key="a4",
        )
    assert too_much.value.code == "INSUFFICIENT_POINTS"
    await points.adjust(
        hub.pool,
        hub.merchants["a"],
        member_id=m0,
        currency_code="APT",
        points=-100,
        reason="correction",
        idempotency_key="a5",
    )
    assert await hub.wallet(m0, "APT") == 0
    assert hub.verify() == []


async def test_settle_moves_a_position_against_clearing(hub: Hub) -> None:
    await earn(hub, "c", "APT", 250, "e1")  # C owes A 2.50
    fin = Actor(FINANCE)
    await settlement.settle(
        hub.pool,
        fin,
        merchant_id=hub.merchant_ids["a"],
        direction="paid_to_merchant",
        amount_micro=2_500_000,
        external_ref="WIRE-1",
        idempotency_key="s1",
    )
    await settlement.settle(
        hub.pool,
        fin,
        merchant_id=hub.merchant_ids["c"],
        direction="paid_by_merchant",
        amount_micro=2_500_000,
        external_ref="WIRE-2",
        idempotency_key="s2",
    )
    b = await hub.balances()
    assert await hub.position("a") == 0
    assert await hub.position("c") == 0
    assert b[("hub_clearing", "CNY", None)] == 0
    with pytest.raises(Refusal):
        await settlement.settle(
            hub.pool,
            hub.merchants["a"],
            merchant_id=hub.merchant_ids["a"],
            direction="paid_to_merchant",
            amount_micro=1,
            external_ref="x",
            idempotency_key="s3",
        )


async def test_points_plus_cash_takes_only_what_the_order_needs(hub: Hub) -> None:
    await earn(hub, "a", "APT", 2000, "e1")
    r = await points.redeem(
        hub.pool,
        hub.merchants["a"],
        member_id=hub.member_ids[0],
        currency_code="APT",
        points=300,
        order_total_micro=10 * CNY,
        idempotency_key="r1",
    )
    r2 = await points.redeem(
        hub.pool,
        hub.merchants["a"],
        member_id=hub.member_ids[0],
        currency_code="APT",
        points=1700,
        order_total_micro=5 * CNY,
        idempotency_key="r2",
    )
    async with hub.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT details->>'points', details->>'cashDue' FROM entries WHERE id = ANY(%s)"
            " ORDER BY id",
            ([r.entry_id, r2.entry_id],),
        )
        assert await cur.fetchall() == [("300", "7.000000"), ("500", "0.000000")]
    assert await hub.wallet(hub.member_ids[0], "APT") == 1200


async def test_idempotency_replays_refuses_reuse_and_keeps_refusals(hub: Hub) -> None:
    first = await earn(hub, "a", "APT", 100, "k1")
    replay = await points.earn(
        hub.pool,
        hub.merchants["a"],
        member_id=hub.member_ids[0],
        currency_code="APT",
        points=100,
        idempotency_key="k1",
    )
    assert replay.entry_id == first
    assert replay.replayed
    with pytest.raises(Refusal) as reused:
        await earn(hub, "a", "APT", 101, "k1")
    assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
    # Another merchant's key space is its own.
    other = await earn(hub, "b", "BPT", 100, "k1")
    assert other != first
    with pytest.raises(Refusal) as poor:
        await redeem(hub, "a", "APT", 500, "spend-1")
    assert poor.value.code == "INSUFFICIENT_POINTS"
    await earn(hub, "a", "APT", 1000, "k2")
    entries = await hub.count("entries")
    with pytest.raises(Refusal) as still:
        await redeem(hub, "a", "APT", 500, "spend-1")
    assert still.value.code == "INSUFFICIENT_POINTS"
    assert await hub.count("entries") == entries
    assert hub.verify() == []


async def test_quotes_expire_and_execute_once(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    await earn(hub, "a", "APT", 1000, "e1")
    member = hub.member(0)
    q = await conversion.create_quote(
        hub.pool,
        member,
        from_code="APT",
        to_code="BPT",
        points=100,
        ttl_s=30,
        default_fee_bp=100,
    )
    done = await conversion.execute_quote(hub.pool, member, quote_id=q.id, idempotency_key="x1")
    again = await conversion.execute_quote(hub.pool, member, quote_id=q.id, idempotency_key="x1")
    assert again.entry_id == done.entry_id
    assert again.replayed
    with pytest.raises(Refusal) as used:
        await conversion.execute_quote(hub.pool, member, quote_id=q.id, idempotency_key="x2")
    assert used.value.code == "QUOTE_ALREADY_EXECUTED"
    late = await conversion.create_quote(
        hub.pool,
        member,
        from_code="APT",
        to_code="BPT",
        points=100,
        ttl_s=30,
        default_fee_bp=100,
    )
    later = clock.now() + timedelta(seconds=31)
    monkeypatch.setattr(clock, "now", lambda: later)
    with pytest.raises(Refusal) as expired:
        await conversion.execute_quote(hub.pool, member, quote_id=late.id, idempotency_key="x3")
    assert expired.value.code == "QUOTE_EXPIRED"
    with pytest.raises(Refusal) as foreign:
        await conversion.execute_quote(
            hub.pool, hub.member(1), quote_id=late.id, idempotency_key="x4"
        )
    assert foreign.value.code == "NOT_FOUND"


async def test_exposure_limit_refuses_earns_beyond_it(hub: Hub) -> None:
    async with hub.pool.connection() as conn:
        await conn.execute(
            "UPDATE merchants SET exposure_limit_micro = %s WHERE id = %s",
            (10 * CNY, hub.merchant_ids["a"]),
        )
    await earn(hub, "a", "APT", 1000, "e1")  # exactly 10.00 of liability
    with pytest.raises(Refusal) as exc:
        await earn(hub, "a", "APT", 1, "e2")
    assert exc.value.code == "EXPOSURE_LIMIT"
    await redeem(hub, "a", "APT", 500, "r1")
    await earn(hub, "a", "APT", 500, "e3")


async def test_unknown_and_invalid_input_changes_nothing(hub: Hub) -> None:
    before = await hub.balances()
    for code, n in (("NOPE", 10), ("APT", 0), ("APT", -5), ("APT", 10**16)):
        with pytest.raises(Refusal) as exc:
            await earn(hub, "a", code, n, f"bad-{code}-{n}")
        assert exc.value.code in ("UNKNOWN_CURRENCY", "INVALID_AMOUNT")
    for key in ("", "x" * 129, "sp ace", "tab\t", "ünï"):
        with pytest.raises(Refusal) as exc:
            await earn(hub, "a", "APT", 1, key)
        assert exc.value.code == "INVALID_IDEMPOTENCY_KEY"
    assert await hub.balances() == before
    assert totals(before) == dict.fromkeys(totals(before), 0)
