"""How fast the machine runs Python right now, against how fast it ran it at the start.

The ratios divide by a pgbench run made at the start, but a shared machine's speed moves
during a run: on 2026-11-24 the hub's CPU time per earn and per bulk item rose by 1.7×
for several minutes after a fast pgbench run, and the same code met every target with
margin in the next run. Before each scenario the bench times a fixed piece of pure Python
(building small dicts and encoding them as JSON, as the hub does per item) and reports its
speed relative to the first timing (``python_speed``: 1.0 is as fast as at the start, 0.6
is 40 % slower). It is a diagnostic: no ratio is adjusted by it.

A piece that also looked keys up at random in a 30 MB table was tried: it swung with
whatever the other core did at that instant (1.6–1.9× in four scenarios of one quick run,
0.98× in another), so it said more about the moment than about the machine's speed.
"""

from __future__ import annotations

import json
import time

_ROUNDS = 5
_ITEMS = 1_500

_reference: float | None = None


def _work() -> int:
    total = 0
    for i in range(_ITEMS):
        item = {"key": f"k-{i}", "points": i, "legs": [i, -i], "ok": True}
        total += len(json.dumps(item, separators=(",", ":")))
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
