"""How fast the machine runs Python right now, against how fast it ran it at the start.

The ratios divide by a pgbench run made at the start, but a shared machine's speed moves
during a run: on 2026-11-24 the hub's CPU time per earn and per bulk item rose by 1.7×
for several minutes after a fast pgbench run, and the same code met every target with
margin in the next run. Before each scenario the bench times a fixed piece of pure Python
and reports its speed relative to the first timing (``python_speed``: 1.0 is as fast as at
the start, 0.6 is 40 % slower). The piece builds small dicts and encodes them as JSON, as
the hub does per item, and looks keys up at random in a table of about 30 MB, larger than
the caches a vCPU can count on, as the hub's and PostgreSQL's working sets are. It is a
diagnostic: no ratio is adjusted by it.
"""

from __future__ import annotations

import json
import time

_ROUNDS = 5
_ITEMS = 1_000
_TABLE_SIZE = 200_000
_LOOKUPS = 20_000

_reference: float | None = None
_table: dict[str, tuple[int, str]] = {}
_keys: list[str] = []


def _work() -> int:
    if not _table:
        _table.update((f"k{i}", (i, str(i))) for i in range(_TABLE_SIZE))
        # A fixed scattered order (a multiplicative step modulo the table's size).
        _keys.extend(f"k{(i * 7_919) % _TABLE_SIZE}" for i in range(_LOOKUPS))
    total = 0
    for i in range(_ITEMS):
        item = {"key": f"k-{i}", "points": i, "legs": [i, -i], "ok": True}
        total += len(json.dumps(item, separators=(",", ":")))
    for key in _keys:
        total += _table[key][0]
    return total


def _seconds() -> float:
    """The best of a few timings of the fixed work (about 5 ms each)."""
    best = float("inf")
    for _ in range(_ROUNDS):
        started = time.perf_counter()
        _work()
        best = min(best, time.perf_counter() - started)
    return best


def start() -> None:
    """Time the work once for reference (at the start of a run)."""
    global _reference
    _reference = _seconds()


def relative() -> float:
    """Python's speed now relative to the reference (timed now if there is none yet)."""
    if _reference is None:
        start()
    assert _reference is not None
    return round(_reference / _seconds(), 3)
