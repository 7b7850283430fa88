"""Conservation checks run after every scenario: the bench fails loudly when one breaks.

- every asset sums to zero over all balance rows;
- for every point currency, minus its issuer's outstanding equals the sum of its wallets;
- every entry written since the scenario started sums to zero per asset;
- the entries written match the requests the hub acknowledged (when a count is given).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from bench.pg import BenchError


@dataclass(frozen=True)
class Mark:
    """Where the journal stood before a scenario."""

    entry_id: int


def mark(url: str) -> Mark:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()
    assert row is not None
    return Mark(int(row[0]))


def cleanups(url: str) -> int:
    """Autovacuum and autoanalyze runs so far on the database's tables (a diagnostic: a
    scenario during which they ran paid for them, whoever's writes they cleaned up)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint"
            "  FROM pg_stat_user_tables"
        ).fetchone()
    assert row is not None
    return int(row[0])


def conservation(url: str, since: Mark, *, expected_entries: int | None, scenario: str) -> int:
    """Check the invariants; return the number of entries written since ``since``."""
    problems: list[str] = []
    with psycopg.connect(url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for code, total in conn.execute(
            "SELECT c.code, sum(b.amount) FROM balances b"
            "  JOIN accounts a ON a.id = b.account_id JOIN currencies c ON c.id = a.asset_id"
            " GROUP BY c.code HAVING sum(b.amount) <> 0"
        ):
            problems.append(f"asset {code} sums to {total}, not 0")
        for code, outstanding, wallets in conn.execute(
            "SELECT c.code,"
            "       coalesce(sum(b.amount) FILTER (WHERE a.kind = 'outstanding'), 0),"
            "       coalesce(sum(b.amount) FILTER (WHERE a.kind = 'wallet'), 0)"
            "  FROM currencies c JOIN accounts a ON a.asset_id = c.id"
            "  JOIN balances b ON b.account_id = a.id"
            " WHERE c.kind = 'points' GROUP BY c.code"
        ):
            if -int(outstanding) != int(wallets):
                problems.append(f"{code}: outstanding {outstanding} but wallets hold {wallets}")
        for entry_id, asset_id, total in conn.execute(
            "SELECT entry_id, asset_id, sum(amount) FROM postings WHERE entry_id > %s"
            " GROUP BY entry_id, asset_id HAVING sum(amount) <> 0 LIMIT 10",
            (since.entry_id,),
        ):
            problems.append(f"entry {entry_id} does not balance: asset {asset_id} sums to {total}")
        row = conn.execute(
            "SELECT count(*) FROM entries WHERE id > %s", (since.entry_id,)
        ).fetchone()
        conn.rollback()
    assert row is not None
    written = int(row[0])
    if expected_entries is not None and written != expected_entries:
        problems.append(
            f"{written} entries written but the hub acknowledged {expected_entries} earns"
        )
    if problems:
        raise BenchError(f"conservation check failed after {scenario}:\n  " + "\n  ".join(problems))
    return written
