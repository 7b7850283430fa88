"""Databases with a given amount of history, for the history-scaling scenario.

A history database has the bench's catalogue (100 merchants), :data:`MEMBERS` members with
a wallet in every currency they are linked to, then as many issuer earns as it takes to
reach the wanted number of postings (two per earn), spread over every merchant and member.
Everything goes through :func:`exchange.services.bulk.earn_many`: the same statements and
triggers as the API's earns, so the history is valid by construction (every entry sums to
zero, balances and lots follow the journal). The hash chain is then sealed over it and
the tables vacuumed and analysed, as a long-running hub would have them.

Loading is the slow part (about 5,000 earns/s on two cores, and sealing about 10,000
entries/s; the chain is sealed every :data:`SEAL_EVERY` earns, because one sealing run over
millions of unsealed entries takes time quadratic in their number). A loaded database can
be kept as a template on a server that outlives the run (``--pg-dir`` or
``--keep-history``): it is named after a fingerprint of the schema revision, this module's
:data:`VERSION` and the sizes, marked complete only after its checks passed, and never
written to again (each run measures a copy), so reusing it is safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from bench import checks, seed
from bench.pg import PREFIX, BenchError, Server
from exchange.db.migrate import head_revision, upgrade
from exchange.db.pool import create_pool
from exchange.keys import Secrets
from exchange.services.actors import MERCHANT
from exchange.services.bulk import MAX_ITEMS
from exchange.services.credentials import create_api_key

VERSION = "history/v2"
MEMBERS = 1000
MERCHANTS = 100
COMPLETE = "exchange-bench history complete"
SEAL_EVERY = 100_000
"""Earns between two sealing runs of the hash chain while loading."""


@dataclass
class HistoryDb:
    name: str
    alliance: seed.Alliance
    postings: int
    build_s: float
    """Seconds spent loading (0 when a cached copy was used)."""
    copy_s: float
    cached: bool


def _fingerprint(postings: int) -> str:
    text = f"{VERSION}|{head_revision()}|{MERCHANTS}|{MEMBERS}|{postings}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def history_plan(alliance: seed.Alliance, earns: int) -> Iterator[tuple[int, int, int]]:
    """``earns`` issuer earns of 10 points, round-robin over merchants and their members."""
    per_merchant = max(1, alliance.members // alliance.merchants)
    for n in range(earns):
        k = n % alliance.merchants
        turn = n // alliance.merchants
        if k < seed.BATCH_MERCHANTS:
            i = turn % alliance.members
        else:
            i = k + alliance.merchants * (turn % per_merchant)
        yield k, i, 10


def _postings(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM postings").fetchone()
    assert row is not None
    return int(row[0])


async def _load(
    url: str, secrets: Secrets, postings: int, say: Callable[[str], None]
) -> seed.Alliance:
    alliance = await seed.seed(url, secrets, merchants=MERCHANTS, members=MEMBERS)
    await seed.award(url, alliance, seed.wallet_plan(alliance), tag="wallet")
    have = _postings(url)
    earns = max(0, (postings - have) // 2)
    if earns:
        started = time.perf_counter()
        step = max(earns // 10, 1)
        shown = [0]

        def progress(done: int) -> None:
            if earns < 10 * MAX_ITEMS:
                return
            if done - shown[0] >= step or done == earns:
                shown[0] = done
                rate = done / max(time.perf_counter() - started, 1e-9)
                say(f"    history: {done:,} of {earns:,} earns ({rate:,.0f}/s)")

        plan = history_plan(alliance, earns)
        done = 0
        while done < earns:
            # Seal as the history grows: one sealing run over millions of unsealed entries
            # costs time quadratic in their number (each block scans from the frontier).
            chunk = list(itertools.islice(plan, SEAL_EVERY))
            base = done
            done += await seed.award(
                url,
                alliance,
                chunk,
                tag=f"hist{base}",
                progress=lambda n, base=base: progress(base + n),
            )
            await seed.seal_chain(url)
    say("    history: sealing the hash chain, VACUUM ANALYZE")
    await seed.settle_in(url)
    return alliance


async def reload_alliance(url: str, secrets: Secrets) -> seed.Alliance:
    """The alliance of a copied history database, with fresh API keys (this run's pepper)."""
    alliance = seed.Alliance(merchants=MERCHANTS, members=MEMBERS)
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM merchants WHERE code = ANY(%s) ORDER BY code",
                ([seed.merchant_code(k) for k in range(MERCHANTS)],),
            )
            alliance.merchant_ids = [int(r[0]) for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT customer_ref, member_id FROM member_links WHERE merchant_id = %s",
                (alliance.merchant_ids[0],),
            )
            by_ref = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
        alliance.member_ids = [by_ref[seed.customer_ref(i)] for i in range(MEMBERS)]
        for merchant_id in alliance.merchant_ids:
            _info, key = await create_api_key(
                pool,
                seed.ADMIN_ACTOR,
                pepper=secrets.api_key_pepper,
                role=MERCHANT,
                merchant_id=merchant_id,
                label="bench",
            )
            alliance.keys.append(key)
    finally:
        await pool.close()
    return alliance


def _find_template(server: Server, name: str) -> bool:
    with server.admin() as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
    if row is None:
        return False
    if row[0] != COMPLETE:
        server.drop(name)  # a load that did not finish: start again
        return False
    return True


def prepare(
    server: Server,
    secrets: Secrets,
    postings: int,
    *,
    keep: bool,
    say: Callable[[str], None],
) -> HistoryDb:
    """A database with about ``postings`` postings of history (a copy of a kept one if any)."""
    if not keep:
        name = server.create(f"hist{postings}")
        url = server.url(name)
        upgrade(url, "head")
        started = time.perf_counter()
        alliance = asyncio.run(_load(url, secrets, postings, say))
        built = time.perf_counter() - started
        checks.conservation(url, checks.Mark(0), expected_entries=None, scenario="history load")
        return HistoryDb(name, alliance, _postings(url), built, 0.0, cached=False)

    template = f"{PREFIX}_hist_{postings}_{_fingerprint(postings)}"
    built = 0.0
    cached = _find_template(server, template)
    if not cached:
        with server.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
        url = server.url(template)
        upgrade(url, "head")
        started = time.perf_counter()
        asyncio.run(_load(url, secrets, postings, say))
        built = time.perf_counter() - started
        checks.conservation(url, checks.Mark(0), expected_entries=None, scenario="history load")
        with server.admin() as conn:
            conn.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(template), sql.Literal(COMPLETE)
                )
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                    sql.Identifier(template)
                )
            )
    else:
        say(f"    history: reusing {template}")
    started = time.perf_counter()
    try:
        name = server.create(f"hist{postings}", template=template)
    except psycopg.Error as exc:
        raise BenchError(f"cannot copy the history database {template}: {exc}") from exc
    copied = time.perf_counter() - started
    url = server.url(name)
    alliance = asyncio.run(reload_alliance(url, secrets))
    return HistoryDb(name, alliance, _postings(url), built, copied, cached=cached)
