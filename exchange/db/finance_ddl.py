"""Database-side rules of the finance tables, installed by migration ``0003``.

Kept as frozen text so that the migration states exactly what it installed.

- Every finance table except ``chain_state`` is append-only: ``UPDATE``, ``DELETE`` and
  ``TRUNCATE`` are refused with SQLSTATE ``EX004`` (the ledger's
  ``exchange_refuse_change()``, installed by ``0001``).
- A closed batch never changes: the rows that make up a batch (its entries, obligations,
  positions, instructions and statements) may only be inserted by the transaction that
  inserted the batch itself, and a block's chain entries only by the transaction that
  sealed the block. Anything else is refused with SQLSTATE ``EX006``. (Both are checked
  against the top-level transaction id, so the closing code writes them outside
  savepoints.) Since migration ``0007`` a block's chain entries are checked once per
  statement (:data:`CHAIN_ENTRY_RULES_V2`), their entries too (``EX008``).
"""

from __future__ import annotations

FINANCE_RULES_V1 = r"""
CREATE FUNCTION exchange_batch_is_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM settlement_batches
                    WHERE id = NEW.batch_id AND xmin = xid(pg_current_xact_id())) THEN
        RAISE EXCEPTION 'settlement batch % is closed: % refused', NEW.batch_id, TG_TABLE_NAME
            USING ERRCODE = 'EX006';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION exchange_block_is_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM chain_blocks
                    WHERE id = NEW.block_id AND xmin = xid(pg_current_xact_id())) THEN
        RAISE EXCEPTION 'chain block % is sealed: % refused', NEW.block_id, TG_TABLE_NAME
            USING ERRCODE = 'EX006';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER chain_blocks_append_only BEFORE UPDATE OR DELETE ON chain_blocks
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER chain_blocks_no_truncate BEFORE TRUNCATE ON chain_blocks
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER chain_entries_append_only BEFORE UPDATE OR DELETE ON chain_entries
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER chain_entries_no_truncate BEFORE TRUNCATE ON chain_entries
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_batches_append_only BEFORE UPDATE OR DELETE ON settlement_batches
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_batches_no_truncate BEFORE TRUNCATE ON settlement_batches
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_batch_entries_append_only
    BEFORE UPDATE OR DELETE ON settlement_batch_entries
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_batch_entries_no_truncate BEFORE TRUNCATE ON settlement_batch_entries
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_obligations_append_only BEFORE UPDATE OR DELETE ON settlement_obligations
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_obligations_no_truncate BEFORE TRUNCATE ON settlement_obligations
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_positions_append_only BEFORE UPDATE OR DELETE ON settlement_positions
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_positions_no_truncate BEFORE TRUNCATE ON settlement_positions
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_instructions_append_only
    BEFORE UPDATE OR DELETE ON settlement_instructions
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_instructions_no_truncate BEFORE TRUNCATE ON settlement_instructions
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_statements_append_only BEFORE UPDATE OR DELETE ON settlement_statements
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_statements_no_truncate BEFORE TRUNCATE ON settlement_statements
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_payments_append_only BEFORE UPDATE OR DELETE ON settlement_payments
    FOR EACH ROW EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_payments_no_truncate BEFORE TRUNCATE ON settlement_payments
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_refuse_change();
CREATE TRIGGER settlement_batch_entries_batch_open BEFORE INSERT ON settlement_batch_entries
    FOR EACH ROW EXECUTE FUNCTION exchange_batch_is_open();
CREATE TRIGGER settlement_obligations_batch_open BEFORE INSERT ON settlement_obligations
    FOR EACH ROW EXECUTE FUNCTION exchange_batch_is_open();
CREATE TRIGGER settlement_positions_batch_open BEFORE INSERT ON settlement_positions
    FOR EACH ROW EXECUTE FUNCTION exchange_batch_is_open();
CREATE TRIGGER settlement_instructions_batch_open BEFORE INSERT ON settlement_instructions
    FOR EACH ROW EXECUTE FUNCTION exchange_batch_is_open();
CREATE TRIGGER settlement_statements_batch_open BEFORE INSERT ON settlement_statements
    FOR EACH ROW EXECUTE FUNCTION exchange_batch_is_open();
CREATE TRIGGER chain_entries_block_open BEFORE INSERT ON chain_entries
    FOR EACH ROW EXECUTE FUNCTION exchange_block_is_open();
INSERT INTO chain_state (id) VALUES (1);
"""

DROP_FINANCE_RULES_V1 = r"""
DROP TRIGGER IF EXISTS chain_entries_block_open ON chain_entries;
DROP TRIGGER IF EXISTS settlement_batch_entries_batch_open ON settlement_batch_entries;
DROP TRIGGER IF EXISTS settlement_obligations_batch_open ON settlement_obligations;
DROP TRIGGER IF EXISTS settlement_positions_batch_open ON settlement_positions;
DROP TRIGGER IF EXISTS settlement_instructions_batch_open ON settlement_instructions;
DROP TRIGGER IF EXISTS settlement_statements_batch_open ON settlement_statements;
DROP TRIGGER IF EXISTS chain_blocks_no_truncate ON chain_blocks;
DROP TRIGGER IF EXISTS chain_blocks_append_only ON chain_blocks;
DROP TRIGGER IF EXISTS chain_entries_no_truncate ON chain_entries;
DROP TRIGGER IF EXISTS chain_entries_append_only ON chain_entries;
DROP TRIGGER IF EXISTS settlement_batches_no_truncate ON settlement_batches;
DROP TRIGGER IF EXISTS settlement_batches_append_only ON settlement_batches;
DROP TRIGGER IF EXISTS settlement_batch_entries_no_truncate ON settlement_batch_entries;
DROP TRIGGER IF EXISTS settlement_batch_entries_append_only ON settlement_batch_entries;
DROP TRIGGER IF EXISTS settlement_obligations_no_truncate ON settlement_obligations;
DROP TRIGGER IF EXISTS settlement_obligations_append_only ON settlement_obligations;
DROP TRIGGER IF EXISTS settlement_positions_no_truncate ON settlement_positions;
DROP TRIGGER IF EXISTS settlement_positions_append_only ON settlement_positions;
DROP TRIGGER IF EXISTS settlement_instructions_no_truncate ON settlement_instructions;
DROP TRIGGER IF EXISTS settlement_instructions_append_only ON settlement_instructions;
DROP TRIGGER IF EXISTS settlement_statements_no_truncate ON settlement_statements;
DROP TRIGGER IF EXISTS settlement_statements_append_only ON settlement_statements;
DROP TRIGGER IF EXISTS settlement_payments_no_truncate ON settlement_payments;
DROP TRIGGER IF EXISTS settlement_payments_append_only ON settlement_payments;
DROP FUNCTION IF EXISTS exchange_block_is_open();
DROP FUNCTION IF EXISTS exchange_batch_is_open();
"""

# A block's chain entries, checked once per statement (migration 0007) instead of by a row
# trigger and two foreign keys: each row names a block this transaction inserted (EX006,
# as before) and an entry that exists (EX008, as for the journal's references). Sealing
# writes a block of up to 2,000 chain entries at a time; the per-row checks were more than
# half of what sealing cost the database, about as much per entry as posting it. Blocks and
# entries are never deleted (both refuse DELETE and TRUNCATE), so a row that exists when the
# statement ends stays, and no lock is needed. Planned for index lookups whatever the size
# of the first statement (see the journal's references in `ddl.py`).
CHAIN_ENTRY_RULES_V2 = r"""
DROP TRIGGER IF EXISTS chain_entries_block_open ON chain_entries;
CREATE FUNCTION exchange_check_chain_entries() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH v AS MATERIALIZED (
        SELECT n.block_id
          FROM (SELECT DISTINCT block_id FROM new_chain_entries) n
          LEFT JOIN chain_blocks b ON b.id = n.block_id AND b.xmin = xid(pg_current_xact_id())
         WHERE b.id IS NULL
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'chain block % is sealed: % refused', bad.block_id, TG_TABLE_NAME
            USING ERRCODE = 'EX006';
    END IF;
    WITH v AS MATERIALIZED (
        SELECT n.entry_id
          FROM new_chain_entries n LEFT JOIN entries e ON e.id = n.entry_id
         WHERE e.id IS NULL
    )
    SELECT * INTO bad FROM v LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'chain entry refers to entry %, which does not exist', bad.entry_id
            USING ERRCODE = 'EX008';
    END IF;
    RETURN NULL;
END $$;
ALTER FUNCTION exchange_check_chain_entries()
    SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off;
CREATE TRIGGER chain_entries_references AFTER INSERT ON chain_entries
    REFERENCING NEW TABLE AS new_chain_entries
    FOR EACH STATEMENT EXECUTE FUNCTION exchange_check_chain_entries();
"""

DROP_CHAIN_ENTRY_RULES_V2 = r"""
DROP TRIGGER IF EXISTS chain_entries_references ON chain_entries;
DROP FUNCTION IF EXISTS exchange_check_chain_entries();
CREATE TRIGGER chain_entries_block_open BEFORE INSERT ON chain_entries
    FOR EACH ROW EXECUTE FUNCTION exchange_block_is_open();
"""

CHAIN_ENTRY_FOREIGN_KEYS = (
    ("chain_entries", "block_id", "chain_blocks"),
    ("chain_entries", "entry_id", "entries"),
)
