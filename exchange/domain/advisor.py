"""The rate advisor: a suggested point value from a redemption budget.

A merchant that expects to issue ``expected_points`` points and is prepared to spend
``budget`` (settlement currency) on honouring them can afford a point value of
``budget / expected_points`` -- for example 50,000 / 5,000,000 = 0.01.
"""

from __future__ import annotations

from decimal import Decimal

from exchange.domain.earning import parse_amount

DEFAULT_PLACES = 6
"""Decimal places of a suggested rate unless told otherwise."""
MAX_PLACES = 12
"""The most decimal places a rate may carry."""


def rate_advisor(budget: Decimal, expected_points: int, places: int = DEFAULT_PLACES) -> Decimal:
    """``budget / expected_points``, rounded down to ``places`` decimal places.

    ``expected_points`` counts whole points (the unit a rate is quoted for). Rounding down
    means issuing the expected points at the suggested rate never costs more than the
    budget. Trailing zeros are dropped (``0.01``, not ``0.010000``); a budget too small for
    ``places`` gives 0. Raises ``ValueError`` for a negative, NaN or infinite budget, a
    non-positive point count or ``places`` outside 0..12.
    """
    amount = parse_amount(budget)
    if isinstance(expected_points, bool) or not isinstance(expected_points, int):
        raise ValueError(f"expected_points must be an int, not {expected_points!r}")
    if expected_points <= 0:
        raise ValueError(f"expected_points must be positive, not {expected_points}")
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= MAX_PLACES:
        raise ValueError(f"places must be an int from 0 to {MAX_PLACES}")
    numerator, denominator = amount.as_integer_ratio()
    scaled = numerator * 10**places // (denominator * expected_points)
    return _plain(Decimal(scaled).scaleb(-places))


def _plain(value: Decimal) -> Decimal:
    """``value`` without trailing fractional zeros and never in exponent form."""
    reduced = value.normalize()
    exponent = reduced.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return reduced.quantize(Decimal(1))
    return reduced
