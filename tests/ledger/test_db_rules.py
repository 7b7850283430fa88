"""The database refuses to corrupt the ledger, even from raw SQL."""

from __future__ import annotations

import psycopg
import pytest

from exchange.services import points
from tests.ledger.support import Hub

pytestmark = pytest.mark.anyio


async def _earn(hub: Hub) -> int:
    out = await points.earn(
        hub.pool,
        hub.merchants["a"],
        member_id=hub.member_ids[0],
        currency_code="APT",
        points=100,
        idempotency_key="e1",
    )
    return out.entry_id


def _accounts(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT w.id, o.id, w.asset_id FROM accounts w JOIN accounts o"
            "  ON o.asset_id = w.asset_id AND o.kind = 'outstanding'"
            " WHERE w.kind = 'wallet' LIMIT 1"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])


def _new_entry(conn: psycopg.Connection[object], kind: str = "adjust") -> int:
    row = conn.execute(
        "INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, effective_at)"
        " VALUES (%s, 'raw', md5(random()::text), '\\x00', now()) RETURNING id",
        (kind,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _refused(url: str, statements: list[tuple[str, tuple[object, ...]]], state: str) -> None:
    """Run the statements and commit; the database must refuse with SQLSTATE ``state``."""
    with psycopg.connect(url) as conn:
        with pytest.raises(psycopg.Error) as exc:  # noqa: PT012 - refused at any statement
            for sql, params in statements:
                conn.execute(sql, params)
            conn.commit()
        assert exc.value.sqlstate == state, exc.value
        conn.rollback()


async def test_an_unbalanced_entry_is_refused(hub: Hub) -> None:
    await _earn(hub)
    wallet, outstanding, asset = _accounts(hub.url)
    before = await hub.balances()
    with psycopg.connect(hub.url) as conn:
        entry = _new_entry(conn)
        with pytest.raises(psycopg.Error) as exc:
            conn.execute(
                "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount) VALUES"
                " (%s, 1, %s, %s, 10), (%s, 2, %s, %s, -9)",
                (entry, wallet, asset, entry, outstanding, asset),
            )
        assert exc.value.sqlstate == "EX003"
    assert await hub.balances() == before


async def test_an_entry_is_written_by_one_statement(hub: Hub) -> None:
    """Each statement leaves every entry it wrote to balanced: an entry's legs cannot be
    split over two statements, even when they would balance at commit."""
    await _earn(hub)
    wallet, outstanding, asset = _accounts(hub.url)
    before = await hub.balances()
    _refused(
        hub.url,
        [
            (
                "WITH e AS (INSERT INTO entries (kind, initiator, idempotency_key, fingerprint,"
                " effective_at) VALUES ('adjust', 'raw', 'split', '\\x00', now()) RETURNING id)"
                " INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
                " SELECT id, 1, %s, %s, 10 FROM e",
                (wallet, asset),
            ),
            (
                "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
                " SELECT id, 2, %s, %s, -10 FROM entries WHERE idempotency_key = 'split'",
                (outstanding, asset),
            ),
        ],
        "EX003",
    )
    # One statement with both legs is accepted, and moves both balances once.
    with psycopg.connect(hub.url) as conn:
        entry = _new_entry(conn)
        conn.execute(
            "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount) VALUES"
            " (%s, 1, %s, %s, 10), (%s, 2, %s, %s, -10)",
            (entry, wallet, asset, entry, outstanding, asset),
        )
        conn.commit()
    after = await hub.balances()
    moved = sorted(after[k] - before[k] for k in after if after[k] != before.get(k))
    assert moved == [-10, 10]


_MANY_ENTRIES = (
    "WITH e AS (INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, effective_at)"
    "  SELECT 'adjust', 'raw', %s || g, '\\x00', now() FROM generate_series(1, %s) AS g"
    "  RETURNING id)"
    " INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
    " SELECT id, 1, %s, %s, 1 FROM e UNION ALL SELECT id, 2, %s, %s, -1 FROM e"
)


async def test_the_posting_rules_read_none_of_the_journal(hub: Hub) -> None:
    """The checks of a statement look at its own postings only: writing 200 entries reads
    no row of `postings`, whatever the history (a check that re-summed the entries from the
    journal could walk all of it)."""
    await _earn(hub)
    wallet, outstanding, asset = _accounts(hub.url)
    legs = (wallet, asset, outstanding, asset)
    with psycopg.connect(hub.url) as conn:
        conn.execute(_MANY_ENTRIES, ("history-", 2000, *legs))
        conn.commit()
        conn.execute("ANALYZE postings")
        conn.commit()
        conn.execute(_MANY_ENTRIES, ("new-", 200, *legs))
        read = conn.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
            "  FROM pg_stat_xact_user_tables WHERE relname = 'postings'"
        ).fetchone()
        conn.commit()
    assert read == (0,)
    # A second statement adding balanced legs to a balanced entry keeps it balanced, and is
    # accepted; one adding unbalanced legs is refused.
    with psycopg.connect(hub.url) as conn:
        entry = _new_entry(conn)
        sql = (
            "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount) VALUES"
            " (%s, %s, %s, %s, %s), (%s, %s, %s, %s, %s)"
        )
        conn.execute(sql, (entry, 1, wallet, asset, 5, entry, 2, outstanding, asset, -5))
        conn.execute(sql, (entry, 3, wallet, asset, 2, entry, 4, outstanding, asset, -2))
        conn.commit()
        total = conn.execute(
            "SELECT sum(amount) FROM postings WHERE entry_id = %s", (entry,)
        ).fetchone()
    assert total == (0,)
    _refused(
        hub.url, [(sql, (entry, 5, wallet, asset, 2, entry, 6, outstanding, asset, -1))], "EX003"
    )


async def test_postings_and_entries_are_append_only(hub: Hub) -> None:
    entry = await _earn(hub)
    spent = await points.redeem(
        hub.pool,
        hub.merchants["b"],
        member_id=hub.member_ids[0],
        currency_code="APT",
        points=10,
        idempotency_key="r1",
    )
    for sql in (
        "UPDATE postings SET amount = amount * 2 WHERE entry_id = %s",
        "DELETE FROM postings WHERE entry_id = %s",
        "UPDATE entries SET kind = 'adjust' WHERE id = %s",
        "DELETE FROM entries WHERE id = %s",
    ):
        _refused(hub.url, [(sql, (entry,))], "EX004")
    _refused(
        hub.url,
        [("UPDATE lot_moves SET amount = 1 WHERE entry_id = %s", (spent.entry_id,))],
        "EX004",
    )
    _refused(hub.url, [("DELETE FROM lot_moves", ())], "EX004")
    for table in ("postings", "entries"):
        _refused(hub.url, [(f"TRUNCATE {table} CASCADE", ())], "EX004")
    assert hub.verify() == []


async def test_balances_and_lots_move_only_through_the_journal(hub: Hub) -> None:
    await _earn(hub)
    _refused(hub.url, [("UPDATE balances SET amount = amount + 1", ())], "EX005")
    _refused(hub.url, [("DELETE FROM balances", ())], "EX005")
    _refused(hub.url, [("UPDATE lots SET remaining = 0", ())], "EX005")
    assert hub.verify() == []


async def test_a_wallet_cannot_go_negative_outside_a_reversal(hub: Hub) -> None:
    await _earn(hub)
    wallet, outstanding, asset = _accounts(hub.url)
    with psycopg.connect(hub.url) as conn:
        entry = _new_entry(conn, "redeem")
        with pytest.raises(psycopg.Error) as exc:
            conn.execute(
                "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount) VALUES"
                " (%s, 1, %s, %s, -101), (%s, 2, %s, %s, 101)",
                (entry, wallet, asset, entry, outstanding, asset),
            )
        assert exc.value.sqlstate == "EX001"
    assert await hub.wallet(hub.member_ids[0], "APT") == 100


async def test_a_posting_in_the_wrong_asset_is_refused(hub: Hub) -> None:
    await _earn(hub)
    wallet, outstanding, asset = _accounts(hub.url)
    with psycopg.connect(hub.url) as conn:
        other = conn.execute("SELECT id FROM currencies WHERE code = 'BPT'").fetchone()
        assert other is not None
        entry = _new_entry(conn)
        with pytest.raises(psycopg.Error) as exc:
            conn.execute(
                "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount) VALUES"
                " (%s, 1, %s, %s, 5), (%s, 2, %s, %s, -5)",
                (entry, wallet, other[0], entry, outstanding, other[0]),
            )
        assert exc.value.sqlstate == "EX002"


async def test_verify_catches_what_slips_past_the_guards(hub: Hub) -> None:
    """A superuser disabling the triggers is caught by ``exchange verify``."""
    await _earn(hub)
    with psycopg.connect(hub.url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE postings SET amount = amount + 7 WHERE seq = 1")
        conn.commit()
    problems = hub.verify()
    assert any(p.startswith("entry-zero-sum") for p in problems), problems
    assert any(p.startswith("replay-balance") for p in problems), problems
