"""Merchant statements: every line behind a merchant's figures in one batch.

A statement is regenerated from the ledger on every read, in entry order, through a
server-side cursor: memory stays bounded however long it is. Its lines are the ones the
batch's close digested, so they can be checked against the signed checkpoint.

CSV layout (header, then records; amounts are exact decimals, times ISO 8601 UTC)::

    record,batch,merchant,entry,time,kind,counterparty,currency,points,rate,value
    opening,...                          value: the position before the batch
    line,...                             one per line (entry, time, kind, counterparty,
                                         currency, points, rate, signed value)
    closing,...                          value: opening + the lines
    position,...                         value: the netted lines (the batch's net position)
    carried_in,...                       value: rounding remainder from the last batch
    instruction,...kind=to_hub|from_hub  value: the payment, signed (negative: pays the hub)
    carried_out,...                      value: remainder carried to the next batch
    checkpoint,...                       entry: chain block, kind: key id,
                                         counterparty: chain head, value: signature
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from exchange.domain.money import micro_to_decimal
from exchange.ledger.engine import Conn

from . import reports, sql
from .lines import LINE_FIELDS, Line, merchant_lines
from .stream import stream_entries

CSV_HEADER = ["record", "batch", "merchant", *LINE_FIELDS]


@dataclass(frozen=True)
class Statement:
    batch: reports.Batch
    summary: reports.StatementSummary
    position: reports.Position
    instruction: reports.Instruction | None
    asset_id: int
    scales: dict[str, int]

    @property
    def merchant(self) -> str:
        return self.summary.merchant

    @property
    def instruction_micro(self) -> int:
        """The payment, signed: negative when the merchant pays the hub; 0 for none."""
        return 0 if self.instruction is None else self.instruction.signed_micro


async def load_statement(conn: Conn, batch_id: int, merchant_id: int) -> Statement | None:
    """The statement summary of a merchant in a batch (``None`` when there is none)."""
    batch = await reports.get_batch(conn, batch_id)
    if batch is None:
        return None
    found = await reports.statements(conn, batch_id, merchant_id)
    if not found:
        return None
    summary = found[0]
    positions = await reports.positions(conn, batch_id, summary.merchant)
    position = positions[0] if positions else reports.Position(summary.merchant, 0, 0, 0)
    instructions = await reports.instructions(conn, batch_id, merchant_id)
    cur = await conn.execute(sql.SETTLEMENT_ASSET)
    asset = await cur.fetchone()
    assert asset is not None
    cur = await conn.execute(sql.SCALES)
    scales = {str(c): int(s) for c, s in await cur.fetchall()}
    return Statement(
        batch=batch,
        summary=summary,
        position=position,
        instruction=instructions[0] if instructions else None,
        asset_id=int(asset[0]),
        scales=scales,
    )


async def statement_lines(
    conn: Conn, statement: Statement, *, after_entry: int = 0
) -> AsyncGenerator[Line, None]:
    """The statement's lines in order, from the entries after ``after_entry``.

    Needs a transaction (the entries stream through a server-side cursor).
    """
    query = sql.ENTRY_LEGS.format(entries=sql.MERCHANT_BATCH_ENTRY_IDS)
    params = {
        "asset": statement.asset_id,
        "batch": statement.batch.id,
        "after": after_entry,
        "account": statement.summary.account_id,
    }
    async for entry in stream_entries(conn, query, params):
        for line in merchant_lines(entry, statement.merchant, statement.scales):
            yield line


def _summary(statement: Statement, record: str, value: int, kind: str = "") -> list[str]:
    return [
        record,
        str(statement.batch.id),
        statement.merchant,
        "",
        "",
        kind,
        "",
        statement.batch.currency,
        "",
        "",
        micro_to_decimal(value),
    ]


async def csv_records(conn: Conn, statement: Statement) -> AsyncIterator[list[str]]:
    """The statement as CSV records (lists of text), header first."""
    s = statement.summary
    yield CSV_HEADER
    yield _summary(statement, "opening", s.opening_micro)
    async for line in statement_lines(conn, statement):
        yield ["line", str(statement.batch.id), statement.merchant, *line.fields()]
    yield _summary(statement, "closing", s.closing_micro)
    yield _summary(statement, "position", s.netted_micro)
    yield _summary(statement, "carried_in", statement.position.carried_in_micro)
    direction = "" if statement.instruction is None else statement.instruction.direction
    yield _summary(statement, "instruction", statement.instruction_micro, direction)
    yield _summary(statement, "carried_out", statement.position.carry_out_micro)
    yield [
        "checkpoint",
        str(statement.batch.id),
        statement.merchant,
        str(statement.batch.chain_block),
        "",
        s.key_id,
        statement.batch.chain_head.hex(),
        "",
        "",
        "",
        s.signature,
    ]


def csv_text(record: list[str]) -> str:
    """One CSV record as text (RFC 4180 quoting, CRLF line end)."""
    out = io.StringIO()
    csv.writer(out).writerow(record)
    return out.getvalue()
