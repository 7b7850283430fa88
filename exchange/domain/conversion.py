"""Conversion between two point currencies through the hub (spec operation 3).

``v = value(X, n)``; ``m = floor(v·(1−f) / rate(Y))``; ``v' = value(Y, m)``; ``fee = v − v'``.
Every figure rounds in the hub's favour: ``m`` is reduced until ``v' ≤ v·(1−f)``, so the fee
is never negative and a round trip X→Y→X can never end with more value than it started.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from exchange.domain.money import AmountError, floor_points_for_value, value_micro

BASIS_POINTS = 10_000


@dataclass(frozen=True)
class Conversion:
    from_amount: int
    """Points of X given up (smallest units)."""
    to_amount: int
    """Points of Y received (smallest units)."""
    value_micro: int
    """``v``: the worth of what is given up."""
    to_value_micro: int
    """``v'``: the worth of what is received."""
    fee_micro: int
    """``v − v'``: the hub's revenue, never negative."""


def convert(
    n: int,
    *,
    from_rate: Decimal,
    from_scale: int,
    to_rate: Decimal,
    to_scale: int,
    fee_bp: int,
) -> Conversion:
    if not (0 <= fee_bp < BASIS_POINTS):
        raise AmountError("INVALID_FEE", "the conversion fee must be between 0 and 9999 bp")
    v = value_micro(n, from_rate, from_scale)
    with localcontext() as ctx:
        ctx.prec = 80
        budget = Decimal(v) * (BASIS_POINTS - fee_bp) / BASIS_POINTS
    m = floor_points_for_value(budget, to_rate, to_scale)
    while m > 0 and value_micro(m, to_rate, to_scale) > budget:
        m -= 1
    if m <= 0:
        raise AmountError(
            "AMOUNT_TOO_SMALL", "the amount converts to less than one unit of the target currency"
        )
    v2 = value_micro(m, to_rate, to_scale)
    return Conversion(
        from_amount=n, to_amount=m, value_micro=v, to_value_micro=v2, fee_micro=v - v2
    )
