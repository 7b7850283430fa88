"""Lot allocation: which lots a debit consumes and how a credit repays a points debt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

_NEVER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class OpenLot:
    id: int
    remaining: int
    expires_at: datetime | None

    def overdue(self, now: datetime) -> bool:
        """Its expiry has come by ``now`` (a lot that never expires is never overdue)."""
        return self.expires_at is not None and self.expires_at <= now


def consumption_order(lots: Sequence[OpenLot]) -> list[OpenLot]:
    """Soonest-expiring first; lots that never expire last; ties by age (id)."""
    return sorted(
        lots,
        key=lambda lot: (lot.expires_at is None, lot.expires_at or _NEVER, lot.id),
    )


def allocate(lots: Sequence[OpenLot], amount: int) -> list[tuple[int, int]]:
    """Take ``amount`` from ``lots`` soonest-expiring first.

    Returns ``(lot_id, taken)`` pairs; the total taken is ``min(amount, Σ remaining)``.
    """
    if amount < 0:
        raise ValueError("amount must not be negative")
    taken: list[tuple[int, int]] = []
    left = amount
    for lot in consumption_order(lots):
        if left == 0:
            break
        if lot.remaining <= 0:
            continue
        part = min(left, lot.remaining)
        taken.append((lot.id, part))
        left -= part
    return taken


def credit_split(balance: int, amount: int) -> tuple[int, int]:
    """Split a credit of ``amount`` to a wallet holding ``balance``.

    Returns ``(repays_debt, into_lots)``: a points debt (negative balance) is repaid first.
    """
    if amount < 0:
        raise ValueError("amount must not be negative")
    debt = max(0, -balance)
    repay = min(debt, amount)
    return repay, amount - repay
