"""Reading closed batches: summaries, obligations, positions, instructions, statements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from exchange.ledger.engine import Conn

_BATCH_COLUMNS = """
b.id, b.cutoff, b.closed_at, b.closed_by, b.currency, b.minor_unit, b.chain_block,
b.chain_head, b.entry_count, b.gross_micro, b.net_micro, b.efficiency, b.hub_fees_micro,
b.hub_rounding_micro,
(SELECT count(*) FROM settlement_instructions i WHERE i.batch_id = b.id),
(SELECT count(*) FROM settlement_payments p WHERE p.batch_id = b.id)
"""


@dataclass(frozen=True)
class Batch:
    id: int
    cutoff: datetime
    closed_at: datetime
    closed_by: str
    currency: str
    minor_unit: int
    chain_block: int
    chain_head: bytes
    entry_count: int
    gross_micro: int
    net_micro: int
    efficiency: Decimal
    hub_fees_micro: int
    hub_rounding_micro: int
    instruction_count: int
    payment_count: int

    @property
    def settled(self) -> bool:
        """Every instruction of the batch is confirmed paid."""
        return self.payment_count == self.instruction_count


def _batch(r: Any) -> Batch:
    return Batch(
        id=int(r[0]),
        cutoff=r[1],
        closed_at=r[2],
        closed_by=str(r[3]),
        currency=str(r[4]),
        minor_unit=int(r[5]),
        chain_block=0 if r[6] is None else int(r[6]),
        chain_head=bytes(r[7]),
        entry_count=int(r[8]),
        gross_micro=int(r[9]),
        net_micro=int(r[10]),
        efficiency=Decimal(r[11]),
        hub_fees_micro=int(r[12]),
        hub_rounding_micro=int(r[13]),
        instruction_count=int(r[14]),
        payment_count=int(r[15]),
    )


async def get_batch(conn: Conn, batch_id: int) -> Batch | None:
    cur = await conn.execute(
        f"SELECT {_BATCH_COLUMNS} FROM settlement_batches b WHERE b.id = %s", (batch_id,)
    )
    row = await cur.fetchone()
    return None if row is None else _batch(row)


async def list_batches(conn: Conn, *, before: int | None, limit: int) -> list[Batch]:
    """Batches newest first, those numbered below ``before`` when given."""
    cur = await conn.execute(
        f"SELECT {_BATCH_COLUMNS} FROM settlement_batches b"
        " WHERE %(before)s::bigint IS NULL OR b.id < %(before)s ORDER BY b.id DESC LIMIT %(n)s",
        {"before": before, "n": limit},
    )
    return [_batch(r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class Obligation:
    debtor: str
    creditor: str
    amount_micro: int


@dataclass(frozen=True)
class Position:
    party: str
    position_micro: int
    carried_in_micro: int
    carry_out_micro: int


@dataclass(frozen=True)
class Payment:
    entry_id: int
    external_ref: str
    amount_micro: int
    direction: str
    confirmed_at: datetime
    confirmed_by: str


@dataclass(frozen=True)
class Instruction:
    merchant_id: int
    merchant: str
    direction: str
    amount_micro: int
    payment: Payment | None

    @property
    def signed_micro(self) -> int:
        """Negative when the merchant pays the hub."""
        return self.amount_micro if self.direction == "from_hub" else -self.amount_micro


@dataclass(frozen=True)
class StatementSummary:
    batch_id: int
    merchant_id: int
    merchant: str
    account_id: int
    opening_micro: int
    closing_micro: int
    netted_micro: int
    payments_micro: int
    line_count: int
    digest: bytes
    payload: str
    signature: str
    key_id: str


@dataclass(frozen=True)
class BatchReport:
    batch: Batch
    obligations: list[Obligation]
    positions: list[Position]
    instructions: list[Instruction]
    statements: list[StatementSummary]


async def obligations(conn: Conn, batch_id: int, party: str | None = None) -> list[Obligation]:
    cur = await conn.execute(
        "SELECT debtor, creditor, amount_micro FROM settlement_obligations"
        " WHERE batch_id = %(b)s AND (%(p)s::text IS NULL OR %(p)s IN (debtor, creditor))"
        " ORDER BY debtor, creditor",
        {"b": batch_id, "p": party},
    )
    return [Obligation(str(d), str(c), int(a)) for d, c, a in await cur.fetchall()]


async def positions(conn: Conn, batch_id: int, party: str | None = None) -> list[Position]:
    cur = await conn.execute(
        "SELECT party, position_micro, carried_in_micro, carry_out_micro"
        " FROM settlement_positions WHERE batch_id = %(b)s"
        " AND (%(p)s::text IS NULL OR party = %(p)s) ORDER BY party",
        {"b": batch_id, "p": party},
    )
    return [Position(str(p), int(a), int(i), int(o)) for p, a, i, o in await cur.fetchall()]


async def instructions(
    conn: Conn, batch_id: int, merchant_id: int | None = None
) -> list[Instruction]:
    cur = await conn.execute(
        "SELECT i.merchant_id, m.code, i.direction, i.amount_micro, p.entry_id, p.external_ref,"
        "       p.amount_micro, p.direction, p.confirmed_at, p.confirmed_by"
        "  FROM settlement_instructions i JOIN merchants m ON m.id = i.merchant_id"
        "  LEFT JOIN settlement_payments p"
        "    ON p.batch_id = i.batch_id AND p.merchant_id = i.merchant_id"
        " WHERE i.batch_id = %(b)s AND (%(m)s::bigint IS NULL OR i.merchant_id = %(m)s)"
        " ORDER BY m.code",
        {"b": batch_id, "m": merchant_id},
    )
    out = []
    for r in await cur.fetchall():
        payment = (
            None
            if r[4] is None
            else Payment(int(r[4]), str(r[5]), int(r[6]), str(r[7]), r[8], str(r[9]))
        )
        out.append(Instruction(int(r[0]), str(r[1]), str(r[2]), int(r[3]), payment))
    return out


async def statements(
    conn: Conn, batch_id: int, merchant_id: int | None = None
) -> list[StatementSummary]:
    cur = await conn.execute(
        "SELECT s.batch_id, s.merchant_id, m.code, a.id, s.opening_micro, s.closing_micro,"
        "       s.netted_micro, s.payments_micro, s.line_count, s.digest, s.payload,"
        "       s.signature, s.key_id"
        "  FROM settlement_statements s JOIN merchants m ON m.id = s.merchant_id"
        "  JOIN accounts a ON a.kind = 'settlement' AND a.merchant_id = s.merchant_id"
        " WHERE s.batch_id = %(b)s AND (%(m)s::bigint IS NULL OR s.merchant_id = %(m)s)"
        " ORDER BY m.code",
        {"b": batch_id, "m": merchant_id},
    )
    return [
        StatementSummary(
            batch_id=int(r[0]),
            merchant_id=int(r[1]),
            merchant=str(r[2]),
            account_id=int(r[3]),
            opening_micro=int(r[4]),
            closing_micro=int(r[5]),
            netted_micro=int(r[6]),
            payments_micro=int(r[7]),
            line_count=int(r[8]),
            digest=bytes(r[9]),
            payload=str(r[10]),
            signature=str(r[11]),
            key_id=str(r[12]),
        )
        for r in await cur.fetchall()
    ]


async def batch_report(conn: Conn, batch_id: int) -> BatchReport | None:
    found = await get_batch(conn, batch_id)
    if found is None:
        return None
    return BatchReport(
        batch=found,
        obligations=await obligations(conn, batch_id),
        positions=await positions(conn, batch_id),
        instructions=await instructions(conn, batch_id),
        statements=await statements(conn, batch_id),
    )
