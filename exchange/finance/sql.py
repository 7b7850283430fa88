"""SQL shared by the services, the statements and ``exchange verify``.

Every statement here is a constant; values are always bound parameters.
"""

from __future__ import annotations

PARTY = (
    "CASE a.kind WHEN 'settlement' THEN m.code"
    " WHEN 'hub_fees' THEN 'hub:fees' ELSE 'hub:clearing' END"
)
"""A settlement account's party: its merchant's code, or the hub account's name."""

ENTRY_LEGS = f"""
SELECT e.id, e.kind, e.recorded_at, e.details, e.rates, {PARTY}, p.amount
  FROM entries e
  JOIN postings p ON p.entry_id = e.id
  JOIN accounts a ON a.id = p.account_id
  LEFT JOIN merchants m ON m.id = a.merchant_id
 WHERE p.asset_id = %(asset)s AND e.id IN ({{entries}})
 ORDER BY e.id, p.seq
"""
"""Rows for :func:`exchange.finance.lines.group_entries`: the settlement legs of the entries
selected by the ``{entries}`` subquery, in entry order."""

BATCH_ENTRY_IDS = (
    "SELECT be.entry_id FROM settlement_batch_entries be WHERE be.batch_id = %(batch)s"
)

MERCHANT_BATCH_ENTRY_IDS = """
SELECT be.entry_id FROM settlement_batch_entries be
 WHERE be.batch_id = %(batch)s AND be.entry_id > %(after)s
   AND EXISTS (SELECT 1 FROM postings p
                WHERE p.entry_id = be.entry_id AND p.account_id = %(account)s)
"""

ALL_BATCHED_LEGS = f"""
SELECT be.batch_id, e.id, e.kind, e.recorded_at, e.details, e.rates, {PARTY}, p.amount
  FROM settlement_batch_entries be
  JOIN entries e ON e.id = be.entry_id
  JOIN postings p ON p.entry_id = e.id
  JOIN accounts a ON a.id = p.account_id
  LEFT JOIN merchants m ON m.id = a.merchant_id
 WHERE p.asset_id = %(asset)s
 ORDER BY be.batch_id, e.id, p.seq
"""

SETTLEMENT_ASSET = "SELECT id, code FROM currencies WHERE kind = 'settlement'"

SCALES = "SELECT code, scale FROM currencies"

MERCHANT_ACCOUNTS = """
SELECT m.id, m.code, a.id FROM merchants m
  JOIN accounts a ON a.kind = 'settlement' AND a.merchant_id = m.id
 ORDER BY m.code
"""
