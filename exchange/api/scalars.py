"""Scalars of the API: exact decimals as strings, time-zone-aware date-times.

``Decimal`` (Python :class:`decimal.Decimal`) is serialized as a plain decimal string such as
``"12.50"``, keeping its exponent, so points show their currency's scale and settlement
amounts their six places. As input it accepts **JSON strings only** of the form
``-?digits[.digits]`` (no exponent, no whitespace, no ``NaN``/``Infinity``): a JSON number
(``12.5``) is refused, since a client's float may already have lost the exact value.
A malformed value is a ``GRAPHQL_VALIDATION_FAILED`` top-level error, as for any scalar.

``DateTime`` (Python :class:`datetime.datetime`) is ISO 8601 *with* a UTC offset, both ways;
output is in UTC. A date-time without an offset is refused as input.

Fields simply annotate ``decimal.Decimal`` or ``datetime.datetime``: :data:`SCALAR_MAP`
(installed in the schema's config) maps them to these definitions.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re

import strawberry
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.types.scalar import ScalarDefinition

from exchange.domain.money import micro_to_decimal, points_to_decimal

Decimal = decimal.Decimal
DateTime = dt.datetime

_DECIMAL_RE = re.compile(r"^-?(?:0|[1-9][0-9]{0,29})(?:\.[0-9]{1,30})?$")


def serialize_decimal(value: object) -> str:
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot serialize {value!r} as a Decimal")
        return format(value, "f")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and _DECIMAL_RE.match(value):
        return value
    raise TypeError(f"cannot serialize {type(value).__name__} as a Decimal")


def parse_decimal(value: object) -> decimal.Decimal:
    if not isinstance(value, str):
        raise StrawberryInputCoercionError(
            'Decimal values are JSON strings such as "12.50", not numbers.'
        )
    if not _DECIMAL_RE.match(value):
        raise StrawberryInputCoercionError(
            f'{value!r} is not a plain decimal such as "12.50" (no exponent, no spaces).'
        )
    return decimal.Decimal(value)


def serialize_datetime(value: object) -> str:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"cannot serialize {type(value).__name__} as a DateTime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("refusing to serialize a naive datetime")
    return value.astimezone(dt.UTC).isoformat()


def parse_datetime(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise StrawberryInputCoercionError("DateTime values are ISO 8601 strings.")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise StrawberryInputCoercionError(
            f'{value!r} is not an ISO 8601 date-time such as "2026-01-31T12:00:00+08:00".'
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise StrawberryInputCoercionError(
            f'{value!r} has no UTC offset; add one, e.g. "Z" or "+08:00".'
        )
    return parsed


DECIMAL_SCALAR: ScalarDefinition = strawberry.scalar(
    name="Decimal",
    description=(
        'An exact decimal number as a string, e.g. "12.50". Input: a JSON string of'
        " optional '-', digits and an optional fraction; JSON numbers are refused."
    ),
    serialize=serialize_decimal,
    parse_value=parse_decimal,
)

DATETIME_SCALAR: ScalarDefinition = strawberry.scalar(
    name="DateTime",
    description='An ISO 8601 date-time with a UTC offset, e.g. "2026-01-31T04:00:00+00:00".',
    serialize=serialize_datetime,
    parse_value=parse_datetime,
)

SCALAR_MAP: dict[object, ScalarDefinition] = {
    decimal.Decimal: DECIMAL_SCALAR,
    dt.datetime: DATETIME_SCALAR,
}


def points_value(n: int, scale: int) -> decimal.Decimal:
    """``n`` smallest units of a currency of ``scale`` as an exact decimal (``"12.50"``)."""
    return decimal.Decimal(points_to_decimal(n, scale))


def micro_value(micro: int) -> decimal.Decimal:
    """Settlement micro-units as an exact decimal with six places (``"0.125000"``)."""
    return decimal.Decimal(micro_to_decimal(micro))


def rate_value(rate: decimal.Decimal) -> decimal.Decimal:
    """A rate without trailing zeros (``0.0100`` → ``"0.01"``), never in exponent form."""
    normal = rate.normalize()
    _sign, _digits, exponent = normal.as_tuple()
    if isinstance(exponent, int) and exponent > 0:
        return normal.quantize(decimal.Decimal(1))
    return normal
