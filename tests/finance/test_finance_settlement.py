"""The settlement cycle on the worked example of docs/finance.md: netting, instructions with
carries, statements tied to the ledger, the CSV export, payment confirmations."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from decimal import Decimal

import pytest

from exchange.domain.errors import Refusal
from exchange.finance import payments
from exchange.finance.lines import LINE_FIELDS, line_bytes
from exchange.finance.reports import BatchReport
from exchange.finance.statements import csv_records, csv_text, load_statement
from exchange.services.settlement import PAID_BY_MERCHANT, settle
from tests.finance.support import FINANCE_ACTOR, Finance, micro, worked_example_batch1

pytestmark = pytest.mark.anyio


def _positions(report: BatchReport) -> dict[str, tuple[int, int, int]]:
    return {
        p.party: (p.position_micro, p.carried_in_micro, p.carry_out_micro) for p in report.positions
    }


def _instructions(report: BatchReport) -> dict[str, int]:
    return {i.merchant: i.signed_micro for i in report.instructions}


async def _confirm(fin: Finance, batch: int, shop: str, amount: str, ref: str, key: str) -> int:
    done = await payments.confirm_payment(
        fin.pool,
        FINANCE_ACTOR,
        batch_id=batch,
        merchant_code=fin.code(shop),
        amount_micro=micro(amount),
        external_ref=ref,
        idempotency_key=key,
    )
    return done.entry_id


async def test_the_worked_example_nets_rounds_and_carries(fin: Finance) -> None:
    s = await worked_example_batch1(fin)
    batch = await fin.close()
    report = await fin.report(batch)

    # The issuer's own earn has no settlement leg: it is in no batch.
    assert s.entries["a earns P 1000 APT"] not in await fin.batch_entries(batch)
    assert report.batch.entry_count == 5
    assert {(o.debtor, o.creditor): o.amount_micro for o in report.obligations} == {
        ("shop-a", "hub:fees"): micro("0.12"),
        ("shop-a", "shop-b"): micro("3") + micro("11.88"),
        ("shop-b", "shop-c"): micro("20"),
        ("shop-c", "shop-a"): micro("5"),
        ("shop-c", "shop-b"): micro("0.61725"),
    }
    # Positions: A +5 -3 -12; B +3 -20 +11.88 +0.61725; C -5 +20 -0.61725; fees +0.12.
    assert _positions(report) == {
        "hub:fees": (micro("0.12"), 0, 0),
        "shop-a": (micro("-10"), 0, 0),
        "shop-b": (micro("-4.50275"), 0, micro("-0.00275")),
        "shop-c": (micro("14.38275"), 0, micro("0.00275")),
    }
    assert sum(p.position_micro for p in report.positions) == 0
    # One payment per merchant, rounded toward zero; the remainders are carried.
    assert _instructions(report) == {
        "shop-a": micro("-10"),
        "shop-b": micro("-4.50"),
        "shop-c": micro("14.38"),
    }
    # gross 40.61725, net 14.50275: 1 - 14.50275 / 40.61725 = 0.642941 (half-even).
    assert report.batch.gross_micro == micro("40.61725")
    assert report.batch.net_micro == micro("14.50275")
    assert report.batch.efficiency == Decimal("0.642941")
    assert report.batch.hub_fees_micro == micro("0.12")
    assert report.batch.hub_rounding_micro == 0
    assert not report.batch.settled
    assert fin.violations() == []


async def test_statements_tie_to_the_ledger_across_payments(fin: Finance) -> None:
    await worked_example_batch1(fin)
    batch1 = await fin.close()
    paid = (("a", "10", "WIRE-A1"), ("b", "4.50", "WIRE-B1"), ("c", "14.38", "WIRE-C1"))
    for shop, amount, ref in paid:
        await _confirm(fin, batch1, shop, amount, ref, f"pay-{shop}")
    assert (await fin.report(batch1)).batch.settled
    await fin.redeem("a", "CPT", 100)  # C owes A 2.00
    batch2 = await fin.close()
    report = await fin.report(batch2)

    # Payments belong to batch 2 but are not netted again.
    assert report.batch.entry_count == 4
    assert _positions(report) == {
        "shop-a": (micro("2"), 0, 0),
        "shop-b": (0, micro("-0.00275"), micro("-0.00275")),
        "shop-c": (micro("-2"), micro("0.00275"), micro("-0.00725")),
    }
    assert _instructions(report) == {"shop-a": micro("2"), "shop-c": micro("-1.99")}

    statements = {s.merchant: s for s in report.statements}
    # B: opening -4.50275, paid the hub 4.50 -> closing -0.00275 (its carry).
    b = statements["shop-b"]
    assert (b.opening_micro, b.payments_micro, b.netted_micro, b.closing_micro) == (
        micro("-4.50275"),
        micro("4.50"),
        0,
        micro("-0.00275"),
    )
    # C: opening 14.38275, paid 14.38, owes A 2.00 -> closing -1.99725 = -1.99 + -0.00725.
    c = statements["shop-c"]
    assert (c.opening_micro, c.payments_micro, c.netted_micro, c.closing_micro) == (
        micro("14.38275"),
        micro("-14.38"),
        micro("-2"),
        micro("-1.99725"),
    )
    assert c.closing_micro == micro("-1.99") + micro("-0.00725")
    # Each closing is the merchant's settlement balance in the ledger.
    for shop in ("a", "b", "c"):
        assert statements[fin.code(shop)].closing_micro == await fin.hub.position(shop)
    assert fin.violations() == []


async def test_the_csv_statement_reads_back_to_the_same_figures(fin: Finance) -> None:
    await worked_example_batch1(fin)
    batch = await fin.close()
    report = await fin.report(batch)
    summary = next(s for s in report.statements if s.merchant == "shop-b")
    async with fin.pool.connection() as conn, conn.transaction():
        statement = await load_statement(conn, batch, summary.merchant_id)
        assert statement is not None
        text = "".join([csv_text(r) async for r in csv_records(conn, statement)])

    rows = list(csv.DictReader(io.StringIO(text)))
    by_record = {r["record"]: r for r in rows if r["record"] != "line"}
    lines = [r for r in rows if r["record"] == "line"]
    opening = Decimal(by_record["opening"]["value"])
    closing = Decimal(by_record["closing"]["value"])
    assert opening + sum(Decimal(r["value"]) for r in lines) == closing
    assert closing == Decimal("-4.502750")
    assert Decimal(by_record["instruction"]["value"]) == Decimal("-4.50")
    assert by_record["instruction"]["kind"] == "to_hub"
    assert Decimal(by_record["carried_out"]["value"]) == Decimal("-0.00275")
    # B's lines: redemption of APT (A owes B 3), buying CPT (B owes C 20), the conversion's
    # target side (A owes B 11.88 for 2376 BPT) and C buying BPT (C owes B 0.61725).
    shown = [(r["kind"], r["counterparty"], r["currency"], r["points"], r["value"]) for r in lines]
    assert shown == [
        ("redeem", "shop-a", "APT", "300", "3.000000"),
        ("earn", "shop-c", "CPT", "1000", "-20.000000"),
        ("convert", "shop-a", "BPT", "2376.00", "11.880000"),
        ("earn", "shop-c", "BPT", "123.45", "0.617250"),
    ]
    assert [r["rate"] for r in lines] == ["0.01", "0.02", "0.005", "0.005"]
    digest = hashlib.sha256()
    for r in lines:
        digest.update(line_bytes([r[f] for f in LINE_FIELDS]))
    assert digest.digest() == summary.digest
    assert len(lines) == summary.line_count


async def test_confirmations_are_idempotent_and_refuse_what_does_not_match(fin: Finance) -> None:
    await worked_example_batch1(fin)
    batch = await fin.close()

    first = await _confirm(fin, batch, "c", "14.38", "WIRE-1", "k1")
    assert await _confirm(fin, batch, "c", "14.38", "WIRE-1", "k1") == first
    assert await _confirm(fin, batch, "c", "14.38", " WIRE-1 ", "k2") == first
    assert await fin.hub.count("entries WHERE kind = 'settle'") == 1

    cases = [
        (("c", "14.38", "WIRE-2", "k3"), "ALREADY_CONFIRMED"),
        (("a", "10.01", "WIRE-3", "k4"), "AMOUNT_MISMATCH"),
        (("a", "9.99", "WIRE-3", "k5"), "AMOUNT_MISMATCH"),
    ]
    for (shop, amount, ref, key), code in cases:
        with pytest.raises(Refusal) as refused:
            await _confirm(fin, batch, shop, amount, ref, key)
        assert refused.value.code == code

    await fin.redeem("a", "CPT", 100)
    batch2 = await fin.close()
    with pytest.raises(Refusal) as foreign:  # B has no instruction in batch 2
        await _confirm(fin, batch2, "b", "4.50", "WIRE-4", "k6")
    assert foreign.value.code == "NO_INSTRUCTION"
    with pytest.raises(Refusal) as missing:
        await _confirm(fin, 99, "b", "4.50", "WIRE-4", "k7")
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(Refusal) as merchant:
        await payments.confirm_payment(
            fin.pool,
            fin.hub.merchants["b"],
            batch_id=batch,
            merchant_code="shop-b",
            amount_micro=micro("4.50"),
            external_ref="x",
            idempotency_key="k8",
        )
    assert merchant.value.code == "FORBIDDEN"
    assert await fin.hub.count("entries WHERE kind = 'settle'") == 1
    assert await fin.hub.count("settlement_payments") == 1
    assert fin.violations() == []


async def test_concurrent_confirmations_post_one_payment(fin: Finance) -> None:
    await worked_example_batch1(fin)
    batch = await fin.close()
    results = await asyncio.gather(
        *(_confirm(fin, batch, "a", "10", f"WIRE-{i % 2}", f"c{i}") for i in range(8)),
        return_exceptions=True,
    )
    entries = {r for r in results if isinstance(r, int)}
    refusals = {r.code for r in results if isinstance(r, Refusal)}
    assert len(entries) == 1
    assert refusals <= {"ALREADY_CONFIRMED"}
    assert await fin.hub.count("entries WHERE kind = 'settle'") == 1
    assert fin.violations() == []


async def test_an_interrupted_confirmation_is_recorded_by_the_next(fin: Finance) -> None:
    await worked_example_batch1(fin)
    batch = await fin.close()
    # The settle entry committed, the payment record did not (the process stopped).
    await settle(
        fin.pool,
        FINANCE_ACTOR,
        merchant_id=fin.hub.merchant_ids["a"],
        direction=PAID_BY_MERCHANT,
        amount_micro=micro("10"),
        external_ref="WIRE-A",
        idempotency_key=payments.instruction_key(batch, fin.hub.merchant_ids["a"]),
        batch_id=batch,
    )
    assert any("payment-record" in v for v in fin.violations())
    with pytest.raises(Refusal) as other:
        await _confirm(fin, batch, "a", "10", "WIRE-OTHER", "k1")
    assert other.value.code == "ALREADY_CONFIRMED"
    assert await fin.hub.count("settlement_payments") == 1
    assert await _confirm(fin, batch, "a", "10", "WIRE-A", "k2") > 0
    assert await fin.hub.count("entries WHERE kind = 'settle'") == 1
    assert fin.violations() == []
