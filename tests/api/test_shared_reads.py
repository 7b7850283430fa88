"""Balance reads that arrive together share a statement; each reader sees its own, fresh."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from world import World, data, gql, make_world

from exchange.api.loaders import WALLET_BALANCES_SQL, Loaders
from exchange.config import Settings
from exchange.domain.errors import NotFound
from exchange.services import members, shared_reads
from exchange.services.shared_reads import SharedReads
from exchange.services.tx import Pool
from tests.reads import add_crowd, rows_read

pytestmark = pytest.mark.anyio

WALLET = "{ wallet { totalValue balances { currency { code } points value } } }"
CUSTOMER = """query ($ref: String!) { customer(customerRef: $ref) {
  wallet { totalValue balances { currency { code } points } } } }"""


@pytest.fixture
async def world(pool: Pool, settings: Settings) -> World:
    return await make_world(pool, settings)


async def test_concurrent_wallet_reads_each_get_their_own(
    world: World, client: httpx.AsyncClient
) -> None:
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    await world.currency(tea, "TEA", "0.01")
    await world.currency(air, "MILES", "0.02")
    expected: dict[str, dict[str, str]] = {}
    for i in range(12):
        ref = f"c-{i}"
        member = await world.member(tea, ref)
        await world.earn(tea, member, "TEA", 10 * (i + 1))
        held = {"TEA": str(10 * (i + 1))}
        if i % 2 == 0:
            await world.link(air, f"a-{i}", member)
            await world.earn(air, member, "MILES", 5 * (i + 1))
            held["MILES"] = str(5 * (i + 1))
        expected[ref] = held
    headers = {ref: await world.member_headers(tea, ref) for ref in expected}

    async def own(ref: str) -> tuple[str, dict[str, Any]]:
        return ref, data(await gql(client, WALLET, {}, headers[ref]))["wallet"]

    async def as_customer(ref: str) -> tuple[str, dict[str, Any]]:
        found = data(await gql(client, CUSTOMER, {"ref": ref}, tea.headers))["customer"]
        return ref, found["wallet"]

    before = dict(shared_reads.STATS)
    reads = [own(ref) for ref in expected for _ in range(2)]
    reads += [as_customer(ref) for ref in expected]
    answers = await asyncio.gather(*reads)

    for ref, wallet in answers:
        held = {b["currency"]["code"]: b["points"] for b in wallet["balances"]}
        assert held == expected[ref], ref
        worth = sum(int(p) * (1 if c == "TEA" else 2) for c, p in held.items())
        assert wallet["totalValue"] == f"{worth // 100}.{worth % 100:02d}0000"
    statements = shared_reads.STATS["statements"] - before.get("statements", 0)
    answered = shared_reads.STATS["reads"] - before.get("reads", 0)
    assert answered == len(reads)
    assert statements < answered  # the reads did share statements


async def test_a_shared_statement_reads_only_its_members_wallets(world: World) -> None:
    """Reading a dozen members' balances looks their wallets up by key, however many
    wallets the hub holds: joined, the planner hashed every balance row of the hub."""
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    ids = []
    for i in range(12):
        member = await world.member(tea, f"c-{i}")
        await world.earn(tea, member, "TEA", i + 1)
        ids.append(member)
    async with world.pool.connection() as conn:
        await add_crowd(
            conn,
            "INSERT INTO accounts (kind, asset_id, member_id, stripes)"
            " SELECT 'wallet', c.id, m.id, 1 FROM m, currencies c WHERE c.code = 'TEA'",
            "accounts",
            "balances",
        )
    async with await psycopg.AsyncConnection.connect(world.pool.conninfo) as conn:
        cur = await conn.execute(WALLET_BALANCES_SQL, (ids,))
        held = {int(r[0]): int(r[1]) for r in await cur.fetchall()}
        read = await rows_read(conn, "accounts", "balances")
    assert held == {m: i + 1 for i, m in enumerate(ids)}
    # Twelve wallets and their twelve balance rows, against the 3,000 a hash would read.
    assert read["accounts"] + read["balances"] < 100, read


async def test_customer_look_ups_share_a_statement_and_stay_with_their_merchant(
    world: World,
) -> None:
    """Concurrent look-ups of customer references (not yet known to the process) share
    statements; each gets its own member, and another merchant's customer or an unknown
    reference is not found. The shared statement looks each link up by its key."""
    tea = await world.shop("tea-house")
    air = await world.shop("air-line")
    ids = {f"t-{i}": await world.member(tea, f"t-{i}") for i in range(10)}
    await world.member(air, "a-0")
    async with world.pool.connection() as conn:
        await add_crowd(
            conn,
            "INSERT INTO member_links (merchant_id, customer_ref, member_id)"
            " SELECT %(air)s, 'x-' || m.id, m.id FROM m",
            "member_links",
            air=air.id,
        )

    async def look(ref: str) -> int | None:
        try:
            return await members.member_by_ref(world.pool, tea.id, ref)
        except NotFound:
            return None

    refs = [*ids, "a-0", "nobody", *ids]
    before = dict(shared_reads.STATS)
    found = await asyncio.gather(*(look(ref) for ref in refs))
    assert found == [*ids.values(), None, None, *ids.values()]
    statements = shared_reads.STATS["statements"] - before.get("statements", 0)
    answered = shared_reads.STATS["reads"] - before.get("reads", 0)
    assert answered == len(refs)
    assert 1 <= statements <= 2  # 22 look-ups, shared
    # The shared statement reads the links it is asked for, not the 3,000 others.
    async with await psycopg.AsyncConnection.connect(world.pool.conninfo) as conn:
        keys = [tea.id] * len(ids) + [tea.id]
        cur = await conn.execute(members._LINKS_SQL, (keys, [*ids, "a-0"]))
        rows = await cur.fetchall()
        read = await rows_read(conn, "member_links")
    assert {r[1]: r[2] for r in rows} == {**ids, "a-0": None}
    assert read["member_links"] < 100, read


async def test_a_requests_balances_are_read_once_and_survive_a_cancelled_wait(
    world: World,
) -> None:
    """A request's fields wait for one read of a member's balances; a wait cancelled before
    the answer leaves the next one answered by a read of its own."""
    tea = await world.shop("tea-house")
    await world.currency(tea, "TEA", "0.01")
    member = await world.member(tea, "c-1")
    await world.earn(tea, member, "TEA", 70)
    request = Loaders(world.pool)

    first = asyncio.create_task(request.balances(member))
    await asyncio.sleep(0)  # asked for, not yet answered
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    before = dict(shared_reads.STATS)
    again, also = await asyncio.gather(request.balances(member), request.balances(member))

    assert [(b.currency.code, b.amount) for b in again] == [("TEA", 70)]
    assert also is again  # built once for the request
    assert shared_reads.STATS["reads"] - before.get("reads", 0) == 1


# -- the queue itself, with an in-memory store ------------------------------------------------


class Store:
    """Answers keys from a dict, counting statements; ``gate`` holds a statement open."""

    def __init__(self, values: dict[int, str]) -> None:
        self.values = values
        self.statements: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.fail: BaseException | None = None

    async def fetch(self, pool: Any, keys: Sequence[int]) -> dict[int, str]:
        self.statements.append(list(keys))
        snapshot = dict(self.values)  # what a statement starting now would see
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {k: snapshot[k] for k in keys if k in snapshot}


def _queue(store: Store, max_keys: int = 100) -> SharedReads[int, str]:
    return SharedReads(store.fetch, lambda: "-", max_keys=max_keys)


async def test_a_read_never_joins_a_statement_already_in_flight() -> None:
    store = Store({1: "old"})
    store.gate = asyncio.Event()
    reads = _queue(store)
    first = asyncio.ensure_future(reads.load(None, 1))
    await store.started.wait()
    store.values[1] = "new"  # committed after the first statement began
    second = asyncio.ensure_future(reads.load(None, 1))
    third = asyncio.ensure_future(reads.load(None, 2))
    await asyncio.sleep(0)
    store.gate.set()
    assert await first == "old"
    assert await second == "new"  # read-your-writes: it waited for the next statement
    assert await third == "-"
    assert store.statements == [[1], [1, 2]]


async def test_a_failed_statement_fails_its_readers_only() -> None:
    store = Store({1: "a", 2: "b"})
    store.gate = asyncio.Event()
    reads = _queue(store)
    first = asyncio.ensure_future(reads.load(None, 1))
    await store.started.wait()
    store.fail = RuntimeError("connection lost")
    waiting = [asyncio.ensure_future(reads.load(None, k)) for k in (1, 2)]
    await asyncio.sleep(0)
    store.gate.set()
    for future in [first, *waiting]:
        with pytest.raises(RuntimeError, match="connection lost"):
            await future
    store.fail = None
    store.gate = None
    assert await reads.load(None, 2) == "b"  # the queue goes on


async def test_a_cancelled_reader_leaves_the_others_answered() -> None:
    store = Store({1: "a", 2: "b"})
    store.gate = asyncio.Event()
    reads = _queue(store)
    first = asyncio.ensure_future(reads.load(None, 1))
    await store.started.wait()
    leaving = asyncio.ensure_future(reads.load(None, 2))
    staying = asyncio.ensure_future(reads.load(None, 2))
    await asyncio.sleep(0)
    leaving.cancel()
    store.gate.set()
    assert await first == "a"
    assert await staying == "b"
    with pytest.raises(asyncio.CancelledError):
        await leaving


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 30), min_size=1, max_size=80),
    max_keys=st.integers(1, 12),
)
def test_every_reader_gets_its_own_key(keys: list[int], max_keys: int) -> None:
    values = {k: f"v{k}" for k in range(0, 31, 3)}

    async def run() -> tuple[list[str], Store]:
        store = Store(values)
        reads = _queue(store, max_keys)
        answers = await asyncio.gather(*(reads.load(None, k) for k in keys))
        return list(answers), store

    answers, store = asyncio.run(run())
    assert answers == [values.get(k, "-") for k in keys]
    # All readers queued before the first statement: each key is asked for once, in as
    # few statements as the limit allows.
    assert all(len(s) <= max_keys for s in store.statements)
    assert sorted(k for s in store.statements for k in s) == sorted(set(keys))
    assert len(store.statements) == -(-len(set(keys)) // max_keys)
