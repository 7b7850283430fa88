"""Netting properties against the database, over random sequences of operations, closes and
payments (each example on a fresh database).

After every close: the batch's net positions sum to zero; for every merchant, instruction
+ carry out = position + carried in, and the carry is less than one minor unit; what was
carried out is carried into the next batch; and each merchant's statement closing is its
unpaid instructions plus its carry -- the ledger's settlement balance. ``exchange verify``
finds nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.domain.errors import Refusal
from exchange.finance import payments
from tests.conftest import DatabaseFactory
from tests.finance.support import FINANCE_ACTOR, Finance
from tests.ledger.support import build_hub

SHOPS = ("a", "b", "c")
CODES = ("APT", "BPT", "CPT")
MINOR = 10_000  # one fen in micro-units

OPERATION = st.one_of(
    st.tuples(
        st.just("earn"),
        st.sampled_from(SHOPS),
        st.sampled_from(CODES),
        st.integers(1, 99_999),
        st.integers(0, 2),
    ),
    st.tuples(
        st.just("redeem"),
        st.sampled_from(SHOPS),
        st.sampled_from(CODES),
        st.integers(1, 20_000),
        st.integers(0, 2),
    ),
    st.tuples(
        st.just("convert"), st.sampled_from(CODES), st.sampled_from(CODES), st.integers(1, 5_000)
    ),  # noqa: E501
    st.tuples(st.just("close")),
    st.tuples(st.just("pay"), st.integers(0, 2)),
)


async def _check_batch(fin: Finance, batch: int, previous_carry: dict[str, int]) -> dict[str, int]:
    report = await fin.report(batch)
    assert sum(p.position_micro for p in report.positions) == 0
    signed = {i.merchant: i.signed_micro for i in report.instructions}
    carry: dict[str, int] = {}
    for p in report.positions:
        assert p.carried_in_micro == previous_carry.get(p.party, 0)
        if p.party.startswith("hub:"):
            assert (p.carried_in_micro, p.carry_out_micro) == (0, 0)
            continue
        assert signed.get(p.party, 0) + p.carry_out_micro == p.position_micro + p.carried_in_micro
        assert abs(p.carry_out_micro) < MINOR
        assert signed.get(p.party, 0) % MINOR == 0
        if p.carry_out_micro:
            carry[p.party] = p.carry_out_micro
    assert set(previous_carry) <= {p.party for p in report.positions}
    async with fin.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT m.code, sum(CASE i.direction WHEN 'from_hub' THEN i.amount_micro"
            "                              ELSE -i.amount_micro END)"
            "  FROM settlement_instructions i JOIN merchants m ON m.id = i.merchant_id"
            " WHERE i.batch_id <= %(b)s AND NOT EXISTS (SELECT 1 FROM settlement_payments p"
            "   JOIN settlement_batch_entries be ON be.entry_id = p.entry_id"
            "  WHERE p.batch_id = i.batch_id AND p.merchant_id = i.merchant_id"
            "    AND be.batch_id <= %(b)s)"
            " GROUP BY m.code",
            {"b": batch},
        )
        unpaid = {str(c): int(a) for c, a in await cur.fetchall()}
    for s in report.statements:
        assert s.closing_micro == unpaid.get(s.merchant, 0) + carry.get(s.merchant, 0)
    return carry


async def _run(url: str, operations: list[tuple[Any, ...]]) -> None:
    fin = Finance(await build_hub(url, pool_size=4))
    try:
        carry: dict[str, int] = {}
        refused: set[str] = set()
        batch = 0
        for op in [*operations, ("close",)]:
            try:
                if op[0] == "earn":
                    await fin.earn(op[1], op[2], op[3], member=op[4])
                elif op[0] == "redeem":
                    await fin.redeem(op[1], op[2], op[3], member=op[4])
                elif op[0] == "convert" and op[1] != op[2]:
                    await fin.convert(op[1], op[2], op[3])
                elif op[0] == "pay" and batch:
                    report = await fin.report(batch)
                    open_ = [i for i in report.instructions if i.payment is None]
                    if open_:
                        i = open_[op[1] % len(open_)]
                        await payments.confirm_payment(
                            fin.pool,
                            FINANCE_ACTOR,
                            batch_id=batch,
                            merchant_code=i.merchant,
                            amount_micro=i.amount_micro,
                            external_ref=f"WIRE-{batch}-{i.merchant}",
                            idempotency_key=fin.key("pay"),
                        )
                elif op[0] == "close":
                    batch = await fin.close()
                    carry = await _check_batch(fin, batch, carry)
            except Refusal as refusal:
                refused.add(refusal.code)
        assert refused <= {"INSUFFICIENT_POINTS", "AMOUNT_TOO_SMALL"}
        assert fin.violations() == []
    finally:
        await fin.pool.close()


@settings(max_examples=12, deadline=None)
@given(operations=st.lists(OPERATION, min_size=1, max_size=25))
def test_batches_net_to_zero_and_instructions_reproduce_positions(
    databases: DatabaseFactory, template_database: str, operations: list[tuple[Any, ...]]
) -> None:
    name = databases.create("exchange_test", template=template_database)
    try:
        asyncio.run(_run(databases.url(name), operations))
    finally:
        databases.drop(name)
