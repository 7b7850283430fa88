"""Settlement batches: commit-order membership, netting figures, immutability."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
import pytest

from exchange.domain.errors import Refusal
from exchange.finance import batches
from exchange.services import clock
from tests.finance.support import (
    FINANCE_ACTOR,
    MINOR_UNIT,
    Finance,
    micro,
    paused_partner_earn,
)

pytestmark = pytest.mark.anyio

EX4 = "EX004"  # append-only row updated or deleted


async def test_an_entry_committed_after_the_close_falls_into_the_next_batch(fin: Finance) -> None:
    first = await fin.earn("c", "APT", 500)  # C owes A 5.00
    paused, resume = asyncio.Event(), asyncio.Event()
    late: list[int] = []
    task = asyncio.create_task(paused_partner_earn(fin, paused, resume, late))
    await asyncio.wait_for(paused.wait(), 10)
    second = await fin.earn("b", "APT", 200, member=1)  # a higher id, committed first
    assert late[0] < second

    batch1 = await fin.close()
    resume.set()
    await asyncio.wait_for(task, 10)
    batch2 = await fin.close()

    assert await fin.batch_entries(batch1) == [first, second]
    assert await fin.batch_entries(batch2) == [late[0]]
    report1, report2 = await fin.report(batch1), await fin.report(batch2)
    # The late entry was recorded before the first cut-off, yet it is in the second batch.
    async with fin.pool.connection() as conn:
        cur = await conn.execute("SELECT recorded_at FROM entries WHERE id = %s", (late[0],))
        row = await cur.fetchone()
    assert row is not None
    assert row[0] < report1.batch.cutoff
    assert {p.party: p.position_micro for p in report1.positions} == {
        "shop-a": micro("7"),
        "shop-b": micro("-2"),
        "shop-c": micro("-5"),
    }
    assert {p.party: p.position_micro for p in report2.positions} == {
        "shop-a": micro("7"),
        "shop-c": micro("-7"),
    }
    assert fin.violations() == []


async def test_concurrent_closes_never_share_an_entry(fin: Finance) -> None:
    for i in range(6):
        await fin.earn("c", "APT", 100 + i)
    closed = await asyncio.gather(*(fin.close() for _ in range(4)))
    assert sorted(closed) == [1, 2, 3, 4]
    assigned = [entry for b in closed for entry in await fin.batch_entries(b)]
    assert len(assigned) == len(set(assigned)) == 6
    assert fin.violations() == []


async def test_the_cutoff_leaves_later_entries_for_the_next_batch(fin: Finance) -> None:
    early = await fin.earn("c", "APT", 100)
    await asyncio.sleep(0.01)
    cutoff = clock.now()
    await asyncio.sleep(0.01)
    later = await fin.earn("b", "APT", 100)
    batch1 = await fin.close(cutoff=cutoff)
    assert await fin.batch_entries(batch1) == [early]
    batch2 = await fin.close()
    assert await fin.batch_entries(batch2) == [later]

    with pytest.raises(Refusal) as future:
        await fin.close(cutoff=clock.now() + timedelta(hours=1))
    assert future.value.code == "INVALID_TIME"
    with pytest.raises(Refusal) as backwards:
        await fin.close(cutoff=cutoff - timedelta(seconds=1))
    assert backwards.value.code == "INVALID_TIME"
    assert fin.violations() == []


async def test_closing_replays_under_the_same_key(fin: Finance) -> None:
    await fin.earn("c", "APT", 100)
    first = await batches.close_batch(
        fin.pool,
        FINANCE_ACTOR,
        secrets=fin.secrets,
        minor_unit=MINOR_UNIT,
        idempotency_key="close-1",
    )
    again = await batches.close_batch(
        fin.pool,
        FINANCE_ACTOR,
        secrets=fin.secrets,
        minor_unit=MINOR_UNIT,
        idempotency_key="close-1",
    )
    assert (first.batch_id, first.replayed) == (1, False)
    assert (again.batch_id, again.replayed) == (1, True)
    with pytest.raises(Refusal) as merchant:
        await batches.close_batch(
            fin.pool,
            fin.hub.merchants["a"],
            secrets=fin.secrets,
            minor_unit=MINOR_UNIT,
            idempotency_key="close-2",
        )
    assert merchant.value.code == "FORBIDDEN"


async def test_a_closed_batch_cannot_be_modified(fin: Finance) -> None:
    entry = await fin.earn("c", "APT", 100)
    batch = await fin.close()
    other = await fin.earn("b", "APT", 100)
    attempts = [
        ("UPDATE settlement_batches SET gross_micro = 0 WHERE id = %s", (batch,), "EX004"),
        ("DELETE FROM settlement_batch_entries WHERE batch_id = %s", (batch,), "EX004"),
        ("UPDATE settlement_positions SET position_micro = 0 WHERE batch_id = %s", (batch,), EX4),
        ("DELETE FROM settlement_instructions WHERE batch_id = %s", (batch,), "EX004"),
        ("UPDATE settlement_statements SET closing_micro = 0 WHERE batch_id = %s", (batch,), EX4),
        ("TRUNCATE settlement_obligations", (), "EX004"),
        ("UPDATE chain_blocks SET hash = hash", (), "EX004"),
        ("DELETE FROM chain_entries WHERE entry_id = %s", (entry,), "EX004"),
        ("INSERT INTO settlement_batch_entries VALUES (%s, %s)", (other, batch), "EX006"),
        (
            "INSERT INTO settlement_obligations VALUES (%s, 'shop-a', 'shop-b', 1)",
            (batch,),
            "EX006",
        ),
        (
            "INSERT INTO settlement_instructions VALUES (%s, %s, 'to_hub', 10000)",
            (batch, fin.hub.merchant_ids["b"]),
            "EX006",
        ),
    ]
    for statement, params, state in attempts:
        with psycopg.connect(fin.hub.url) as conn:
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(statement, params)
            assert refused.value.sqlstate == state, statement
    assert await fin.batch_entries(batch) == [entry]
    assert fin.violations() == []
