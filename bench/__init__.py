"""The hub's benchmark: ``python -m bench [--quick] [--json FILE] [--database-url URL]``.

One run measures the machine's database ceiling with pgbench, then serves the hub over
HTTP (two workers) and drives it with a bounded load generator: earns (spread over 100
issuers and all on one), bulk earns, balance reads against a constant query, and earn and
balance latency with little and with much history. Ratios against the same run's pgbench
figures make results comparable across machines. See ``docs/performance.md``.
"""
