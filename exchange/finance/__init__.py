"""Finance: settlement batches, statements, payments, metrics and the journal's hash chain.

``docs/finance.md`` describes the settlement cycle, the measures and the tamper evidence.
Importing :mod:`exchange.finance.checks` registers the finance checks of ``exchange verify``.
"""
