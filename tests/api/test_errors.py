"""Error codes, user errors and the API's scalars."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from graphql import GraphQLError
from hypothesis import given
from hypothesis import strategies as st
from strawberry.exceptions import StrawberryInputCoercionError

from exchange.api.errors import (
    ErrorCode,
    Forbidden,
    UserError,
    public_error,
    should_mask_error,
    user_errors_from,
)
from exchange.api.scalars import (
    parse_datetime,
    parse_decimal,
    points_value,
    rate_value,
    serialize_datetime,
    serialize_decimal,
)
from exchange.domain.errors import NotFound, Refusal
from exchange.domain.money import AmountError

SOURCE = Path(__file__).resolve().parents[2] / "exchange"
# Codes a caller can be refused with: refusals, amount errors and earning-rule problems
# (netting errors are internal invariant checks, never shown to clients).
CODE_RE = re.compile(r"\b(?:\w*Refusal|AmountError|RuleError)\(\s*\"([A-Z][A-Z0-9_]+)\"")
CONSTANT_RE = re.compile(r"^[A-Z_]+ = \"([A-Z][A-Z0-9_]+)\"$", re.MULTILINE)


def _codes_in_source() -> set[str]:
    found: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        found.update(CODE_RE.findall(path.read_text()))
    found.update(CONSTANT_RE.findall((SOURCE / "domain" / "errors.py").read_text()))
    return found


def test_every_code_the_services_use_is_in_the_enum() -> None:
    used = _codes_in_source()
    assert {"INSUFFICIENT_POINTS", "QUOTE_ALREADY_EXECUTED", "INVALID_CUSTOMER_REF"} <= used
    missing = used - {code.value for code in ErrorCode}
    assert not missing, f"add to ErrorCode: {sorted(missing)}"


def test_user_errors_keep_code_field_and_message() -> None:
    assert user_errors_from(Refusal("INSUFFICIENT_POINTS", "5 asked, 3 available", "points")) == [
        UserError(
            code=ErrorCode.INSUFFICIENT_POINTS, field="points", message="5 asked, 3 available"
        )
    ]
    assert user_errors_from(NotFound("entry", "entryId"))[0].code is ErrorCode.NOT_FOUND
    assert user_errors_from(AmountError("INVALID_RATE", "bad"))[0].field is None
    unknown = user_errors_from(Refusal("SOMETHING_NEW", "new rule"))[0]
    assert unknown.code is ErrorCode.INVALID_INPUT
    assert unknown.message == "new rule"


def test_masking_predicate() -> None:
    internal = GraphQLError("boom", path=["x"], original_error=RuntimeError("SELECT secret"))
    assert should_mask_error(internal)
    masked = public_error(internal)
    assert masked.message == "Internal error."
    assert masked.extensions == {"code": "INTERNAL"}
    assert masked.original_error is None
    public = GraphQLError("no", path=["x"], original_error=Forbidden("Members only."))
    assert not should_mask_error(public)
    assert public_error(public).extensions == {"code": "FORBIDDEN"}
    invalid = public_error(GraphQLError("Cannot query field 'x' on type 'Query'."))
    assert invalid.extensions == {"code": "GRAPHQL_VALIDATION_FAILED"}


_WIDEST = "9" * 30 + "." + "9" * 6
"""The largest magnitude the Decimal scalar accepts with six places: 30 integer digits
(as text: negating a Decimal this long would round it to the context's 28 digits)."""


@given(st.decimals(min_value=Decimal("-" + _WIDEST), max_value=Decimal(_WIDEST), places=6))
def test_decimal_scalar_round_trips(value: Decimal) -> None:
    text = serialize_decimal(value)
    assert "E" not in text
    assert "e" not in text
    assert parse_decimal(text) == value


@pytest.mark.parametrize("text", ["1" + "0" * 30, "-1" + "0" * 30 + ".5", "1." + "0" * 31])
def test_decimal_scalar_refuses_more_than_thirty_digits_a_side(text: str) -> None:
    with pytest.raises(StrawberryInputCoercionError, match="plain decimal"):
        parse_decimal(text)


@pytest.mark.parametrize(
    "bad", [12.5, 3, "1e3", " 1", "1.", ".5", "NaN", "Infinity", "+1", "01", ""]
)
def test_decimal_scalar_accepts_plain_strings_only(bad: object) -> None:
    with pytest.raises(GraphQLError):
        parse_decimal(bad)


def test_decimal_scalar_refuses_floats_on_output() -> None:
    with pytest.raises(TypeError):
        serialize_decimal(0.1)
    assert serialize_decimal(Decimal("12.50")) == "12.50"
    assert serialize_decimal(-3) == "-3"


def test_points_and_rates_are_exact() -> None:
    assert str(points_value(1250, 2)) == "12.50"
    assert str(points_value(-7, 0)) == "-7"
    assert serialize_decimal(rate_value(Decimal("0.010000"))) == "0.01"
    assert serialize_decimal(rate_value(Decimal("1E+2"))) == "100"


def test_datetime_needs_an_offset() -> None:
    assert parse_datetime("2026-01-31T12:00:00+08:00").utcoffset() is not None
    with pytest.raises(GraphQLError):
        parse_datetime("2026-01-31T12:00:00")
    with pytest.raises(GraphQLError):
        parse_datetime(1700000000)
    moment = datetime(2026, 1, 31, 4, 0, tzinfo=UTC)
    assert serialize_datetime(moment) == "2026-01-31T04:00:00+00:00"
    with pytest.raises(ValueError):
        serialize_datetime(datetime(2026, 1, 31))  # noqa: DTZ001
