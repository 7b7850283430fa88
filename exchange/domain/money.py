"""Exact money arithmetic: points, settlement micro-units and rates.

Points are integers in the smallest unit of their currency (a currency with scale 2 counts
hundredths of a point). Settlement amounts are integers of micro-units: one millionth of
the settlement currency. Rates are exact decimals: the value of one *whole* point in the
settlement currency. Nothing here touches a binary float.
"""

from __future__ import annotations

import re
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext

MICRO_DIGITS = 6
MICRO = 10**MICRO_DIGITS
MAX_RATE_DIGITS = 18
"""Significant digits a rate may carry."""
MAX_RATE_DECIMALS = 12
MAX_POINTS = 10**15
"""The largest points amount one operation may move (smallest units)."""
MAX_SCALE = 6

_DECIMAL_RE = re.compile(r"^(?:0|[1-9][0-9]{0,29})(?:\.[0-9]{1,30})?$")


class AmountError(ValueError):
    """An amount or rate is malformed or out of range."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_decimal(text: str, *, what: str = "amount") -> Decimal:
    """Parse a plain non-negative decimal string such as ``"12.50"``.

    Exponents, signs, whitespace, ``NaN`` and ``Infinity`` are refused so that what a
    client sends is exactly what it meant.
    """
    if not isinstance(text, str) or not _DECIMAL_RE.match(text):
        raise AmountError("INVALID_AMOUNT", f"{what} must be a plain decimal such as 12.50")
    return Decimal(text)


def parse_rate(text: str) -> Decimal:
    rate = parse_decimal(text, what="rate")
    check_rate(rate)
    return rate


def check_rate(rate: Decimal) -> None:
    if rate <= 0:
        raise AmountError("INVALID_RATE", "rate must be greater than zero")
    _sign, digits, exponent = rate.normalize().as_tuple()
    assert isinstance(exponent, int)
    if -exponent > MAX_RATE_DECIMALS:
        raise AmountError("INVALID_RATE", f"rate may have at most {MAX_RATE_DECIMALS} decimals")
    if len(digits) > MAX_RATE_DIGITS:
        raise AmountError("INVALID_RATE", f"rate may have at most {MAX_RATE_DIGITS} digits")


def check_points(n: int, *, allow_zero: bool = False) -> None:
    if n < 0 or (n == 0 and not allow_zero):
        raise AmountError("INVALID_AMOUNT", "points must be a positive whole number")
    if n > MAX_POINTS:
        raise AmountError("INVALID_AMOUNT", f"points may not exceed {MAX_POINTS}")


def points_from_decimal(text: str, scale: int) -> int:
    """``"12.5"`` points of a scale-2 currency are 1250 smallest units."""
    d = parse_decimal(text, what="points")
    units = d.scaleb(scale)
    if units != units.to_integral_value():
        raise AmountError("INVALID_AMOUNT", f"points have at most {scale} decimal places")
    n = int(units)
    check_points(n)
    return n


def points_to_decimal(n: int, scale: int) -> str:
    """The exact decimal text of ``n`` smallest units."""
    return _fixed(n, scale)


def micro_to_decimal(micro: int) -> str:
    """Micro-units as an exact decimal string with six places."""
    return _fixed(micro, MICRO_DIGITS)


def _fixed(n: int, places: int) -> str:
    """``n / 10**places`` written with exactly ``places`` decimals, in integer arithmetic
    (what ``_plain(Decimal(n).scaleb(-places), places)`` gives, several times faster)."""
    if places == 0:
        return str(n)
    if places < 0:
        return _plain(Decimal(n).scaleb(-places), places)
    whole, part = divmod(-n if n < 0 else n, 10**places)
    return f"{'-' if n < 0 else ''}{whole}.{part:0{places}d}"


def decimal_to_micro(text: str) -> int:
    d = parse_decimal(text)
    micro = d.scaleb(MICRO_DIGITS)
    if micro != micro.to_integral_value():
        raise AmountError("INVALID_AMOUNT", "amounts have at most 6 decimal places")
    return int(micro)


def rate_to_text(rate: Decimal) -> str:
    return format(rate.normalize(), "f")


def _plain(d: Decimal, places: int) -> str:
    with localcontext() as ctx:
        ctx.prec = 60
        return format(d.quantize(Decimal(1).scaleb(-places)), "f")


def value_micro(n: int, rate: Decimal, scale: int) -> int:
    """``value(X, n) = n × rate(X)`` in micro-units, rounded half-even once.

    ``n`` is in smallest units, so the whole-point count is ``n / 10**scale``.
    """
    # In integers: the rate is the exact fraction num/den, so the worth is
    # n·num·10^(6−scale) / den, and half-even rounding compares twice the remainder with
    # the divisor (floor division by a positive divisor leaves 0 ≤ r < den).
    num, den = rate.as_integer_ratio()
    shift = MICRO_DIGITS - scale
    top = n * num * 10**shift if shift >= 0 else n * num
    bottom = den if shift >= 0 else den * 10**-shift
    q, r = divmod(top, bottom)
    twice = 2 * r
    if twice > bottom or (twice == bottom and q % 2):
        q += 1
    return q


def floor_points_for_value(micro: Decimal | int, rate: Decimal, scale: int) -> int:
    """The largest whole number of smallest units whose exact worth is at most ``micro``."""
    with localcontext() as ctx:
        ctx.prec = 80
        per_unit = rate * Decimal(10) ** (MICRO_DIGITS - scale)
        try:
            return int((Decimal(micro) / per_unit).to_integral_value(rounding=ROUND_FLOOR))
        except InvalidOperation as exc:  # pragma: no cover - rate is checked positive
            raise AmountError("INVALID_RATE", "rate must be greater than zero") from exc


def scale_amount(amount: int, part: int, whole: int) -> int:
    """``amount × part / whole`` rounded half-even: a proportional share of an integer."""
    if whole <= 0:
        raise ValueError("whole must be positive")
    with localcontext() as ctx:
        ctx.prec = 80
        return int((Decimal(amount) * part / whole).to_integral_value(rounding=ROUND_HALF_EVEN))
