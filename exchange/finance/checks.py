"""The finance checks of ``exchange verify``, registered in ``verify.EXTRA_CHECKS`` on import.

They run inside verify's repeatable-read snapshot and stream through server-side cursors:

- **hash chain**: every block's hash is recomputed from its entries as they are now, so an
  entry, posting, lot move or lot edited, deleted or moved after it was sealed is named;
  no entry at or below the sealer's frontier is left out of the chain;
- **settlement batches**: each batch's obligations, positions, efficiency, instructions and
  carries are recomputed from the ledger's postings and compared; positions sum to zero;
  instruction + carry out = position + carried in; carries chain from batch to batch;
  every settlement entry the batches have passed over is in one;
- **statements**: their lines are regenerated from the ledger (count, digest, sums), each
  opening is the previous closing, the netted part equals the instruction plus the carry
  less what was carried in, and the last closing plus what is not batched yet is the
  merchant's settlement balance;
- **payments**: every confirmation is a settle entry of the instruction's amount, direction,
  merchant and batch, and every settle entry naming a batch is a recorded confirmation;
- **checkpoints**: each signed payload states the stored statement and the chain head.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange.domain.money import micro_to_decimal
from exchange.domain.netting import (
    HUB_ACCOUNTS,
    gross_total,
    net_total,
    netting_efficiency,
    payment_instructions,
)
from exchange.ledger import verify
from exchange.ledger.verify import SyncConn, Violation

from . import sql
from .chain import CANON_COLUMNS, GENESIS, block_hash, entry_digest
from .lines import BatchFigures, Grouper

LIMIT = 100
"""Most violations of one kind reported (the rest would repeat the story)."""


def _stream(conn: SyncConn, name: str, query: str, params: Any = None) -> Iterator[Any]:
    with conn.cursor(name=name) as cur:
        cur.itersize = 5_000
        cur.execute(query, params)
        yield from cur


# --- the hash chain ---------------------------------------------------------------------------


def check_chain(conn: SyncConn) -> list[Violation]:
    out: list[Violation] = []

    def report(message: str) -> None:
        if len(out) < LIMIT:
            out.append(Violation("hash-chain", message))

    entries = _stream(
        conn,
        "finance_chain_entries",
        f"SELECT ce.block_id, ce.ord, ce.entry_id, ce.digest, e.id IS NULL, {CANON_COLUMNS}"
        "  FROM chain_entries ce LEFT JOIN entries e ON e.id = ce.entry_id"
        " ORDER BY ce.block_id, ce.ord",
    )
    pending = next(entries, None)
    prev_hash, expected = GENESIS, 1
    for block_id, stored_prev, stored_hash, count in _stream(
        conn,
        "finance_chain_blocks",
        "SELECT id, prev_hash, hash, entry_count FROM chain_blocks ORDER BY id",
    ):
        if block_id != expected:
            report(f"block {expected} is missing (found block {block_id} next)")
        if bytes(stored_prev) != prev_hash:
            report(f"block {block_id}: its previous hash is not the hash of the block before")
        digests: list[bytes] = []
        while pending is not None and pending[0] == block_id:
            _, ord_, entry_id, digest, missing, *canon = pending
            if ord_ != len(digests):
                report(f"block {block_id}: entries out of order at position {len(digests)}")
            if missing:
                report(f"entry {entry_id} sealed in block {block_id} was deleted")
            elif entry_digest(canon) != bytes(digest):
                report(f"entry {entry_id} (block {block_id}) was changed after it was sealed")
            digests.append(bytes(digest))
            pending = next(entries, None)
        while pending is not None and pending[0] < block_id:
            report(f"entry {pending[2]} is sealed in block {pending[0]}, which is missing")
            pending = next(entries, None)
        if len(digests) != count:
            report(f"block {block_id}: {len(digests)} entries recorded, {count} sealed")
        if block_hash(bytes(stored_prev), digests) != bytes(stored_hash):
            report(f"block {block_id}: its hash does not match its entries")
        prev_hash, expected = bytes(stored_hash), block_id + 1
    while pending is not None:
        report(f"entry {pending[2]} is sealed in block {pending[0]}, which is missing")
        pending = next(entries, None)
    rows = conn.execute(
        "SELECT e.id FROM entries e, chain_state s WHERE s.id = 1 AND e.id <= s.frontier"
        "   AND NOT EXISTS (SELECT 1 FROM chain_entries c WHERE c.entry_id = e.id)"
        " ORDER BY e.id LIMIT %s",
        (LIMIT,),
    ).fetchall()
    for (entry_id,) in rows:
        report(f"entry {entry_id} is below the sealed frontier but not in the chain")
    return out


# --- settlement batches -----------------------------------------------------------------------


@dataclass
class _Stored:
    minor_unit: int
    entry_count: int
    gross: int
    net: int
    efficiency: Decimal
    hub_fees: int
    hub_rounding: int
    scan_from_block: int
    obligations: dict[tuple[str, str], int]
    positions: dict[str, tuple[int, int, int]]
    instructions: dict[str, int]
    statements: dict[str, tuple[int, int, int, int, int, bytes]]


def _stored_batches(conn: SyncConn) -> dict[int, _Stored]:
    batches: dict[int, _Stored] = {}
    for r in conn.execute(
        "SELECT id, minor_unit, entry_count, gross_micro, net_micro, efficiency, hub_fees_micro,"
        " hub_rounding_micro, scan_from_block FROM settlement_batches ORDER BY id"
    ):
        batches[int(r[0])] = _Stored(
            int(r[1]), int(r[2]), int(r[3]), int(r[4]), Decimal(r[5]), int(r[6]), int(r[7]),
            int(r[8]), {}, {}, {}, {},
        )  # fmt: skip
    for b, d, c, a in conn.execute(
        "SELECT batch_id, debtor, creditor, amount_micro FROM settlement_obligations"
    ):
        batches[b].obligations[(d, c)] = int(a)
    for b, p, pos, cin, cout in conn.execute(
        "SELECT batch_id, party, position_micro, carried_in_micro, carry_out_micro"
        " FROM settlement_positions"
    ):
        batches[b].positions[p] = (int(pos), int(cin), int(cout))
    for b, code, direction, amount in conn.execute(
        "SELECT i.batch_id, m.code, i.direction, i.amount_micro FROM settlement_instructions i"
        " JOIN merchants m ON m.id = i.merchant_id"
    ):
        batches[b].instructions[code] = int(amount) if direction == "from_hub" else -int(amount)
    for b, code, opening, closing, netted, payments, count, digest in conn.execute(
        "SELECT s.batch_id, m.code, s.opening_micro, s.closing_micro, s.netted_micro,"
        " s.payments_micro, s.line_count, s.digest FROM settlement_statements s"
        " JOIN merchants m ON m.id = s.merchant_id"
    ):
        batches[b].statements[code] = (
            int(opening), int(closing), int(netted), int(payments), int(count), bytes(digest),
        )  # fmt: skip
    return batches


def _recomputed(conn: SyncConn) -> Iterator[tuple[int, BatchFigures]]:
    asset = conn.execute(sql.SETTLEMENT_ASSET).fetchone()
    if asset is None:
        return
    scales = {str(c): int(s) for c, s in conn.execute(sql.SCALES).fetchall()}
    batch: int | None = None
    figures = BatchFigures(scales)
    grouper = Grouper()
    for row in _stream(conn, "finance_batch_legs", sql.ALL_BATCHED_LEGS, {"asset": asset[0]}):
        if batch is not None and row[0] != batch:
            last = grouper.flush()
            if last is not None:
                figures.add(last)
            yield batch, figures
            figures = BatchFigures(scales)
        batch = int(row[0])
        entry = grouper.feed(row[1:])
        if entry is not None:
            figures.add(entry)
    if batch is not None:
        last = grouper.flush()
        if last is not None:
            figures.add(last)
        yield batch, figures


def _compare_batch(
    batch: int,
    stored: _Stored,
    figures: BatchFigures,
    carried: dict[str, int],
    closings: dict[str, int],
) -> list[Violation]:
    out: list[Violation] = []

    def bad(check: str, message: str) -> None:
        out.append(Violation(check, f"batch {batch}: {message}"))

    if figures.entries != stored.entry_count:
        bad("batch-entries", f"{figures.entries} entries now, {stored.entry_count} at the close")
    if figures.sorted_obligations() != dict(sorted(stored.obligations.items())):
        bad("batch-obligations", "the obligations differ from the ledger's entries")
    positions = figures.sorted_positions()
    for party in sorted(set(positions) | set(stored.positions)):
        have = stored.positions.get(party, (0, 0, 0))[0]
        if positions.get(party, 0) != have:
            want = positions.get(party, 0)
            bad("batch-positions", f"{party}: position {have}, the ledger gives {want}")
    total = sum(p[0] for p in stored.positions.values())
    if total != 0:
        bad("batch-zero-sum", f"the net positions sum to {total}, not 0")
    for party, (position, carried_in, carry_out) in sorted(stored.positions.items()):
        previous = carried.get(party, 0)
        if carried_in != previous:
            bad("batch-carry", f"{party} carried in {carried_in}, the last batch left {previous}")
        paid = stored.instructions.get(party, 0)
        if party not in HUB_ACCOUNTS and paid + carry_out != position + carried_in:
            bad("batch-instructions", f"{party}: instruction + carry out != position + carry in")
    missing_carry = {p for p, a in carried.items() if a and p not in stored.positions}
    for party in sorted(missing_carry):
        bad("batch-carry", f"{party}'s carry of {carried[party]} was dropped")
    stored_positions = {p: v[0] for p, v in stored.positions.items()}
    again = payment_instructions(dict(sorted(stored_positions.items())), stored.minor_unit, carried)
    if {i.party: i.signed_micro for i in again.instructions} != stored.instructions:
        bad("batch-instructions", "the instructions do not follow from the positions and carries")
    if again.carry != {p: v[2] for p, v in stored.positions.items() if v[2]}:
        bad("batch-carry", "the carries do not follow from the positions")
    gross, net = gross_total(stored.obligations), net_total(stored_positions)
    if (gross, net) != (stored.gross, stored.net):
        bad("batch-totals", f"gross/net {stored.gross}/{stored.net}, recomputed {gross}/{net}")
    elif netting_efficiency(gross, net) != stored.efficiency:
        bad("batch-totals", f"efficiency {stored.efficiency} is not 1 - net/gross")
    if (again.hub_fees, again.hub_rounding) != (stored.hub_fees, stored.hub_rounding):
        bad("batch-totals", "the hub's fees or rounding differ from the positions")
    for code, (opening, closing, netted, payments, count, digest) in sorted(
        stored.statements.items()
    ):
        sums = figures.statement(code)
        if (sums.line_count, sums.digest) != (count, digest):
            bad("statement-lines", f"{code}: the statement's lines differ from the ledger's")
        if (sums.netted_micro, sums.payments_micro) != (netted, payments):
            bad("statement-sums", f"{code}: the lines do not sum to the statement's figures")
        if opening != closings.get(code, 0):
            bad("statement-opening", f"{code}: opening {opening} is not the last closing")
        if closing != opening + netted + payments:
            bad("statement-closing", f"{code}: opening + lines is not the closing")
        if netted != stored.positions.get(code, (0, 0, 0))[0]:
            bad("statement-position", f"{code}: the netted lines are not the position")
        closings[code] = closing
    return out


def check_batches(conn: SyncConn) -> list[Violation]:
    stored = _stored_batches(conn)
    out: list[Violation] = []
    carried: dict[str, int] = {}
    closings: dict[str, int] = {}
    seen: set[int] = set()
    recomputed = dict(_recomputed(conn))
    for batch, record in stored.items():
        seen.add(batch)
        figures = recomputed.pop(batch, None) or BatchFigures({})
        out += _compare_batch(batch, record, figures, carried, closings)
        carried = {p: v[2] for p, v in record.positions.items() if v[2]}
    for batch in sorted(recomputed):
        out.append(Violation("batch-entries", f"entries are assigned to a missing batch {batch}"))
    if stored:
        last = stored[max(stored)]
        rows = conn.execute(
            "SELECT DISTINCT ce.entry_id FROM chain_entries ce JOIN postings p"
            "   ON p.entry_id = ce.entry_id"
            "  JOIN currencies c ON c.id = p.asset_id AND c.kind = 'settlement'"
            " WHERE ce.block_id < %s AND NOT EXISTS"
            "   (SELECT 1 FROM settlement_batch_entries b WHERE b.entry_id = ce.entry_id)"
            " ORDER BY 1 LIMIT %s",
            (last.scan_from_block, LIMIT),
        ).fetchall()
        out += [
            Violation("batch-coverage", f"settlement entry {r[0]} was passed over by every batch")
            for r in rows
        ]
    out += _check_balances(conn, closings)
    return out[: LIMIT * 4]


def _check_balances(conn: SyncConn, closings: dict[str, int]) -> list[Violation]:
    """Last closing + what no batch holds yet = each merchant's settlement balance."""
    rows = conn.execute(
        "SELECT m.code,"
        "  (SELECT coalesce(sum(b.amount), 0) FROM balances b WHERE b.account_id = a.id),"
        "  (SELECT coalesce(sum(p.amount), 0) FROM postings p WHERE p.account_id = a.id"
        "     AND NOT EXISTS (SELECT 1 FROM settlement_batch_entries x"
        "                      WHERE x.entry_id = p.entry_id))"
        "  FROM merchants m JOIN accounts a ON a.kind = 'settlement' AND a.merchant_id = m.id"
        " ORDER BY m.code"
    ).fetchall()
    out = []
    for code, balance, unbatched in rows:
        if closings.get(code, 0) + int(unbatched) != int(balance):
            out.append(
                Violation(
                    "statement-ledger",
                    f"{code}: last closing {micro_to_decimal(closings.get(code, 0))} + unbatched"
                    f" {micro_to_decimal(int(unbatched))} is not its balance"
                    f" {micro_to_decimal(int(balance))}",
                )
            )
    return out


# --- payments and checkpoints -----------------------------------------------------------------


def check_payments(conn: SyncConn) -> list[Violation]:
    out: list[Violation] = []
    for r in _stream(
        conn,
        "finance_payments",
        "SELECT p.batch_id, m.code, p.entry_id, p.direction, p.amount_micro, p.external_ref,"
        "       i.direction, i.amount_micro, e.kind, e.merchant_id = p.merchant_id,"
        "       e.details->>'batch', e.details->>'externalRef',"
        "       (SELECT sum(q.amount) FROM postings q JOIN accounts a ON a.id = q.account_id"
        "         WHERE q.entry_id = e.id AND a.kind = 'settlement'"
        "           AND a.merchant_id = p.merchant_id)"
        "  FROM settlement_payments p JOIN merchants m ON m.id = p.merchant_id"
        "  JOIN settlement_instructions i"
        "    ON i.batch_id = p.batch_id AND i.merchant_id = p.merchant_id"
        "  LEFT JOIN entries e ON e.id = p.entry_id ORDER BY p.batch_id, m.code",
    ):
        batch, code, entry, direction, amount, ref = r[:6]
        where = f"batch {batch} {code} (entry {entry})"
        signed = amount if direction == "from_hub" else -amount
        if r[8] != "settle" or not r[9]:
            out.append(Violation("payment-entry", f"{where}: no settle entry of the merchant"))
        elif (direction, amount) != (r[6], r[7]):
            out.append(Violation("payment-amount", f"{where}: differs from the instruction"))
        elif r[10] != str(batch) or r[11] != ref:
            out.append(Violation("payment-entry", f"{where}: the entry names another batch/ref"))
        elif r[12] is None or int(r[12]) != -signed:
            out.append(Violation("payment-amount", f"{where}: the settle entry moves {r[12]}"))
    rows = conn.execute(
        "SELECT e.id, e.details->>'batch' FROM entries e WHERE e.kind = 'settle'"
        "   AND e.details ? 'batch' AND NOT EXISTS"
        "   (SELECT 1 FROM settlement_payments p WHERE p.entry_id = e.id) LIMIT %s",
        (LIMIT,),
    ).fetchall()
    out += [
        Violation("payment-record", f"settle entry {e} pays batch {b} but is not recorded")
        for e, b in rows
    ]
    return out[:LIMIT]


def check_checkpoints(conn: SyncConn) -> list[Violation]:
    out: list[Violation] = []
    for r in conn.execute(
        "SELECT s.batch_id, m.code, s.opening_micro, s.closing_micro, s.line_count, s.digest,"
        "       s.payload, b.chain_block, b.chain_head, k.hash"
        "  FROM settlement_statements s JOIN merchants m ON m.id = s.merchant_id"
        "  JOIN settlement_batches b ON b.id = s.batch_id"
        "  LEFT JOIN chain_blocks k ON k.id = b.chain_block"
        " ORDER BY s.batch_id, m.code"
    ):
        batch, code, opening, closing, count, digest, payload, block, head, block_hash_ = r
        try:
            body = json.loads(payload)
        except ValueError:
            out.append(Violation("checkpoint", f"batch {batch} {code}: unreadable payload"))
            continue
        expected = {
            "batch": batch,
            "chainBlock": block or 0,
            "chainHead": bytes(head).hex(),
            "closing": micro_to_decimal(closing),
            "digest": bytes(digest).hex(),
            "lines": count,
            "merchant": code,
            "opening": micro_to_decimal(opening),
        }
        if body != expected:
            out.append(Violation("checkpoint", f"batch {batch} {code}: the payload differs"))
        if bytes(head) != (GENESIS if block_hash_ is None else bytes(block_hash_)):
            out.append(Violation("checkpoint", f"batch {batch}: chain head is not block {block}"))
    return out[:LIMIT]


FINANCE_CHECKS: tuple[tuple[str, Callable[[SyncConn], list[Violation]]], ...] = (
    ("hash chain of the journal", check_chain),
    ("settlement batches and statements", check_batches),
    ("confirmed payments", check_payments),
    ("signed checkpoints", check_checkpoints),
)


def finance_violations(conn: SyncConn) -> list[Violation]:
    """Every finance check, in the caller's transaction."""
    out: list[Violation] = []
    for _name, check in FINANCE_CHECKS:
        out += check(conn)
    return out


def register() -> None:
    """Add the finance checks to ``exchange verify`` (once)."""
    for item in FINANCE_CHECKS:
        if item not in verify.EXTRA_CHECKS:
            verify.EXTRA_CHECKS.append(item)


register()
