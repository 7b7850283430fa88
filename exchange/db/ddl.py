"""Database-side ledger rules that SQLAlchemy cannot declare.

Used by the migrations; kept here as frozen text so that a migration states exactly what
it installed. Custom SQLSTATEs (class ``EX``) let the services tell the rules apart:

- ``EX001`` a wallet would go below zero outside a reversal;
- ``EX002`` a posting's asset differs from its account's asset;
- ``EX003`` an entry does not sum to zero for some asset (raised at commit by the first
  rules; since migration ``0004``, at the end of the statement that wrote its postings);
- ``EX004`` an append-only row was updated or deleted;
- ``EX005`` a balance or lot was changed other than through a posting or lot move;
- ``EX007`` a one-statement write found the state it was built on had changed (see
  :mod:`exchange.ledger.express`); the statement is rolled back and the caller retries on
  the ordinary path;
- ``EX008`` a journal row refers to a row that does not exist (since migration ``0006``,
  checked once per statement instead of by foreign keys).
"""

from __future__ import annotations

LEDGER_RULES_V1 = r"""
-- Balance rows for every account: one for a wallet, `stripes` rows for hot accounts.
CREATE FUNCTION exchange_account_balances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO balances (account_id, stripe, amount)
    SELECT NEW.id, s, 0 FROM generate_series(0, NEW.stripes - 1) AS s;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_balances AFTER INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION exchange_account_balances();

-- Every posting moves its account's balance: the wallet row, or one stripe of a hot
-- account chosen by the entry id (concurrent entries land on different stripes).
CREATE FUNCTION exchange_apply_posting() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    acc record;
    new_amount bigint;
    entry_kind text;
BEGIN
    SELECT kind, asset_id, stripes INTO acc FROM accounts WHERE id = NEW.account_id;
    IF acc.asset_id <> NEW.asset_id THEN
        RAISE EXCEPTION 'posting asset % differs from account % asset %',
            NEW.asset_id, NEW.account_id, acc.asset_id USING ERRCODE = 'EX002';
    END IF;
    UPDATE balances SET amount = amount + NEW.amount
     WHERE account_id = NEW.account_id AND stripe = (NEW.entry_id % acc.stripes)
    RETURNING amount INTO new_amount;
    IF acc.kind = 'wallet' AND new_amount < 0 AND NEW.amount < 0 THEN
        SELECT kind INTO entry_kind FROM entries WHERE id = NEW.entry_id;
        IF entry_kind IS DISTINCT FROM 'reverse' THEN
            RAISE EXCEPTION 'wallet % would go below zero (%)', NEW.account_id, new_amount
                USING ERRCODE = 'EX001';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    FOR EACH ROW EXECUTE FUNCTION exchange_apply_posting();

-- Zero sum per entry and asset, checked at commit so an entry's postings may be
-- inserted in any order within its transaction.
CREATE FUNCTION exchange_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT asset_id, sum(amount) AS total INTO bad
      FROM postings WHERE entry_id = NEW.entry_id
     GROUP BY asset_id HAVING sum(amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % does not balance: asset % sums to %',
            NEW.entry_id, bad.asset_id, bad.total USING ERRCODE = 'EX003';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION exchange_check_entry_balanced();

-- Append-only journal.
CREATE FUNCTION exchange_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'EX004';
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER lot_moves_append_only BEFORE UPDATE OR DELETE ON lot_moves
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER lot_moves_no_truncate BEFORE TRUNCATE ON lot_moves
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();

-- Balances and lot remainders move only through postings and lot moves.
CREATE FUNCTION exchange_refuse_direct() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% changes only through the ledger: direct % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'EX005';
END $$;
CREATE TRIGGER balances_guard BEFORE UPDATE OR DELETE ON balances
    FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION exchange_refuse_direct();
CREATE TRIGGER lots_guard BEFORE UPDATE OR DELETE ON lots
    FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION exchange_refuse_direct();

-- A new lot starts full; its remainder then follows its moves.
CREATE FUNCTION exchange_lot_starts_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.remaining := NEW.original;
    RETURN NEW;
END $$;
CREATE TRIGGER lots_start_full BEFORE INSERT ON lots
    FOR EACH ROW EXECUTE FUNCTION exchange_lot_starts_full();

CREATE FUNCTION exchange_apply_lot_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lots SET remaining = remaining + NEW.amount WHERE id = NEW.lot_id;
    RETURN NULL;
END $$;
CREATE TRIGGER lot_moves_apply AFTER INSERT ON lot_moves
    FOR EACH ROW EXECUTE FUNCTION exchange_apply_lot_move();
"""

DROP_LEDGER_RULES_V1 = r"""
DROP TRIGGER IF EXISTS lot_moves_apply ON lot_moves;
DROP TRIGGER IF EXISTS lots_start_full ON lots;
DROP TRIGGER IF EXISTS lots_guard ON lots;
DROP TRIGGER IF EXISTS balances_guard ON balances;
DROP TRIGGER IF EXISTS lot_moves_no_truncate ON lot_moves;
DROP TRIGGER IF EXISTS lot_moves_append_only ON lot_moves;
DROP TRIGGER IF EXISTS postings_no_truncate ON postings;
DROP TRIGGER IF EXISTS postings_append_only ON postings;
DROP TRIGGER IF EXISTS entries_no_truncate ON entries;
DROP TRIGGER IF EXISTS entries_append_only ON entries;
DROP TRIGGER IF EXISTS postings_balanced ON postings;
DROP TRIGGER IF EXISTS postings_apply ON postings;
DROP TRIGGER IF EXISTS accounts_balances ON accounts;
DROP FUNCTION IF EXISTS exchange_apply_lot_move();
DROP FUNCTION IF EXISTS exchange_lot_starts_full();
DROP FUNCTION IF EXISTS exchange_refuse_direct();
DROP FUNCTION IF EXISTS exchange_refuse_change();
DROP FUNCTION IF EXISTS exchange_check_entry_balanced();
DROP FUNCTION IF EXISTS exchange_apply_posting();
DROP FUNCTION IF EXISTS exchange_account_balances();
"""

EXPRESS_RULES_V1 = r"""
-- Called by a one-statement write whose guard failed after it claimed its key: raising
-- rolls the whole statement back (the claim included), so nothing of it stays.
CREATE FUNCTION exchange_refuse_stale(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stale: %', what USING ERRCODE = 'EX007';
END $$;
"""

DROP_EXPRESS_RULES_V1 = r"""
DROP FUNCTION IF EXISTS exchange_refuse_stale(text);
"""

LEDGER_RULES_V2 = r"""
-- The posting rules, once per statement instead of once per posting row: the balance rows
-- an insert touches are locked in ascending (account, stripe) order and each moves once by
-- the statement's total for it (a bulk insert of a thousand entries no longer updates an
-- issuer's stripe a thousand times), and each entry's zero sum is checked at the end of the
-- statement that wrote its postings. An entry's postings are therefore written by one
-- statement (the posting engine and the bulk earn do).
DROP TRIGGER postings_apply ON postings;
DROP TRIGGER postings_balanced ON postings;
DROP FUNCTION exchange_apply_posting();
DROP FUNCTION exchange_check_entry_balanced();

CREATE FUNCTION exchange_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT p.account_id, p.asset_id, a.asset_id AS account_asset INTO bad
      FROM new_postings p JOIN accounts a ON a.id = p.account_id
     WHERE a.asset_id <> p.asset_id
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting asset % differs from account % asset %',
            bad.asset_id, bad.account_id, bad.account_asset USING ERRCODE = 'EX002';
    END IF;

    SELECT p.entry_id, p.asset_id, sum(p.amount) AS total INTO bad
      FROM postings p
     WHERE p.entry_id IN (SELECT n.entry_id FROM new_postings n)
     GROUP BY p.entry_id, p.asset_id
    HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % does not balance: asset % sums to %',
            bad.entry_id, bad.asset_id, bad.total USING ERRCODE = 'EX003';
    END IF;

    PERFORM 1
       FROM balances b
       JOIN (SELECT DISTINCT p.account_id, p.entry_id % a.stripes AS stripe
               FROM new_postings p JOIN accounts a ON a.id = p.account_id) AS t
         ON b.account_id = t.account_id AND b.stripe = t.stripe
      ORDER BY b.account_id, b.stripe
        FOR UPDATE OF b;
    UPDATE balances b SET amount = b.amount + t.amount
      FROM (SELECT p.account_id, p.entry_id % a.stripes AS stripe, sum(p.amount) AS amount
              FROM new_postings p JOIN accounts a ON a.id = p.account_id
             GROUP BY 1, 2) AS t
     WHERE b.account_id = t.account_id AND b.stripe = t.stripe;

    -- A wallet (one balance row) debited by anything but a reversal must not end below zero.
    SELECT b.account_id, b.amount INTO bad
      FROM new_postings p
      JOIN accounts a ON a.id = p.account_id AND a.kind = 'wallet'
      JOIN balances b ON b.account_id = p.account_id AND b.stripe = 0
      JOIN entries e ON e.id = p.entry_id
     WHERE p.amount < 0 AND b.amount < 0 AND e.kind <> 'reverse'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'wallet % would go below zero (%)', bad.account_id, bad.amount
            USING ERRCODE = 'EX001';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_apply_postings();
"""

LEDGER_RULES_V3 = r"""
-- The statement rules of 0004 read the whole journal on large inserts: the zero-sum check
-- re-summed every entry written to from `postings`, behind a `LIMIT 1` that let the planner
-- expect an early hit and walk the postings index from its start (3.5 s per bulk call at
-- 3.9 M postings, growing with the history). Postings are append-only and every statement
-- is checked, so an entry balances exactly when each statement's postings for it do: the
-- check now sums this statement's postings only, and reads nothing else. The two checks
-- that join other tables compute their violations in full (a MATERIALIZED CTE is planned
-- for all its rows) before one is picked, so no plan is chosen for an early stop.
CREATE OR REPLACE FUNCTION exchange_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH v AS MATERIALIZED (
        SELECT p.account_id, p.asset_id, a.asset_id AS account_asset
          FROM new_postings p JOIN accounts a ON a.id = p.account_id
         WHERE a.asset_id <> p.asset_id
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'posting asset % differs from account % asset %',
            bad.asset_id, bad.account_id, bad.account_asset USING ERRCODE = 'EX002';
    END IF;

    SELECT p.entry_id, p.asset_id, sum(p.amount) AS total INTO bad
      FROM new_postings p
     GROUP BY p.entry_id, p.asset_id
    HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % does not balance: asset % sums to %',
            bad.entry_id, bad.asset_id, bad.total USING ERRCODE = 'EX003';
    END IF;

    PERFORM 1
       FROM balances b
       JOIN (SELECT DISTINCT p.account_id, p.entry_id % a.stripes AS stripe
               FROM new_postings p JOIN accounts a ON a.id = p.account_id) AS t
         ON b.account_id = t.account_id AND b.stripe = t.stripe
      ORDER BY b.account_id, b.stripe
        FOR UPDATE OF b;
    UPDATE balances b SET amount = b.amount + t.amount
      FROM (SELECT p.account_id, p.entry_id % a.stripes AS stripe, sum(p.amount) AS amount
              FROM new_postings p JOIN accounts a ON a.id = p.account_id
             GROUP BY 1, 2) AS t
     WHERE b.account_id = t.account_id AND b.stripe = t.stripe;

    -- A wallet (one balance row) debited by anything but a reversal must not end below zero.
    WITH v AS MATERIALIZED (
        SELECT b.account_id, b.amount
          FROM new_postings p
          JOIN accounts a ON a.id = p.account_id AND a.kind = 'wallet'
          JOIN balances b ON b.account_id = p.account_id AND b.stripe = 0
          JOIN entries e ON e.id = p.entry_id
         WHERE p.amount < 0 AND b.amount < 0 AND e.kind <> 'reverse'
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'wallet % would go below zero (%)', bad.account_id, bad.amount
            USING ERRCODE = 'EX001';
    END IF;
    RETURN NULL;
END $$;
"""


def replaceable_function(source: str, name: str) -> str:
    """The ``CREATE … FUNCTION name()`` statement in ``source``, as ``CREATE OR REPLACE``
    (to restore a function as an earlier migration created it)."""
    start = source.index(f"FUNCTION {name}()")
    start = source.rindex("CREATE", 0, start)
    end = source.index("END $$;", start) + len("END $$;")
    text = source[start:end]
    if not text.startswith("CREATE OR REPLACE"):
        text = "CREATE OR REPLACE" + text[len("CREATE") :]
    return text + "\n"


def ledger_rules_v2_function() -> str:
    """The posting function as ``0004`` created it (to restore it on downgrade)."""
    return replaceable_function(LEDGER_RULES_V2, "exchange_apply_postings")


DROP_LEDGER_RULES_V2 = r"""
DROP TRIGGER IF EXISTS postings_apply ON postings;
DROP FUNCTION IF EXISTS exchange_apply_postings();
"""

# The journal's references to the rows it is written against, checked once per statement
# instead of by foreign keys. A foreign key checks each new row with its own query and takes
# a KEY SHARE lock on the row it refers to; every earn refers to the same few rows (its
# issuer, the issuer's accounts, the currency), so concurrent earns kept creating shared row
# locks on them, and the checks cost about half of PostgreSQL's time per bulk item. The
# referenced rows are never deleted (refused below, or already refused: the journal is
# append-only and lots change only through their moves), so a row that exists when the
# statement ends stays, and no lock is needed. `entries.member_id`, `entries.quote_id` and
# `entries.reverses_entry_id` keep their foreign keys: a member created by a raced link is
# deleted again, and the other two are empty on the hot paths. (Since 0008 the member is
# checked per statement too and members are never deleted: see `journal_ddl`.)
JOURNAL_FOREIGN_KEYS = (
    ("entries", "merchant_id", "merchants"),
    ("postings", "entry_id", "entries"),
    ("postings", "account_id", "accounts"),
    ("postings", "asset_id", "currencies"),
    ("lots", "wallet_id", "accounts"),
    ("lots", "entry_id", "entries"),
    ("lot_moves", "entry_id", "entries"),
    ("lot_moves", "lot_id", "lots"),
)

JOURNAL_REFERENCES_V1 = r"""
-- EX008: a journal row refers to a row that does not exist.
CREATE FUNCTION exchange_check_entry_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH v AS MATERIALIZED (
        SELECT n.id, n.merchant_id
          FROM new_entries n LEFT JOIN merchants m ON m.id = n.merchant_id
         WHERE n.merchant_id IS NOT NULL AND m.id IS NULL
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % refers to merchant %, which does not exist',
            bad.id, bad.merchant_id USING ERRCODE = 'EX008';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_references AFTER INSERT ON entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_check_entry_references();

CREATE FUNCTION exchange_check_lot_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH v AS MATERIALIZED (
        SELECT n.id, n.wallet_id, n.entry_id
          FROM new_lots n
          LEFT JOIN accounts a ON a.id = n.wallet_id
          LEFT JOIN entries e ON e.id = n.entry_id
         WHERE a.id IS NULL OR e.id IS NULL
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'lot % refers to a wallet (%) or an entry (%) that does not exist',
            bad.id, bad.wallet_id, bad.entry_id USING ERRCODE = 'EX008';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER lots_references AFTER INSERT ON lots
    REFERENCING NEW TABLE AS new_lots
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_check_lot_references();

CREATE FUNCTION exchange_check_lot_move_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH v AS MATERIALIZED (
        SELECT n.entry_id, n.lot_id
          FROM new_lot_moves n
          LEFT JOIN lots l ON l.id = n.lot_id
          LEFT JOIN entries e ON e.id = n.entry_id
         WHERE l.id IS NULL OR e.id IS NULL
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'lot move of entry % on lot % refers to a row that does not exist',
            bad.entry_id, bad.lot_id USING ERRCODE = 'EX008';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER lot_moves_references AFTER INSERT ON lot_moves
    REFERENCING NEW TABLE AS new_lot_moves
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_check_lot_move_references();

-- The rows the journal refers to are never deleted.
CREATE FUNCTION exchange_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted (the journal refers to them): % refused',
        TG_TABLE_NAME, TG_OP USING ERRCODE = 'EX004';
END $$;
CREATE TRIGGER merchants_kept BEFORE DELETE ON merchants
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_delete();
CREATE TRIGGER merchants_no_truncate BEFORE TRUNCATE ON merchants
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_delete();
CREATE TRIGGER currencies_kept BEFORE DELETE ON currencies
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_delete();
CREATE TRIGGER currencies_no_truncate BEFORE TRUNCATE ON currencies
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_delete();
CREATE TRIGGER accounts_kept BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_delete();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_delete();
CREATE TRIGGER lots_no_truncate BEFORE TRUNCATE ON lots
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_delete();

-- The posting rules of 0005, whose first check now also finds a posting's account and
-- entry (one query: the asset check joined the account already).
CREATE OR REPLACE FUNCTION exchange_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH v AS MATERIALIZED (
        SELECT p.entry_id, p.account_id, p.asset_id, a.asset_id AS account_asset,
               e.id AS found_entry
          FROM new_postings p
          LEFT JOIN accounts a ON a.id = p.account_id
          LEFT JOIN entries e ON e.id = p.entry_id
         WHERE a.id IS NULL OR e.id IS NULL OR a.asset_id <> p.asset_id
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND AND bad.account_asset IS NULL THEN
        RAISE EXCEPTION 'posting of entry % refers to account %, which does not exist',
            bad.entry_id, bad.account_id USING ERRCODE = 'EX008';
    ELSIF FOUND AND bad.found_entry IS NULL THEN
        RAISE EXCEPTION 'posting refers to entry %, which does not exist',
            bad.entry_id USING ERRCODE = 'EX008';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'posting asset % differs from account % asset %',
            bad.asset_id, bad.account_id, bad.account_asset USING ERRCODE = 'EX002';
    END IF;

    SELECT p.entry_id, p.asset_id, sum(p.amount) AS total INTO bad
      FROM new_postings p
     GROUP BY p.entry_id, p.asset_id
    HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'entry % does not balance: asset % sums to %',
            bad.entry_id, bad.asset_id, bad.total USING ERRCODE = 'EX003';
    END IF;

    PERFORM 1
       FROM balances b
       JOIN (SELECT DISTINCT p.account_id, p.entry_id % a.stripes AS stripe
               FROM new_postings p JOIN accounts a ON a.id = p.account_id) AS t
         ON b.account_id = t.account_id AND b.stripe = t.stripe
      ORDER BY b.account_id, b.stripe
        FOR UPDATE OF b;
    UPDATE balances b SET amount = b.amount + t.amount
      FROM (SELECT p.account_id, p.entry_id % a.stripes AS stripe, sum(p.amount) AS amount
              FROM new_postings p JOIN accounts a ON a.id = p.account_id
             GROUP BY 1, 2) AS t
     WHERE b.account_id = t.account_id AND b.stripe = t.stripe;

    -- A wallet (one balance row) debited by anything but a reversal must not end below zero.
    WITH v AS MATERIALIZED (
        SELECT b.account_id, b.amount
          FROM new_postings p
          JOIN accounts a ON a.id = p.account_id AND a.kind = 'wallet'
          JOIN balances b ON b.account_id = p.account_id AND b.stripe = 0
          JOIN entries e ON e.id = p.entry_id
         WHERE p.amount < 0 AND b.amount < 0 AND e.kind <> 'reverse'
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'wallet % would go below zero (%)', bad.account_id, bad.amount
            USING ERRCODE = 'EX001';
    END IF;
    RETURN NULL;
END $$;

-- The queries of a PL/pgSQL function that use no variables are planned once per session and
-- the plan is kept (a query without parameters never gets a custom plan), sized by the
-- transition table of the first statement that ran it. After a bulk call of 1,000 earns
-- every later single earn on that connection hashed the whole `accounts` and `balances`
-- tables (10 ms of CPU per earn instead of 1). Index lookups per transition row are right
-- for every size here, so these functions plan for them, whatever ran first. (`jit` is off:
-- before PostgreSQL 18 a disabled plan node adds a penalty to the cost, which would
-- otherwise cross the JIT thresholds and compile every statement.)
ALTER FUNCTION exchange_apply_postings()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off;
ALTER FUNCTION exchange_check_entry_references()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off;
ALTER FUNCTION exchange_check_lot_references()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off;
ALTER FUNCTION exchange_check_lot_move_references()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off;

"""

DROP_JOURNAL_REFERENCES_V1 = r"""
DROP TRIGGER IF EXISTS lots_no_truncate ON lots;
DROP TRIGGER IF EXISTS accounts_no_truncate ON accounts;
DROP TRIGGER IF EXISTS accounts_kept ON accounts;
DROP TRIGGER IF EXISTS currencies_no_truncate ON currencies;
DROP TRIGGER IF EXISTS currencies_kept ON currencies;
DROP TRIGGER IF EXISTS merchants_no_truncate ON merchants;
DROP TRIGGER IF EXISTS merchants_kept ON merchants;
DROP FUNCTION IF EXISTS exchange_refuse_delete();
DROP TRIGGER IF EXISTS lot_moves_references ON lot_moves;
DROP FUNCTION IF EXISTS exchange_check_lot_move_references();
DROP TRIGGER IF EXISTS lots_references ON lots;
DROP FUNCTION IF EXISTS exchange_check_lot_references();
DROP TRIGGER IF EXISTS entries_references ON entries;
DROP FUNCTION IF EXISTS exchange_check_entry_references();
"""
