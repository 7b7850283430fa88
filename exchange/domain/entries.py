"""Pure checks on a drafted entry before it reaches the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Leg:
    account_id: int
    asset_id: int
    amount: int


def imbalances(legs: Iterable[Leg]) -> dict[int, int]:
    """Assets whose legs do not sum to zero, with their sums (empty: balanced)."""
    if isinstance(legs, list) and len(legs) == 2:
        # An earn's or a redemption's two legs: balanced when they are one asset's n and -n.
        a, b = legs
        if a.asset_id == b.asset_id and a.amount + b.amount == 0:
            return {}
    totals: dict[int, int] = defaultdict(int)
    for leg in legs:
        totals[leg.asset_id] += leg.amount
    return {asset: total for asset, total in totals.items() if total != 0}


def merge_legs(legs: Iterable[Leg]) -> list[Leg]:
    """Combine legs on the same account, drop zero legs, order by account id.

    The order is the lock order of hot balance rows, which keeps writers deadlock-free.
    """
    legs = legs if isinstance(legs, list) else list(legs)
    if len(legs) == 2:
        # An earn's two legs (issuer's outstanding, member's wallet): nothing to combine
        # when they are on two accounts and neither is zero; legs are immutable, so they
        # are returned as they are, in order.
        a, b = legs
        if a.account_id != b.account_id and a.amount and b.amount:
            return [a, b] if (a.account_id, a.asset_id) < (b.account_id, b.asset_id) else [b, a]
    merged: dict[tuple[int, int], int] = defaultdict(int)
    for leg in legs:
        merged[(leg.account_id, leg.asset_id)] += leg.amount
    return [
        Leg(account, asset, amount)
        for (account, asset), amount in sorted(merged.items())
        if amount != 0
    ]
