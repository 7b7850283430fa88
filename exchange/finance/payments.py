"""Confirming that a batch's payment instruction was paid.

A confirmation names the batch, the merchant, the amount paid and the payment's external
reference. It posts the settle entry (:func:`exchange.services.settlement.settle`, linked to
the batch) and records the payment against the instruction; when every instruction of a
batch is recorded the batch is *settled*.

Exactly one settle entry per instruction: the entry is posted under the idempotency key
``instruction:<batch>:<merchant id>`` of ``finance``, so the ledger's own idempotency
decides between concurrent or repeated confirmations, without any lock:

- the same confirmation again (same reference, whatever the caller's idempotency key)
  answers the recorded payment (``replayed``);
- another reference for an instruction already paid is ``ALREADY_CONFIRMED``;
- an amount other than the instruction's is ``AMOUNT_MISMATCH``; a merchant without an
  instruction in that batch (an instruction of another batch) is ``NO_INSTRUCTION``.

The settle entry commits before the payment is recorded. Should the process stop in
between, the next confirmation of the instruction replays the entry and records it; until
then ``exchange verify`` reports the unrecorded settle entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.domain import errors as domain_errors
from exchange.domain.errors import Forbidden, NotFound, Refusal
from exchange.domain.money import micro_to_decimal
from exchange.ledger import idempotency
from exchange.ledger.engine import Conn
from exchange.services.actors import FINANCE, Actor
from exchange.services.settlement import PAID_BY_MERCHANT, PAID_TO_MERCHANT, settle
from exchange.services.tx import Pool

from .errors import ALREADY_CONFIRMED, AMOUNT_MISMATCH, NO_INSTRUCTION

MAX_REFERENCE = 200
SETTLE_DIRECTION = {"from_hub": PAID_TO_MERCHANT, "to_hub": PAID_BY_MERCHANT}


@dataclass(frozen=True)
class Confirmed:
    batch_id: int
    merchant_id: int
    entry_id: int
    replayed: bool


def check_reference(external_ref: str) -> str:
    ref = external_ref.strip()
    if not 1 <= len(ref) <= MAX_REFERENCE or not ref.isprintable():
        raise Refusal(
            "INVALID_REFERENCE",
            f"an external reference of 1 to {MAX_REFERENCE} printable characters",
            "externalReference",
        )
    return ref


def _already(ref: str) -> Refusal:
    return Refusal(
        ALREADY_CONFIRMED,
        f"this instruction was already confirmed paid under reference {ref!r}",
        "externalReference",
    )


def instruction_key(batch_id: int, merchant_id: int) -> str:
    """The idempotency key of the settle entry that pays an instruction."""
    return f"instruction:{batch_id}:{merchant_id}"


async def _row(conn: Conn, query: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return None if row is None else tuple(row)


@dataclass(frozen=True)
class _Instruction:
    merchant_id: int
    direction: str
    amount_micro: int
    paid_entry: int | None
    paid_ref: str | None


async def _instruction(pool: Pool, batch_id: int, merchant_code: str) -> _Instruction:
    async with pool.connection() as conn:
        merchant = await _row(conn, "SELECT id FROM merchants WHERE code = %s", (merchant_code,))
        if merchant is None:
            raise NotFound("merchant", "merchantCode")
        batch = await _row(conn, "SELECT 1 FROM settlement_batches WHERE id = %s", (batch_id,))
        if batch is None:
            raise NotFound("settlement batch", "batchId")
        found = await _row(
            conn,
            "SELECT i.direction, i.amount_micro, p.entry_id, p.external_ref"
            "  FROM settlement_instructions i LEFT JOIN settlement_payments p"
            "    ON p.batch_id = i.batch_id AND p.merchant_id = i.merchant_id"
            " WHERE i.batch_id = %s AND i.merchant_id = %s",
            (batch_id, int(merchant[0])),
        )
    if found is None:
        raise Refusal(
            NO_INSTRUCTION,
            f"batch {batch_id} has no payment instruction for {merchant_code}",
            "merchantCode",
        )
    return _Instruction(
        int(merchant[0]),
        str(found[0]),
        int(found[1]),
        None if found[2] is None else int(found[2]),
        None if found[3] is None else str(found[3]),
    )


async def confirm_payment(
    pool: Pool,
    actor: Actor,
    *,
    batch_id: int,
    merchant_code: str,
    amount_micro: int,
    external_ref: str,
    idempotency_key: str,
) -> Confirmed:
    """Confirm the merchant's instruction in ``batch_id`` as paid (finance only).

    ``idempotency_key`` is checked like every key; the confirmation itself is idempotent per
    instruction and reference (see the module's description).
    """
    if actor.role != FINANCE:
        raise Forbidden("only finance confirms payments")
    idempotency.check_key(idempotency_key)
    ref = check_reference(external_ref)
    found = await _instruction(pool, batch_id, merchant_code)
    if found.paid_ref is not None and found.paid_ref != ref:
        raise _already(found.paid_ref)
    if amount_micro != found.amount_micro:
        raise _mismatch(found.amount_micro)
    if found.paid_entry is not None:
        return Confirmed(batch_id, found.merchant_id, found.paid_entry, replayed=True)
    key = instruction_key(batch_id, found.merchant_id)
    refusal: Refusal | None = None
    try:
        outcome = await settle(
            pool,
            actor,
            merchant_id=found.merchant_id,
            direction=SETTLE_DIRECTION[found.direction],
            amount_micro=found.amount_micro,
            external_ref=ref,
            idempotency_key=key,
            batch_id=batch_id,
        )
        entry_id, paid_ref, replayed = outcome.entry_id, ref, outcome.replayed
    except Refusal as exc:
        if exc.code != domain_errors.IDEMPOTENCY_KEY_REUSED:
            raise
        # Paid before under another reference, and perhaps not yet recorded: record it.
        async with pool.connection() as conn:
            earlier = await _row(
                conn,
                "SELECT id, details->>'externalRef' FROM entries"
                " WHERE initiator = %s AND idempotency_key = %s",
                (actor.initiator, key),
            )
        if earlier is None:
            raise
        entry_id, paid_ref, replayed = int(earlier[0]), str(earlier[1]), True
        refusal = _already(paid_ref)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO settlement_payments (batch_id, merchant_id, entry_id, direction,"
            " amount_micro, external_ref, confirmed_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                batch_id,
                found.merchant_id,
                entry_id,
                found.direction,
                found.amount_micro,
                paid_ref,
                actor.subject or actor.initiator,
            ),
        )
        await conn.commit()
    if refusal is not None:
        raise refusal
    return Confirmed(batch_id, found.merchant_id, entry_id, replayed=replayed)


def _mismatch(due: int) -> Refusal:
    return Refusal(
        AMOUNT_MISMATCH,
        f"the instruction is for {micro_to_decimal(due)}, not another amount",
        "amount",
    )
