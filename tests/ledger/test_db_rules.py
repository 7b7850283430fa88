"""The database refuses to corrupt the ledger, even from raw SQL."""

from __future__ import annotations

import asyncio

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


async def test_in_one_statement_only_a_reversal_may_take_a_wallet_below_zero(hub: Hub) -> None:
    """A statement with reversals and other entries: a wallet debited by a reversal alone
    may end below zero, one debited by anything else (even beside a reversal) may not."""
    earned = await _earn(hub)
    await hub.earn("a", 1, "APT", 100, "e-other")
    _, outstanding, asset = _accounts(hub.url)
    with psycopg.connect(hub.url) as conn:
        first, second = (
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM accounts WHERE kind = 'wallet' AND asset_id = %s"
                " AND member_id = ANY(%s) ORDER BY member_id",
                (asset, hub.member_ids[:2]),
            ).fetchall()
        )

    def statement(debits: list[tuple[str, int, int]]) -> list[tuple[str, tuple[object, ...]]]:
        """One entry per debit (kind, wallet, points), each crediting the outstanding
        account; the postings of all of them in one statement."""
        out: list[tuple[str, tuple[object, ...]]] = []
        values: list[str] = []
        params: list[object] = []
        for n, (kind, wallet, amount) in enumerate(debits):
            key = f"mixed-{n}-{kind}-{wallet}-{amount}"
            reverses = earned if kind == "reverse" else None
            out.append(
                (
                    "INSERT INTO entries (kind, initiator, idempotency_key, fingerprint,"
                    " effective_at, reverses_entry_id) VALUES (%s, 'raw', %s, '\\x00', now(), %s)",
                    (kind, key, reverses),
                )
            )
            values.append(
                "((SELECT id FROM entries WHERE idempotency_key = %s), 1, %s, %s, %s),"
                " ((SELECT id FROM entries WHERE idempotency_key = %s), 2, %s, %s, %s)"
            )
            params += [key, wallet, asset, -amount, key, outstanding, asset, amount]
        out.append(
            (
                "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount) VALUES "
                + ", ".join(values),
                tuple(params),
            )
        )
        return out

    # Each wallet holds 100. Refused: a redemption that overdraws its wallet beside a
    # reversal that overdraws another, and a reversal and a redemption that together
    # overdraw one wallet. Accepted: the reversal's overdraft alone.
    before = await hub.balances()
    for debits in (
        [("reverse", first, 150), ("redeem", second, 101)],
        [("reverse", second, 5), ("redeem", second, 96)],
    ):
        _refused(hub.url, statement(debits), "EX001")
    assert await hub.balances() == before
    with psycopg.connect(hub.url) as conn:
        for sql, params in statement([("reverse", first, 150), ("redeem", second, 100)]):
            conn.execute(sql, params)
        conn.commit()
    assert await hub.wallet(hub.member_ids[0], "APT") == -50
    assert await hub.wallet(hub.member_ids[1], "APT") == 0


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


def _ids(url: str) -> dict[str, int]:
    """An existing wallet, outstanding account, asset, entry and lot, and an id none has."""
    wallet, outstanding, asset = _accounts(url)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT l.entry_id, l.id, (SELECT max(id) FROM accounts)"
            " + (SELECT max(id) FROM entries) + (SELECT max(id) FROM lots)"
            " + (SELECT max(id) FROM merchants) + 1000 FROM lots l LIMIT 1"
        ).fetchone()
        assert row is not None
    return {
        "wallet": wallet,
        "outstanding": outstanding,
        "asset": asset,
        "entry": int(row[0]),
        "lot": int(row[1]),
        "missing": int(row[2]),
    }


async def test_journal_rows_must_refer_to_rows_that_exist(hub: Hub) -> None:
    """The references the foreign keys checked until 0006 are checked per statement."""
    await _earn(hub)
    ids = _ids(hub.url)
    missing = ids["missing"]
    entry_sql = (
        "INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, effective_at,"
        " merchant_id) VALUES ('adjust', 'raw', md5(random()::text), '\\x00', now(), %s)"
    )
    postings_sql = (
        "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
        " VALUES (%s, 1, %s, %s, 5), (%s, 2, %s, %s, -5)"
    )
    lot_sql = (
        "INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at)"
        " VALUES (%s, %s, 5, 5, now())"
    )
    move_sql = "INSERT INTO lot_moves (entry_id, lot_id, amount) VALUES (%s, %s, -1)"
    member_sql = (
        "INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, effective_at,"
        " member_id) VALUES ('adjust', 'raw', md5(random()::text), '\\x00', now(), %s)"
    )
    before = await hub.balances()
    with psycopg.connect(hub.url) as conn:
        fresh = _new_entry(conn)
        conn.commit()
    w, o, a = ids["wallet"], ids["outstanding"], ids["asset"]
    cases: list[tuple[str, tuple[object, ...]]] = [
        (entry_sql, (missing,)),
        (member_sql, (missing,)),
        (postings_sql, (fresh, missing, a, fresh, o, a)),
        (postings_sql, (missing, w, a, missing, o, a)),
        (lot_sql, (missing, ids["entry"])),
        (lot_sql, (w, missing)),
        (move_sql, (ids["entry"], missing)),
        (move_sql, (missing, ids["lot"])),
    ]
    for sql, params in cases:
        _refused(hub.url, [(sql, params)], "EX008")
    # An asset that does not exist is never the account's asset.
    _refused(hub.url, [(postings_sql, (fresh, w, missing, fresh, o, missing))], "EX002")
    assert await hub.balances() == before
    # The same statements with rows that exist are accepted.
    with psycopg.connect(hub.url) as conn:
        conn.execute(entry_sql, (hub.merchant_ids["a"],))
        conn.execute(member_sql, (hub.member_ids[0],))
        conn.execute(postings_sql, (fresh, w, a, fresh, o, a))
        conn.execute(lot_sql, (w, fresh))
        conn.commit()


async def test_rows_the_journal_refers_to_are_never_deleted(hub: Hub) -> None:
    await _earn(hub)
    ids = _ids(hub.url)
    for sql, params in (
        ("DELETE FROM merchants WHERE id = %s", (hub.merchant_ids["c"],)),
        ("DELETE FROM currencies WHERE id = %s", (ids["asset"],)),
        ("DELETE FROM accounts WHERE id = %s", (ids["wallet"],)),
        ("TRUNCATE lots", ()),
        ("DELETE FROM members WHERE id = %s", (hub.member_ids[0],)),
        ("TRUNCATE members CASCADE", ()),
        ("TRUNCATE merchants CASCADE", ()),
        ("TRUNCATE currencies CASCADE", ()),
        ("TRUNCATE accounts CASCADE", ()),
    ):
        _refused(hub.url, [(sql, params)], "EX004")
    assert hub.verify() == []


async def test_an_earn_locks_none_of_its_issuers_rows(hub: Hub) -> None:
    """Earns do not queue behind a lock on their merchant, currency, accounts or member."""
    await _earn(hub)
    with psycopg.connect(hub.url) as conn:
        conn.execute(
            "SELECT 1 FROM merchants m JOIN currencies c ON c.issuer_id = m.id"
            "  JOIN accounts a ON a.asset_id = c.id"
            " WHERE c.code = 'APT' FOR UPDATE OF m, c, a"
        )
        conn.execute("SELECT 1 FROM members WHERE id = %s FOR UPDATE", (hub.member_ids[0],))
        out = await asyncio.wait_for(
            points.earn(
                hub.pool,
                hub.merchants["a"],
                member_id=hub.member_ids[0],
                currency_code="APT",
                points=7,
                idempotency_key="e2",
            ),
            timeout=10,
        )
        conn.rollback()
    assert out.entry_id > 0
    assert await hub.wallet(hub.member_ids[0], "APT") == 107


_LOOKED_UP = ("accounts", "balances", "entries", "merchants", "lots")


def _reads(conn: psycopg.Connection[object]) -> dict[str, tuple[int, int]]:
    """``table -> (sequential scans, index entries read)``, flushed (autocommit connection)."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    rows = conn.execute(
        "SELECT t.relname, t.seq_scan, sum(i.idx_tup_read)::bigint"
        "  FROM pg_stat_user_tables t JOIN pg_stat_user_indexes i ON i.relid = t.relid"
        " WHERE t.relname = ANY(%s) GROUP BY 1, 2",
        (list(_LOOKED_UP),),
    ).fetchall()
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


async def test_posting_rules_look_rows_up_whatever_size_came_first(hub: Hub) -> None:
    """A session whose first journal statements were bulk ones still looks rows up one by one.

    The rules' queries are planned once per session; planned for a thousand rows they hashed
    or scanned whole tables, and every later one-entry statement on that connection did too.
    """
    await _earn(hub)
    wallet, outstanding, asset = _accounts(hub.url)
    with psycopg.connect(hub.url, autocommit=True) as conn:
        with conn.transaction():
            entries = conn.execute(
                "INSERT INTO entries (kind, initiator, idempotency_key, fingerprint,"
                " effective_at, merchant_id) SELECT 'adjust', 'raw', 'bulk-' || n, '\\x00',"
                " now(), %s FROM generate_series(1, 1000) n RETURNING id",
                (hub.merchant_ids["a"],),
            ).fetchall()
            ids = [int(r[0]) for r in entries]
            conn.execute(
                "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
                " SELECT e, s, CASE s WHEN 1 THEN %s ELSE %s END, %s,"
                " CASE s WHEN 1 THEN 1 ELSE -1 END"
                " FROM unnest(%s::bigint[]) e, generate_series(1, 2) s",
                (wallet, outstanding, asset, ids),
            )
            conn.execute(
                "INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at)"
                " SELECT %s, e, 1, 1, now() FROM unnest(%s::bigint[]) e",
                (wallet, ids),
            )
        before = _reads(conn)
        with conn.transaction():
            one = conn.execute(
                "INSERT INTO entries (kind, initiator, idempotency_key, fingerprint,"
                " effective_at, merchant_id) VALUES ('adjust', 'raw', 'one', '\\x00', now(), %s)"
                " RETURNING id",
                (hub.merchant_ids["a"],),
            ).fetchone()
            assert one is not None
            conn.execute(
                "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
                " VALUES (%s, 1, %s, %s, 5), (%s, 2, %s, %s, -5)",
                (one[0], wallet, asset, one[0], outstanding, asset),
            )
            conn.execute(
                "INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at)"
                " VALUES (%s, %s, 5, 5, now())",
                (wallet, one[0]),
            )
        after = _reads(conn)
    for table in _LOOKED_UP:
        assert after[table][0] == before[table][0], (table, before, after)
    # A handful of lookups (two postings, one lot, one entry), not a walk of any index.
    read = sum(after[t][1] - before[t][1] for t in _LOOKED_UP)
    assert 0 < read < 50, (before, after)
    assert await hub.wallet(hub.member_ids[0], "APT") == 100 + 1000 + 5


async def test_verify_finds_journal_rows_whose_references_are_gone(hub: Hub) -> None:
    """With the triggers disabled, rows referring to nothing are still caught by verify."""
    await _earn(hub)
    ids = _ids(hub.url)
    missing = ids["missing"]
    with psycopg.connect(hub.url) as conn:
        conn.execute("SET session_replication_role = replica")
        fresh = _new_entry(conn)
        conn.execute(
            "INSERT INTO postings (entry_id, seq, account_id, asset_id, amount)"
            " VALUES (%s, 1, %s, %s, 5), (%s, 2, %s, %s, -5)",
            (fresh, missing, ids["asset"], fresh, ids["outstanding"], ids["asset"]),
        )
        conn.execute(
            "INSERT INTO lots (wallet_id, entry_id, original, remaining, earned_at)"
            " VALUES (%s, %s, 5, 5, now())",
            (missing, fresh),
        )
        conn.execute(
            "INSERT INTO entries (kind, initiator, idempotency_key, fingerprint, effective_at,"
            " merchant_id) VALUES ('adjust', 'raw', 'orphan', '\\x00', now(), %s)",
            (missing,),
        )
        conn.commit()
    problems = hub.verify()
    assert f"posting-orphan: entry {fresh} posts to a missing account {missing}" in problems
    assert any(p.startswith("lot-orphan") for p in problems), problems
    assert any(p.startswith("entry-orphan") for p in problems), problems
