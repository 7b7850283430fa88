"""Closing a settlement batch.

A close runs in one repeatable-read transaction, holding the batch and chain locks taken
before its snapshot:

1. it seals every committed entry into the hash chain (:mod:`exchange.finance.chain`);
2. the batch is every entry with settlement postings that the snapshot sees, was recorded
   before the cut-off and is in no earlier batch. The snapshot sees exactly the entries
   that committed before the close: one that commits later -- even with a lower id or an
   earlier time -- is not visible and falls into the next batch;
3. it nets the batch's entries (settle entries are payments: they are listed on the
   statements but not netted), rounds one payment instruction per merchant, carrying the
   remainder forward, and writes one statement summary per merchant with a signed
   checkpoint.

Only this transaction can write the rows of its batch (the database refuses any later
insert, update or delete), so a closed batch never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange.domain import errors as domain_errors
from exchange.domain.errors import Refusal
from exchange.domain.netting import Instructions, gross_total, net_total, netting_efficiency
from exchange.keys import Secrets
from exchange.ledger import idempotency
from exchange.ledger.engine import Conn
from exchange.services.actors import Actor
from exchange.services.tx import Pool

from . import sql
from .chain import barrier_passed, seal_visible
from .checkpoints import payload_text, sign
from .errors import INVALID_TIME, require_finance
from .lines import BatchFigures
from .sessions import BATCH_LOCK, CHAIN_LOCK, exclusive, repeatable_read
from .stream import stream_entries

CANDIDATES = """
SELECT {select} FROM chain_entries ce JOIN entries x ON x.id = ce.entry_id
 WHERE ce.block_id >= %(from)s AND x.recorded_at {cmp} %(cutoff)s
   AND EXISTS (SELECT 1 FROM postings q
                WHERE q.entry_id = ce.entry_id AND q.asset_id = %(asset)s)
   AND NOT EXISTS (SELECT 1 FROM settlement_batch_entries b WHERE b.entry_id = ce.entry_id)
"""
"""Settlement entries sealed from block ``from`` on and in no batch, recorded before
(``<``) or from (``>=``) the cut-off."""
IN_BATCH = CANDIDATES.format(select="ce.entry_id", cmp="<")
FIRST_LEFT_OVER_BLOCK = CANDIDATES.format(select="min(ce.block_id)", cmp=">=")
"""The first block holding a settlement entry left for a later batch (``NULL``: none)."""


@dataclass(frozen=True)
class Closed:
    batch_id: int
    replayed: bool


@dataclass(frozen=True)
class _Previous:
    id: int
    cutoff: datetime | None
    scan_from_block: int


async def _one(conn: Conn, query: str, params: Any = None) -> tuple[Any, ...] | None:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else tuple(row)


async def _previous(conn: Conn) -> _Previous:
    row = await _one(
        conn,
        "SELECT id, cutoff, scan_from_block FROM settlement_batches ORDER BY id DESC LIMIT 1",
    )
    return _Previous(0, None, 1) if row is None else _Previous(int(row[0]), row[1], int(row[2]))


async def close_batch(
    pool: Pool,
    actor: Actor,
    *,
    secrets: Secrets,
    minor_unit: int,
    idempotency_key: str,
    cutoff: datetime | None = None,
) -> Closed:
    """Close the next settlement batch (finance or admin); replay under the same key."""
    require_finance(actor, "closes settlement batches")
    idempotency.check_key(idempotency_key)
    if cutoff is not None and (cutoff.tzinfo is None or cutoff.utcoffset() is None):
        raise Refusal(INVALID_TIME, "the cut-off needs a UTC offset", "cutoff")
    request_key = f"{actor.initiator}:{idempotency_key}"
    async with exclusive(pool, BATCH_LOCK, CHAIN_LOCK) as conn:
        barrier_ok = await barrier_passed(conn)
        async with repeatable_read(conn):
            return await _close(
                conn,
                actor=actor,
                secrets=secrets,
                minor_unit=minor_unit,
                request_key=request_key,
                cutoff=cutoff,
                barrier_ok=barrier_ok,
            )


async def _close(
    conn: Conn,
    *,
    actor: Actor,
    secrets: Secrets,
    minor_unit: int,
    request_key: str,
    cutoff: datetime | None,
    barrier_ok: bool,
) -> Closed:
    done = await _one(
        conn, "SELECT id, cutoff FROM settlement_batches WHERE request_key = %s", (request_key,)
    )
    if done is not None:
        if cutoff is not None and cutoff != done[1]:
            raise Refusal(
                domain_errors.IDEMPOTENCY_KEY_REUSED,
                "this idempotency key closed a batch with another cut-off",
                "idempotencyKey",
            )
        return Closed(int(done[0]), replayed=True)
    asset = await _one(conn, sql.SETTLEMENT_ASSET)
    if asset is None:
        raise LookupError("the hub is not bootstrapped: no settlement currency")
    asset_id, currency = int(asset[0]), str(asset[1])
    prev = await _previous(conn)
    now_row = await _one(conn, "SELECT clock_timestamp()")
    assert now_row is not None
    now: datetime = now_row[0]
    if cutoff is None:
        cutoff = now
    elif cutoff > now:
        raise Refusal(INVALID_TIME, "the cut-off cannot be in the future", "cutoff")
    elif prev.cutoff is not None and cutoff < prev.cutoff:
        raise Refusal(
            INVALID_TIME,
            f"the cut-off cannot precede the previous batch's ({prev.cutoff.isoformat()})",
            "cutoff",
        )
    number = prev.id + 1
    sealed = await seal_visible(conn, barrier_ok=barrier_ok, sealed_by=f"batch {number}")
    params = {"from": prev.scan_from_block, "cutoff": cutoff, "asset": asset_id}

    cur = await conn.execute(sql.SCALES)
    figures = BatchFigures(scales={str(c): int(s) for c, s in await cur.fetchall()})
    async for entry in stream_entries(conn, sql.ENTRY_LEGS.format(entries=IN_BATCH), params):
        figures.add(entry)

    cur = await conn.execute(
        "SELECT party, carry_out_micro FROM settlement_positions"
        " WHERE batch_id = %s AND carry_out_micro <> 0",
        (prev.id,),
    )
    carried = {str(p): int(a) for p, a in await cur.fetchall()}
    instructions = figures.instructions(minor_unit, carried)
    gross = gross_total(figures.obligations)
    net = net_total(figures.positions)
    left = await _one(conn, FIRST_LEFT_OVER_BLOCK, params)
    scan_from = sealed.head.block + 1 if left is None or left[0] is None else int(left[0])
    seq = await _one(
        conn,
        "SELECT coalesce(pg_sequence_last_value("
        "pg_get_serial_sequence('entries', 'id')::regclass), 0)",
    )
    assert seq is not None

    await conn.execute(
        "INSERT INTO settlement_batches (id, cutoff, closed_by, request_key, currency,"
        " minor_unit, chain_block, chain_head, scan_from_block, sequence_at_close, entry_count,"
        " gross_micro, net_micro, efficiency, hub_fees_micro, hub_rounding_micro)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            number,
            cutoff,
            actor.initiator if not actor.subject else f"{actor.initiator}:{actor.subject}",
            request_key,
            currency,
            minor_unit,
            sealed.head.block or None,
            sealed.head.hash,
            scan_from,
            int(seq[0]),
            figures.entries,
            gross,
            net,
            netting_efficiency(gross, net),
            instructions.hub_fees,
            instructions.hub_rounding,
        ),
    )
    cur = await conn.execute(
        "INSERT INTO settlement_batch_entries (entry_id, batch_id)"
        f" SELECT c.entry_id, %(batch)s FROM ({IN_BATCH}) c",
        {**params, "batch": number},
    )
    if cur.rowcount != figures.entries:
        raise AssertionError(f"batch {number}: {cur.rowcount} entries, {figures.entries} netted")
    await _write_figures(conn, number, figures, carried, instructions)
    await _write_statements(conn, number, figures, secrets, sealed.head.block, sealed.head.hash)
    return Closed(number, replayed=False)


async def _write_figures(
    conn: Conn,
    batch: int,
    figures: BatchFigures,
    carried: dict[str, int],
    instructions: Instructions,
) -> None:
    cur = await conn.execute("SELECT code, id FROM merchants")
    merchant_ids = {str(code): int(mid) for code, mid in await cur.fetchall()}
    async with conn.cursor() as c:
        await c.executemany(
            "INSERT INTO settlement_obligations (batch_id, debtor, creditor, amount_micro)"
            " VALUES (%s, %s, %s, %s)",
            [(batch, d, cr, a) for (d, cr), a in figures.sorted_obligations().items()],
        )
        positions = figures.sorted_positions()
        carry_out = instructions.carry
        parties = sorted(set(positions) | set(carried) | set(carry_out))
        await c.executemany(
            "INSERT INTO settlement_positions (batch_id, party, merchant_id, position_micro,"
            " carried_in_micro, carry_out_micro) VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (
                    batch,
                    p,
                    merchant_ids.get(p),
                    positions.get(p, 0),
                    carried.get(p, 0),
                    carry_out.get(p, 0),
                )
                for p in parties
            ],
        )
        await c.executemany(
            "INSERT INTO settlement_instructions (batch_id, merchant_id, direction, amount_micro)"
            " VALUES (%s, %s, %s, %s)",
            [
                (batch, merchant_ids[i.party], i.direction.value, i.amount_micro)
                for i in instructions.instructions
            ],
        )


async def _write_statements(
    conn: Conn,
    batch: int,
    figures: BatchFigures,
    secrets: Secrets,
    chain_block: int,
    chain_head: bytes,
) -> None:
    cur = await conn.execute(
        "SELECT merchant_id, closing_micro FROM settlement_statements WHERE batch_id = %s",
        (batch - 1,),
    )
    openings = {int(m): int(c) for m, c in await cur.fetchall()}
    cur = await conn.execute(sql.MERCHANT_ACCOUNTS)
    rows = []
    for merchant_id, code, _account in await cur.fetchall():
        sums = figures.statement(str(code))
        opening = openings.get(int(merchant_id), 0)
        closing = opening + sums.netted_micro + sums.payments_micro
        payload = payload_text(
            batch=batch,
            merchant=str(code),
            opening_micro=opening,
            closing_micro=closing,
            lines=sums.line_count,
            digest=sums.digest,
            chain_block=chain_block,
            chain_head=chain_head,
        )
        checkpoint = sign(secrets.signing_key, payload)
        rows.append(
            (
                batch,
                int(merchant_id),
                opening,
                closing,
                sums.netted_micro,
                sums.payments_micro,
                sums.line_count,
                sums.digest,
                checkpoint.payload,
                checkpoint.signature,
                checkpoint.key_id,
            )
        )
    async with conn.cursor() as c:
        await c.executemany(
            "INSERT INTO settlement_statements (batch_id, merchant_id, opening_micro,"
            " closing_micro, netted_micro, payments_micro, line_count, digest, payload,"
            " signature, key_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
