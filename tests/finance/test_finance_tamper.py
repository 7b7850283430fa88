"""Tamper evidence: the hash chain catches edits made behind the hub's back.

A superuser can switch the append-only triggers off (``session_replication_role =
replica``); whatever it changes in a sealed entry -- a posting's amount, the postings
themselves, a timestamp, the order -- ``exchange verify`` names.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from exchange.finance import chain
from exchange.services import expiry, reversal
from tests.finance.support import Finance, paused_partner_earn, worked_example_batch1

pytestmark = pytest.mark.anyio


def _behind_the_back(fin: Finance, *statements: str) -> None:
    with psycopg.connect(fin.hub.url) as conn:
        conn.execute("SET session_replication_role = replica")
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def _chain_problems(fin: Finance) -> list[str]:
    return [v for v in fin.finance_violations() if v.startswith("hash-chain")]


async def test_sealing_covers_every_committed_entry_once(fin: Finance) -> None:
    s = await worked_example_batch1(fin)
    first = await fin.seal()
    assert first.entries == len(s.entries)
    assert first.blocks == 1
    again = await fin.seal()
    assert (again.entries, again.blocks) == (0, 0)
    await fin.earn("a", "APT", 5)
    third = await fin.seal()
    assert (third.entries, third.head.block) == (1, 2)
    assert await fin.hub.count("chain_entries") == len(s.entries) + 1
    assert fin.violations() == []


async def test_sealing_a_block_lets_other_tasks_run_between_slices(
    fin: Finance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block is hashed a slice at a time, so requests served meanwhile are not held up."""
    s = await worked_example_batch1(fin)
    assert len(s.entries) >= 5
    turns = 0
    seen: list[int] = []

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    block_digest = chain.block_digest

    def digest(row: object) -> bytes:
        seen.append(turns)
        return block_digest(row)  # type: ignore[arg-type]

    monkeypatch.setattr(chain, "DIGEST_SLICE", 2)
    monkeypatch.setattr(chain, "block_digest", digest)
    task = asyncio.create_task(ticker())
    try:
        sealed = await fin.seal()
    finally:
        task.cancel()
    assert (sealed.blocks, sealed.entries) == (1, len(s.entries))
    # Two entries per slice, and the ticker ran between every two slices.
    assert len(seen) == len(s.entries)
    assert [len([t for t in seen if t == v]) for v in sorted(set(seen))][:-1] == [2] * (
        (len(seen) - 1) // 2
    )
    assert fin.violations() == []


async def test_each_block_is_looked_for_above_the_last_one_sealed(
    fin: Finance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run seals its backlog block by block without scanning what it sealed again."""
    s = await worked_example_batch1(fin)
    for j in range(4):
        await fin.earn("a", "APT", 5 + j)
    total = len(s.entries) + 4
    looked: list[int] = []
    blocks: list[list[int]] = []
    next_block = chain.next_block

    async def recording(conn: Any, after: int) -> tuple[list[int], list[bytes]]:
        looked.append(after)
        found = await next_block(conn, after)
        blocks.append(found[0])
        return found

    monkeypatch.setattr(chain, "BLOCK_SIZE", 3)
    monkeypatch.setattr(chain, "next_block", recording)
    sealed = await fin.seal()
    assert sealed.entries == total
    assert sealed.blocks == -(-total // 3)
    # The first look starts at the frontier; each next one above the last id sealed.
    assert looked[1:] == [block[-1] for block in blocks[:-1]]
    assert looked == sorted(set(looked))
    assert await fin.hub.count("chain_entries") == await fin.hub.count("entries")
    assert fin.violations() == []


async def _block_members(fin: Finance) -> list[list[int]]:
    async with fin.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT array_agg(entry_id ORDER BY ord) FROM chain_entries"
            " GROUP BY block_id ORDER BY block_id"
        )
        return [list(r[0]) for r in await cur.fetchall()]


@pytest.mark.parametrize("reach", ["past", "short"])
async def test_a_late_entry_seals_with_later_ones_within_the_block_span(
    fin: Finance, monkeypatch: pytest.MonkeyPatch, reach: str
) -> None:
    """An entry that commits after higher ids were sealed starts the next block; the block
    reaches over the sealed ids up to ``BLOCK_SPAN`` ids from it, and the postings and lots
    of the sealed entries inside that range stay out of it."""
    first = await fin.earn("a", "APT", 5)
    paused, resume = asyncio.Event(), asyncio.Event()
    late: list[int] = []
    task = asyncio.create_task(paused_partner_earn(fin, paused, resume, late))
    await asyncio.wait_for(paused.wait(), 10)
    between = [await fin.earn("b", "BPT", 10 + j, member=j % 2) for j in range(4)]
    assert (await fin.seal()).entries == 5
    resume.set()
    await asyncio.wait_for(task, 10)
    after = [await fin.earn("c", "CPT", 20 + j) for j in range(3)]
    assert late[0] < between[0] < between[-1] < after[0]

    span = after[-1] - late[0] + 1 if reach == "past" else after[0] - late[0]
    monkeypatch.setattr(chain, "BLOCK_SPAN", span)
    sealed = await fin.seal()
    assert sealed.entries == 4
    expected = [[late[0], *after]] if reach == "past" else [[late[0]], after]
    assert await _block_members(fin) == [[first, *between], *expected]
    assert _chain_problems(fin) == []
    assert fin.violations() == []


async def test_the_block_query_gives_the_digests_the_checks_compute(fin: Finance) -> None:
    """The sealer's block query aggregates postings, lot moves and lots over an id range into
    the JSON text of their arrays; its digests equal those the chain check computes from
    the per-entry subqueries, for every kind of entry, read in binary and in text."""
    s = await worked_example_batch1(fin)
    await reversal.reverse(
        fin.pool,
        fin.hub.merchants["a"],
        entry_id=s.entries["a earns P 1000 APT"],
        points=100,
        idempotency_key="rev-q",
        reason="returned",
    )
    await expiry.sweep(fin.pool, now=datetime.now(UTC) + timedelta(days=3650))
    async with fin.pool.connection() as conn:
        await conn.execute(
            "UPDATE currencies SET expiry_kind = 'never', expiry_param = NULL WHERE code = 'BPT'"
        )
    await fin.earn("b", "BPT", 5)  # a lot that never expires: a null in its array
    canon = f"SELECT {chain.CANON_COLUMNS} FROM entries e ORDER BY e.id"
    params = {"after": 0, "span": 10**9, "size": 10**6}
    async with fin.pool.connection() as conn:
        expected = await (await conn.execute(canon)).fetchall()
        for binary in (True, False):
            cur = await conn.execute(chain._UNSEALED, params, binary=binary)
            rows = await cur.fetchall()
            assert [r[: chain.ENTRY_WIDTH] for r in rows] == [
                r[: chain.ENTRY_WIDTH] for r in expected
            ]
            assert [chain.block_digest(r) for r in rows] == [
                chain.entry_digest(r) for r in expected
            ]
            for row, canon_row in zip(rows, expected, strict=True):
                assert [json.loads(t) for t in row[chain.ENTRY_WIDTH :]] == [
                    [list(x) for x in a] for a in canon_row[chain.ENTRY_WIDTH :]
                ]
    kinds = {row[1] for row in expected}
    assert {"earn", "redeem", "convert", "reverse", "expire"} <= kinds, kinds
    assert any(row[14] for row in expected), "no entry moved a lot"
    assert any(len(row[13]) > 2 for row in expected), "no entry with more than two postings"
    assert any(lot[4] is None for row in expected for lot in row[15]), "no lot without expiry"
    await fin.close()  # seals every entry; the checks recompute each digest
    assert await fin.hub.count("chain_entries") == len(expected)
    assert _chain_problems(fin) == []
    assert fin.violations() == []


async def test_concurrent_sealers_and_writers_seal_each_entry_once(fin: Finance) -> None:
    async def write(i: int) -> None:
        for j in range(5):
            await fin.earn("abc"[i % 3], "APT", 10 + j, member=i % 3)

    async def sealers() -> None:
        for _ in range(10):
            await asyncio.gather(fin.seal(), fin.seal())

    await asyncio.gather(*(write(i) for i in range(3)), sealers())
    await fin.seal()
    await fin.seal()  # the second run passes the barrier of the first: the frontier moves
    assert await fin.hub.count("chain_entries") == await fin.hub.count("entries")
    async with fin.pool.connection() as conn:
        cur = await conn.execute("SELECT frontier FROM chain_state")
        row = await cur.fetchone()
    assert row is not None
    async with fin.pool.connection() as conn:
        cur = await conn.execute("SELECT max(id) FROM entries")
        top = await cur.fetchone()
    assert top is not None
    assert row[0] == top[0]
    assert fin.violations() == []


async def test_a_posting_edited_after_sealing_is_reported(fin: Finance) -> None:
    s = await worked_example_batch1(fin)
    await fin.seal()
    target = s.entries["c awards P 500 APT"]
    _behind_the_back(
        fin, f"UPDATE postings SET amount = amount * 2 WHERE entry_id = {target} AND seq = 1"
    )
    problems = _chain_problems(fin)
    assert f"hash-chain: entry {target} (block 1) was changed after it was sealed" in problems
    assert "hash-chain: block 1: its hash does not match its entries" not in problems


async def test_deleted_postings_and_a_moved_timestamp_are_reported(fin: Finance) -> None:
    s = await worked_example_batch1(fin)
    await fin.seal()
    emptied = s.entries["P redeems 300 APT at b"]
    moved = s.entries["b awards P 1000 CPT"]
    _behind_the_back(
        fin,
        f"DELETE FROM postings WHERE entry_id = {emptied}",
        f"UPDATE entries SET recorded_at = recorded_at - interval '1 hour' WHERE id = {moved}",
    )
    problems = _chain_problems(fin)
    assert f"hash-chain: entry {emptied} (block 1) was changed after it was sealed" in problems
    assert f"hash-chain: entry {moved} (block 1) was changed after it was sealed" in problems


async def test_a_deleted_entry_and_a_reordered_chain_are_reported(fin: Finance) -> None:
    s = await worked_example_batch1(fin)
    await fin.seal()
    gone = s.entries["c awards P 123.45 BPT"]
    first, second = s.entries["a earns P 1000 APT"], s.entries["c awards P 500 APT"]
    _behind_the_back(
        fin,
        f"DELETE FROM lots WHERE entry_id = {gone}",
        f"DELETE FROM postings WHERE entry_id = {gone}",
        f"DELETE FROM entries WHERE id = {gone}",
        f"UPDATE chain_entries SET ord = 99 WHERE entry_id = {first}",
        f"UPDATE chain_entries SET ord = 0 WHERE entry_id = {second}",
        f"UPDATE chain_entries SET ord = 1 WHERE entry_id = {first}",
    )
    problems = _chain_problems(fin)
    assert f"hash-chain: entry {gone} sealed in block 1 was deleted" in problems
    assert "hash-chain: block 1: its hash does not match its entries" in problems


async def test_rewriting_a_block_breaks_the_link_and_the_checkpoints(fin: Finance) -> None:
    await worked_example_batch1(fin)
    batch = await fin.close()
    await fin.earn("a", "APT", 5)
    await fin.seal()
    _behind_the_back(fin, "UPDATE chain_blocks SET hash = sha256(hash) WHERE id = 1")
    problems = fin.finance_violations()
    assert "hash-chain: block 1: its hash does not match its entries" in problems
    assert "hash-chain: block 2: its previous hash is not the hash of the block before" in problems
    assert f"checkpoint: batch {batch}: chain head is not block 1" in problems


async def test_an_entry_dropped_from_the_chain_is_reported(fin: Finance) -> None:
    entry = await fin.earn("a", "APT", 5)
    await fin.seal()
    second = await fin.seal()  # no writer was in flight: the frontier passes the entry
    assert second.frontier >= entry
    _behind_the_back(fin, f"DELETE FROM chain_entries WHERE entry_id = {entry}")
    problems = _chain_problems(fin)
    assert (
        f"hash-chain: entry {entry} is below the sealed frontier but not in the chain" in problems
    )
    assert "hash-chain: block 1: 0 entries recorded, 1 sealed" in problems


async def test_settlement_figures_edited_behind_the_back_are_reported(fin: Finance) -> None:
    s = await worked_example_batch1(fin)
    await fin.close()
    assert fin.violations() == []
    entry = s.entries["c awards P 500 APT"]
    _behind_the_back(
        fin,
        # Both legs of a batched entry, still summing to zero: the ledger now says otherwise.
        f"UPDATE postings SET amount = amount * 2 WHERE entry_id = {entry}"
        "   AND account_id IN (SELECT id FROM accounts WHERE kind = 'settlement')",
        "UPDATE settlement_instructions SET amount_micro = amount_micro + 10000"
        " WHERE merchant_id = (SELECT id FROM merchants WHERE code = 'shop-c')",
        "UPDATE settlement_statements SET digest = sha256(digest)"
        " WHERE merchant_id = (SELECT id FROM merchants WHERE code = 'shop-b')",
    )
    checks = {v.split(":")[0] for v in fin.violations()}
    assert {
        "hash-chain",
        "batch-positions",
        "batch-obligations",
        "batch-instructions",
        "statement-lines",
        "statement-sums",
        "replay-balance",  # the ledger's own replay: balances no longer follow the postings
        "checkpoint",
    } <= checks


# -- a block's chain entries: checked once per statement ----------------------------------------


def _refused(url: str, sql: str, params: tuple[object, ...], state: str) -> None:
    with psycopg.connect(url) as conn:
        with pytest.raises(psycopg.Error) as exc:
            conn.execute(sql, params)
        assert exc.value.sqlstate == state, exc.value


_INTO_BLOCK = (
    "INSERT INTO chain_entries (entry_id, block_id, ord, digest)"
    " VALUES (%s, %s, 999, decode(repeat('00', 32), 'hex'))"
)
_NEW_BLOCK = (
    "WITH b AS (INSERT INTO chain_blocks (id, prev_hash, hash, entry_count, sealed_by)"
    "  SELECT max(id) + 1, decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex'),"
    "         1, 'test' FROM chain_blocks RETURNING id)"
    " INSERT INTO chain_entries (entry_id, block_id, ord, digest)"
    " SELECT %s, b.id, 0, decode(repeat('00', 32), 'hex') FROM b"
)


async def test_chain_entries_go_only_into_a_new_block_and_name_real_entries(
    fin: Finance,
) -> None:
    await fin.earn("a", "APT", 5)
    await fin.seal()
    unsealed = await fin.earn("a", "APT", 6)
    # A block sealed by an earlier transaction takes no more entries.
    _refused(fin.hub.url, _INTO_BLOCK, (unsealed, 1), "EX006")
    # Nor does a block that does not exist.
    _refused(fin.hub.url, _INTO_BLOCK, (unsealed, 99), "EX006")
    # A new block's entries must exist.
    _refused(fin.hub.url, _NEW_BLOCK, (10**12,), "EX008")
    assert await fin.hub.count("chain_blocks") == 1
    sealed = await fin.seal()
    assert sealed.entries == 1
    assert fin.violations() == []


async def test_sealing_takes_no_lock_on_the_entries_it_seals(fin: Finance) -> None:
    """The sealer writes past a transaction holding its entries' rows (a foreign key would
    wait for it: it takes a KEY SHARE lock on each entry it checks)."""
    await fin.earn("a", "APT", 5)
    with psycopg.connect(fin.hub.url) as holder:
        holder.execute("SELECT id FROM entries FOR UPDATE").fetchall()
        sealed = await asyncio.wait_for(fin.seal(), timeout=10)
        holder.rollback()
    assert sealed.entries >= 1
    assert fin.violations() == []
