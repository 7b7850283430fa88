"""The journal's rules with fewer lookups per row, installed by migration ``0008``.

Kept as frozen text so that the migration states exactly what it installed.

``perf`` on the database during bulk earns showed the statement triggers at a third of its
time, most of it in index lookups: the posting rules joined every posting to its account
three times (to check its references, to lock its balance row and to move it) and a
debited one a fourth time, and the foreign key on ``entries.member_id`` still ran one query
per entry, which also took a ``KEY SHARE`` lock on the member's row (a write to the row
and a WAL record). Now:

- the posting rules find each posting's account and entry once, in one pass that also
  collects what the later steps need (the balance rows to move, by ``(account, stripe)``
  and in that order, and the wallets debited outside a reversal), kept in arrays; the
  precise reference error is looked for only when that pass found a fault;
- an entry's member is checked once per statement with its merchant (``EX008``), as the
  other journal references are since ``0006``; members are never deleted now (``EX004``):
  the one place that removed a member again (a customer link that lost a race) rolls back
  to a savepoint instead, so a member that exists when the statement ends stays;
- ``ix_entries_reverses`` holds reversals only: every earn wrote a null key into it.
"""

from __future__ import annotations

from exchange.db.ddl import JOURNAL_REFERENCES_V1, replaceable_function

MEMBER_REFERENCE = ("entries", "member_id", "members")
"""The foreign key ``0008`` replaces with the per-statement check."""

_PLANNED_FOR_LOOKUPS = (
    "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off"
)
"""The settings ``0006`` gave the rule functions (see :data:`JOURNAL_REFERENCES_V1`);
``CREATE OR REPLACE FUNCTION`` resets a function's settings, so they are set again."""

LEAN_RULES_V1 = rf"""
CREATE OR REPLACE FUNCTION exchange_check_entry_references() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH v AS MATERIALIZED (
        SELECT n.id, n.merchant_id, n.member_id, m.id IS NULL AND n.merchant_id IS NOT NULL
               AS no_merchant
          FROM new_entries n
          LEFT JOIN merchants m ON m.id = n.merchant_id
          LEFT JOIN members mb ON mb.id = n.member_id
         WHERE (n.merchant_id IS NOT NULL AND m.id IS NULL)
            OR (n.member_id IS NOT NULL AND mb.id IS NULL)
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND AND bad.no_merchant THEN
        RAISE EXCEPTION 'entry % refers to merchant %, which does not exist',
            bad.id, bad.merchant_id USING ERRCODE = 'EX008';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'entry % refers to member %, which does not exist',
            bad.id, bad.member_id USING ERRCODE = 'EX008';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER members_kept BEFORE DELETE ON members
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_delete();
CREATE TRIGGER members_no_truncate BEFORE TRUNCATE ON members
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_delete();

CREATE OR REPLACE FUNCTION exchange_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    faulty boolean;
    debited bigint[];
    moved_accounts bigint[];
    moved_stripes bigint[];
    moved_amounts bigint[];
BEGIN
    -- One pass: each posting's account and entry, found once.
    WITH p AS MATERIALIZED (
        SELECT p.account_id, p.entry_id % a.stripes AS stripe, p.amount,
               a.id IS NULL OR e.id IS NULL OR a.asset_id <> p.asset_id AS faulty,
               p.amount < 0 AND a.kind = 'wallet' AND e.kind <> 'reverse' AS debits_wallet
          FROM new_postings p
          LEFT JOIN accounts a ON a.id = p.account_id
          LEFT JOIN entries e ON e.id = p.entry_id
    ), t AS (
        SELECT p.account_id, p.stripe, sum(p.amount) AS amount FROM p GROUP BY 1, 2
    )
    SELECT (SELECT bool_or(p.faulty) FROM p),
           (SELECT array_agg(DISTINCT p.account_id) FILTER (WHERE p.debits_wallet) FROM p),
           array_agg(t.account_id ORDER BY t.account_id, t.stripe),
           array_agg(t.stripe ORDER BY t.account_id, t.stripe),
           array_agg(t.amount ORDER BY t.account_id, t.stripe)
      INTO faulty, debited, moved_accounts, moved_stripes, moved_amounts
      FROM t;

    IF faulty THEN
        WITH v AS MATERIALIZED (
            SELECT p.entry_id, p.account_id, p.asset_id, a.asset_id AS account_asset,
                   e.id AS found_entry
              FROM new_postings p
              LEFT JOIN accounts a ON a.id = p.account_id
              LEFT JOIN entries e ON e.id = p.entry_id
             WHERE a.id IS NULL OR e.id IS NULL OR a.asset_id <> p.asset_id
        )
        SELECT * INTO bad FROM v LIMIT 1;
        IF bad.account_asset IS NULL THEN
            RAISE EXCEPTION 'posting of entry % refers to account %, which does not exist',
                bad.entry_id, bad.account_id USING ERRCODE = 'EX008';
        ELSIF bad.found_entry IS NULL THEN
            RAISE EXCEPTION 'posting refers to entry %, which does not exist',
                bad.entry_id USING ERRCODE = 'EX008';
        ELSE
            RAISE EXCEPTION 'posting asset % differs from account % asset %',
                bad.asset_id, bad.account_id, bad.account_asset USING ERRCODE = 'EX002';
        END IF;
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

    -- Balance rows are locked in ascending (account, stripe) order, then moved once each.
    PERFORM 1
       FROM balances b
       JOIN unnest(moved_accounts, moved_stripes) AS t(account_id, stripe)
         ON b.account_id = t.account_id AND b.stripe = t.stripe
      ORDER BY b.account_id, b.stripe
        FOR UPDATE OF b;
    UPDATE balances b SET amount = b.amount + t.amount
      FROM unnest(moved_accounts, moved_stripes, moved_amounts) AS t(account_id, stripe, amount)
     WHERE b.account_id = t.account_id AND b.stripe = t.stripe;

    -- A wallet (one balance row) debited by anything but a reversal must not end below zero.
    IF debited IS NOT NULL THEN
        WITH v AS MATERIALIZED (
            SELECT b.account_id, b.amount
              FROM balances b
             WHERE b.account_id = ANY(debited) AND b.stripe = 0 AND b.amount < 0
        )
        SELECT * INTO bad FROM v LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'wallet % would go below zero (%)', bad.account_id, bad.amount
                USING ERRCODE = 'EX001';
        END IF;
    END IF;
    RETURN NULL;
END $$;

ALTER FUNCTION exchange_apply_postings() {_PLANNED_FOR_LOOKUPS};
ALTER FUNCTION exchange_check_entry_references() {_PLANNED_FOR_LOOKUPS};
"""


DROP_LEAN_RULES_V1 = (
    "DROP TRIGGER IF EXISTS members_no_truncate ON members;\n"
    "DROP TRIGGER IF EXISTS members_kept ON members;\n"
    + replaceable_function(JOURNAL_REFERENCES_V1, "exchange_check_entry_references")
    + replaceable_function(JOURNAL_REFERENCES_V1, "exchange_apply_postings")
    + f"ALTER FUNCTION exchange_apply_postings() {_PLANNED_FOR_LOOKUPS};\n"
    + f"ALTER FUNCTION exchange_check_entry_references() {_PLANNED_FOR_LOOKUPS};\n"
)
"""What ``0008`` replaced: the functions as ``0006`` left them, and no member triggers."""
