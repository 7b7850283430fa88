"""Parsing and rounding of money, rates and points."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain.money import (
    AmountError,
    decimal_to_micro,
    micro_to_decimal,
    parse_decimal,
    parse_rate,
    points_from_decimal,
    points_to_decimal,
    scale_amount,
    value_micro,
)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "1e3",
        "NaN",
        "Infinity",
        " 1",
        "1 ",
        "01",
        "1.",
        ".5",
        "1,5",
        "１",
        "0x10",
        "1.2.3",
        "9" * 31,
    ],
)
def test_malformed_decimals_are_refused(text: str) -> None:
    with pytest.raises(AmountError):
        parse_decimal(text)


def test_points_respect_the_scale() -> None:
    assert points_from_decimal("12.5", 2) == 1250
    assert points_to_decimal(1250, 2) == "12.50"
    with pytest.raises(AmountError):
        points_from_decimal("0.001", 2)
    with pytest.raises(AmountError):
        points_from_decimal("0", 0)
    with pytest.raises(AmountError):
        points_from_decimal("1" + "0" * 16, 0)


def test_rates_must_be_positive_and_bounded() -> None:
    assert parse_rate("0.01") == Decimal("0.01")
    for bad in ("0", "0.0000000000001", "1234567890123456789"):
        with pytest.raises(AmountError):
            parse_rate(bad)


def test_value_rounds_half_even_once() -> None:
    # 1 unit at 0.0000025 per point = 2.5 micro -> 2; 3 units = 7.5 micro -> 8
    assert value_micro(1, Decimal("0.0000025"), 0) == 2
    assert value_micro(3, Decimal("0.0000025"), 0) == 8


@given(st.integers(-(10**15), 10**15))
def test_micro_round_trips(micro: int) -> None:
    text = micro_to_decimal(abs(micro))
    assert decimal_to_micro(text) == abs(micro)


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6), st.data())
def test_cumulative_shares_add_up_to_the_whole(
    amount: int, whole: int, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, whole), max_size=6)))
    points = [0, *cuts, whole]
    parts = [
        scale_amount(amount, b, whole) - scale_amount(amount, a, whole)
        for a, b in zip(points, points[1:], strict=False)
    ]
    assert sum(parts) == amount
    assert scale_amount(-amount, whole // 2, whole) == -scale_amount(amount, whole // 2, whole)


def _value_by_decimal(n: int, rate: Decimal, scale: int) -> int:
    """The definition: n × rate in micro-units, rounded half-even once (exact Decimal)."""
    with localcontext() as ctx:
        ctx.prec = 200
        exact = Decimal(n) * rate * Decimal(10) ** (6 - scale)
        return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


rates = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=8, allow_nan=False
)


@given(st.integers(-(10**18), 10**18), rates, st.integers(0, 8))
def test_value_in_integers_equals_the_decimal_definition(n: int, rate: Decimal, scale: int) -> None:
    assert value_micro(n, rate, scale) == _value_by_decimal(n, rate, scale)


@given(st.integers(-(10**6), 10**6), st.sampled_from(["0.5", "0.25", "0.125", "2.5"]))
def test_value_ties_round_to_even(n: int, rate: str) -> None:
    # rates whose products land exactly on halves exercise the tie rule at every scale
    for scale in (6, 7, 8, 9):
        assert value_micro(n, Decimal(rate), scale) == _value_by_decimal(n, Decimal(rate), scale)


@given(st.integers(-(10**20), 10**20), st.integers(0, 12))
def test_fixed_point_text_equals_the_decimal_text(n: int, places: int) -> None:
    with localcontext() as ctx:
        ctx.prec = 60
        expected = format(Decimal(n).scaleb(-places).quantize(Decimal(1).scaleb(-places)), "f")
    assert points_to_decimal(n, places) == expected
    if places == 6:
        assert micro_to_decimal(n) == expected
