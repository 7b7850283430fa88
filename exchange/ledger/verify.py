"""Verification of a live ledger: replay every entry from empty and check every invariant.

Each check returns a list of :class:`Violation` (beancount style: all problems, not the
first). The replay streams postings and lot moves in entry order through server-side
cursors, so memory grows with the number of accounts and lots, not of entries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

SyncConn = psycopg.Connection[Any]
Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``."""

STREAM_BATCH = 50_000


@dataclass(frozen=True)
class Violation:
    check: str
    message: str


@dataclass
class Report:
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    lots: int = 0
    violations: list[Violation] | None = None

    @property
    def ok(self) -> bool:
        return not self.violations


def _stream(conn: SyncConn, name: str, sql: str) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=name) as cur:
        cur.itersize = STREAM_BATCH
        cur.execute(sql)
        yield from cur


def _scalar(conn: SyncConn, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def check_entries_balance(conn: SyncConn) -> list[Violation]:
    rows = conn.execute(
        "SELECT entry_id, asset_id, sum(amount) FROM postings GROUP BY 1, 2"
        " HAVING sum(amount) <> 0 ORDER BY 1 LIMIT 100"
    ).fetchall()
    out = [
        Violation("entry-zero-sum", f"entry {e} asset {a} sums to {s}, not 0") for e, a, s in rows
    ]
    rows = conn.execute(
        "SELECT e.id FROM entries e WHERE NOT EXISTS"
        " (SELECT 1 FROM postings p WHERE p.entry_id = e.id) ORDER BY 1 LIMIT 100"
    ).fetchall()
    out += [Violation("entry-has-postings", f"entry {r[0]} has no postings") for r in rows]
    rows = conn.execute(
        "SELECT p.entry_id, p.seq FROM postings p JOIN accounts a ON a.id = p.account_id"
        " WHERE a.asset_id <> p.asset_id LIMIT 100"
    ).fetchall()
    out += [
        Violation("posting-asset", f"entry {e} posting {s} is in another asset than its account")
        for e, s in rows
    ]
    rows = conn.execute(
        "SELECT p.entry_id FROM postings p LEFT JOIN entries e ON e.id = p.entry_id"
        " WHERE e.id IS NULL LIMIT 100"
    ).fetchall()
    out += [Violation("posting-orphan", f"postings of a missing entry {r[0]}") for r in rows]
    rows = conn.execute(
        "SELECT p.entry_id, p.account_id FROM postings p"
        " LEFT JOIN accounts a ON a.id = p.account_id WHERE a.id IS NULL LIMIT 100"
    ).fetchall()
    out += [
        Violation("posting-orphan", f"entry {e} posts to a missing account {a}") for e, a in rows
    ]
    rows = conn.execute(
        "SELECT l.id FROM lots l LEFT JOIN accounts a ON a.id = l.wallet_id"
        " LEFT JOIN entries e ON e.id = l.entry_id WHERE a.id IS NULL OR e.id IS NULL LIMIT 100"
    ).fetchall()
    out += [Violation("lot-orphan", f"lot {r[0]} of a missing wallet or entry") for r in rows]
    rows = conn.execute(
        "SELECT e.id FROM entries e LEFT JOIN merchants m ON m.id = e.merchant_id"
        " WHERE e.merchant_id IS NOT NULL AND m.id IS NULL LIMIT 100"
    ).fetchall()
    out += [Violation("entry-orphan", f"entry {r[0]} of a missing merchant") for r in rows]
    return out


def replay(conn: SyncConn, progress: Progress | None = None) -> tuple[Report, list[Violation]]:
    """Rebuild every balance and lot remainder from the journal and compare."""
    total = _scalar(conn, "SELECT count(*) FROM postings")
    kinds: dict[int, str] = dict(conn.execute("SELECT id, kind FROM accounts").fetchall())
    balances: dict[int, int] = defaultdict(int)
    violations: list[Violation] = []
    entries = 0
    done = 0
    last_entry = -1
    for entry_id, account_id, amount, kind in _stream(
        conn,
        "verify_postings",
        "SELECT p.entry_id, p.account_id, p.amount, e.kind FROM postings p"
        " JOIN entries e ON e.id = p.entry_id ORDER BY p.entry_id, p.seq",
    ):
        if entry_id != last_entry:
            entries += 1
            last_entry = entry_id
        balances[account_id] += amount
        if (
            kinds.get(account_id) == "wallet"
            and balances[account_id] < 0
            and amount < 0
            and kind != "reverse"
        ):
            violations.append(
                Violation(
                    "wallet-floor",
                    f"wallet {account_id} went below zero at {kind} entry {entry_id}",
                )
            )
        done += 1
        if progress and done % STREAM_BATCH == 0:
            progress("replay postings", done, total)
    if progress:
        progress("replay postings", done, total)
    stored = dict(
        conn.execute("SELECT account_id, sum(amount) FROM balances GROUP BY 1").fetchall()
    )
    for account_id in sorted(set(stored) | set(balances)):
        want = balances.get(account_id, 0)
        have = int(stored.get(account_id, 0))
        if want != have:
            violations.append(
                Violation(
                    "replay-balance",
                    f"account {account_id}: stored balance {have}, journal gives {want}",
                )
            )
    lots = _replay_lots(conn, violations, progress)
    report = Report(entries=entries, postings=done, accounts=len(kinds), lots=lots)
    return report, violations


def _replay_lots(conn: SyncConn, violations: list[Violation], progress: Progress | None) -> int:
    original: dict[int, int] = {}
    stored: dict[int, int] = {}
    for lot_id, orig, remaining in _stream(
        conn, "verify_lots", "SELECT id, original, remaining FROM lots"
    ):
        original[lot_id] = orig
        stored[lot_id] = remaining
    rebuilt = dict(original)
    for lot_id, amount in _stream(
        conn, "verify_lot_moves", "SELECT lot_id, amount FROM lot_moves ORDER BY entry_id"
    ):
        if lot_id not in rebuilt:
            violations.append(Violation("lot-move-orphan", f"moves of a missing lot {lot_id}"))
            continue
        rebuilt[lot_id] += amount
    for lot_id in sorted(original):
        if rebuilt[lot_id] != stored[lot_id]:
            violations.append(
                Violation(
                    "replay-lot",
                    f"lot {lot_id}: stored remainder {stored[lot_id]},"
                    f" its moves give {rebuilt[lot_id]}",
                )
            )
        if not 0 <= rebuilt[lot_id] <= original[lot_id]:
            violations.append(
                Violation("lot-range", f"lot {lot_id} remainder {rebuilt[lot_id]} out of range")
            )
    if progress:
        progress("replay lots", len(original), len(original))
    return len(original)


def check_conservation(conn: SyncConn) -> list[Violation]:
    out: list[Violation] = []
    rows = conn.execute(
        "SELECT c.code,"
        "  coalesce(sum(b.amount) FILTER (WHERE a.kind = 'outstanding'), 0),"
        "  coalesce(sum(b.amount) FILTER (WHERE a.kind = 'wallet'), 0),"
        "  coalesce(sum(b.amount) FILTER (WHERE a.kind NOT IN ('outstanding', 'wallet')), 0)"
        "  FROM currencies c JOIN accounts a ON a.asset_id = c.id"
        "  JOIN balances b ON b.account_id = a.id"
        " WHERE c.kind = 'points' GROUP BY c.code ORDER BY c.code"
    ).fetchall()
    for code, outstanding, wallets, other in rows:
        if -outstanding != wallets:
            out.append(
                Violation(
                    "outstanding-equals-wallets",
                    f"{code}: outstanding {outstanding} but wallets hold {wallets}",
                )
            )
        if other:
            out.append(Violation("points-accounts", f"{code}: {other} held outside wallets"))
    total = _scalar(
        conn,
        "SELECT sum(b.amount) FROM balances b JOIN accounts a ON a.id = b.account_id"
        " JOIN currencies c ON c.id = a.asset_id WHERE c.kind = 'settlement'",
    )
    if total != 0:
        out.append(Violation("settlement-zero-sum", f"settlement accounts sum to {total}"))
    return out


def check_lots_cover_wallets(conn: SyncConn) -> list[Violation]:
    rows = conn.execute(
        "SELECT a.id, b.amount, coalesce(l.total, 0) FROM accounts a"
        "  JOIN balances b ON b.account_id = a.id"
        "  LEFT JOIN (SELECT wallet_id, sum(remaining) AS total FROM lots GROUP BY 1) l"
        "    ON l.wallet_id = a.id"
        " WHERE a.kind = 'wallet'"
        "   AND ((b.amount >= 0 AND coalesce(l.total, 0) <> b.amount)"
        "     OR (b.amount < 0 AND coalesce(l.total, 0) <> 0))"
        " ORDER BY a.id LIMIT 100"
    ).fetchall()
    return [
        Violation("lots-equal-wallet", f"wallet {w}: balance {bal}, lots hold {lots}")
        for w, bal, lots in rows
    ]


def check_idempotency(conn: SyncConn) -> list[Violation]:
    out: list[Violation] = []
    rows = conn.execute(
        "SELECT r.initiator, r.idempotency_key FROM requests r"
        " WHERE r.refusal_code IS NULL AND NOT EXISTS (SELECT 1 FROM entries e"
        "   WHERE e.initiator = r.initiator AND e.idempotency_key = r.idempotency_key)"
        " LIMIT 100"
    ).fetchall()
    out += [
        Violation("request-outcome", f"request {i}/{k} has neither an entry nor a refusal")
        for i, k in rows
    ]
    rows = conn.execute(
        "SELECT e.initiator, e.idempotency_key FROM entries e"
        " WHERE e.initiator NOT LIKE 'system:%%' AND NOT EXISTS (SELECT 1 FROM requests r"
        "   WHERE r.initiator = e.initiator AND r.idempotency_key = e.idempotency_key"
        "     AND r.fingerprint = e.fingerprint AND r.refusal_code IS NULL)"
        " LIMIT 100"
    ).fetchall()
    out += [
        Violation("entry-request", f"entry {i}/{k} has no matching request record") for i, k in rows
    ]
    return out


def check_reversals(conn: SyncConn) -> list[Violation]:
    rows = conn.execute(
        "SELECT o.id, abs((o.details->>'points')::bigint), sum((r.details->>'points')::bigint)"
        "  FROM entries r JOIN entries o ON o.id = r.reverses_entry_id"
        " GROUP BY o.id, o.details"
        " HAVING sum((r.details->>'points')::bigint) > abs((o.details->>'points')::bigint)"
        " LIMIT 100"
    ).fetchall()
    return [
        Violation("reversal-total", f"entry {o}: {done} of {whole} points reversed")
        for o, whole, done in rows
    ]


CHECKS: tuple[tuple[str, Callable[[SyncConn], list[Violation]]], ...] = (
    ("entries balance per asset", check_entries_balance),
    ("outstanding equals wallets; settlement sums to zero", check_conservation),
    ("lots cover wallets", check_lots_cover_wallets),
    ("one outcome per idempotency key", check_idempotency),
    ("reversals within originals", check_reversals),
)

EXTRA_CHECKS: list[tuple[str, Callable[[SyncConn], list[Violation]]]] = []
"""Further checks registered by other parts of the hub (settlement, tamper evidence)."""


def verify(conn: SyncConn, progress: Progress | None = None) -> Report:
    """Run every check in one repeatable-read snapshot of the ledger."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    report, violations = replay(conn, progress)
    for name, check in (*CHECKS, *EXTRA_CHECKS):
        if progress:
            progress(name, 0, 1)
        violations += check(conn)
    report.violations = violations
    conn.rollback()
    return report
